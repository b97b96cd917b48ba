"""Tokenizer: stop-words, the 16-word cut, UNK, building, saving; never crashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model import Tokenizer, TokenizerError
from model.tokenizer import PAD_ID, UNK_ID


def test_stop_words_case_and_punctuation() -> None:
    tok = Tokenizer(["dog", "ball", "red"])
    assert tok.tokens("The DOG's red ball, isn't it?") == ["dog", "red", "ball"]
    ids, mask = tok.encode(["The DOG's red ball, isn't it?"])
    assert ids[0, :3].tolist() == [tok.id_of("dog"), tok.id_of("red"), tok.id_of("ball")]
    assert mask[0].tolist() == [True] * 3 + [False] * 13


def test_unknown_words_map_to_unk_and_odd_inputs_do_not_crash() -> None:
    tok = Tokenizer(["dog"])
    ids, mask = tok.encode(["dog zebra", "", "the of and", "🙂 ☃", None, "x" * 10000, "é café"])
    assert ids.shape == (7, 16) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids[0, :2].tolist() == [tok.id_of("dog"), UNK_ID]
    assert not mask[1].any() and not mask[2].any() and not mask[3].any() and not mask[4].any()
    assert mask[5].sum() == 1 and ids[5, 0] == UNK_ID
    assert (ids[~mask] == PAD_ID).all()
    assert tok.encode([])[0].shape == (0, 16)


def test_max_words_cut() -> None:
    tok = Tokenizer(max_words=4)
    assert tok.tokens("one two three four five six") == ["one", "two", "three", "four"]
    assert tok.encode("one two three four five six")[1].sum() == 4


def test_build_keeps_the_most_frequent_words() -> None:
    texts = ["drum drum drum", "ball ball", "cat", "the the the the"]
    tok = Tokenizer.build(texts, max_size=4)
    assert tok.vocabulary == ["<pad>", "<unk>", "drum", "ball"]
    assert len(tok) == 4
    with pytest.raises(TokenizerError):
        Tokenizer.build(texts, max_size=1)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    tok = Tokenizer.build(["a red ball bounces", "drums roll"], max_size=100, max_words=8)
    tok.save(tmp_path / "vocab.json")
    back = Tokenizer.load(tmp_path / "vocab.json")
    assert back.vocabulary == tok.vocabulary and back.max_words == 8
    assert back.stop_words == tok.stop_words
    texts = ["the red drums", "unknown ball"]
    assert all(
        torch.equal(x, y) for x, y in zip(back.encode(texts), tok.encode(texts), strict=True)
    )


def test_bad_vocabulary_files_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "vocab.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        Tokenizer.load(bad)
    bad.write_text(json.dumps({"format": "mmv-vocab", "version": 99, "words": []}))
    with pytest.raises(TokenizerError, match="version 99"):
        Tokenizer.load(bad)
    bad.write_text(json.dumps({"format": "mmv-vocab", "version": 1, "words": ["a", "b"]}))
    with pytest.raises(TokenizerError, match="must start"):
        Tokenizer.load(bad)
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.json")


def test_add_words_skips_known_ones() -> None:
    tok = Tokenizer(["dog"])
    assert tok.add_words(["cat", "dog", "cat", "emu"]) == ["cat", "emu"]
    assert tok.words == ["dog", "cat", "emu"]
