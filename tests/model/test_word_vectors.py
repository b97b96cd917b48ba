"""Word-vector files (word2vec text/binary, GloVe) and frozen embeddings in the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import small_config

from model import Tokenizer, WordVectors, WordVectorsError, build_model, read_word_vectors
from model.word_vectors import detect_format, write_word_vectors

WORDS = ["Dog", "ball", "red", "drum", "dog", "piano", "café"]


@pytest.fixture(scope="module")
def vectors() -> WordVectors:
    rng = np.random.default_rng(0)
    return WordVectors(list(WORDS), rng.standard_normal((len(WORDS), 128)).astype(np.float32))


@pytest.mark.parametrize("fmt", ["word2vec-text", "word2vec-binary", "glove"])
def test_round_trip_and_detection(tmp_path: Path, vectors: WordVectors, fmt: str) -> None:
    path = tmp_path / f"vectors.{fmt}"
    write_word_vectors(path, vectors, fmt)  # type: ignore[arg-type]
    assert detect_format(path) == fmt
    got = read_word_vectors(path, lowercase=False)
    assert got.words == WORDS
    assert np.allclose(got.vectors, vectors.vectors, atol=1e-6)
    # lower-cased lookup: the first casing wins ("Dog" before "dog")
    low = read_word_vectors(path, keep={"dog", "piano", "zebra"})
    assert low.words == ["dog", "piano"]
    assert np.allclose(low.vectors[0], vectors.vectors[0], atol=1e-6)
    assert len(read_word_vectors(path, limit=3)) == 3


def test_truncated_and_malformed_files(tmp_path: Path, vectors: WordVectors) -> None:
    path = tmp_path / "v.bin"
    write_word_vectors(path, vectors, "word2vec-binary")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])
    with pytest.raises(WordVectorsError, match="truncated"):
        read_word_vectors(path)
    bad = tmp_path / "bad.txt"
    bad.write_text("hello world\nthis is not a vector file\n")
    with pytest.raises(WordVectorsError, match="not a word2vec"):
        read_word_vectors(bad)
    with pytest.raises(WordVectorsError, match="does not exist"):
        read_word_vectors(tmp_path / "nothing.bin")


def test_frozen_word2vec_embeddings_and_growing(tmp_path: Path, vectors: WordVectors) -> None:
    path = tmp_path / "GoogleNews-mini.bin"
    write_word_vectors(path, vectors, "word2vec-binary")
    cfg = small_config().replace(text={"word_vectors": str(path), "freeze_embeddings": True})
    tok = Tokenizer.build(["the red ball", "a drum and a zebra"], max_size=100)
    torch.manual_seed(0)
    m = build_model(cfg, tok)
    assert m.tokenizer.words == ["ball", "drum", "red"]  # zebra is not in the file: UNK
    table = m.text_backbone.embedding.weight
    assert not table.requires_grad
    index = {w: i for i, w in enumerate(WORDS)}
    for word in m.tokenizer.words:
        assert torch.allclose(
            table[m.tokenizer.id_of(word)], torch.from_numpy(vectors.vectors[index[word]])
        )
    old = table.detach().clone()
    added = m.grow_vocabulary(["piano", "zebra", "red"])
    assert added == ["piano"]
    grown = m.text_backbone.embedding.weight
    assert grown.shape[0] == old.shape[0] + 1 and not grown.requires_grad
    assert torch.equal(grown[: old.shape[0]], old)
    assert m.embed_text(["a piano"])["vat"].shape == (1, cfg.heads.vat_dim)


def test_dimension_mismatch_is_reported(tmp_path: Path, vectors: WordVectors) -> None:
    path = tmp_path / "v.txt"
    write_word_vectors(path, vectors, "glove")
    cfg = small_config().replace(text={"word_vectors": str(path), "embed_dim": 300})
    with pytest.raises(WordVectorsError, match="128-d"):
        build_model(cfg)


def test_learned_embeddings_grow_and_keep_old_rows() -> None:
    tok = Tokenizer(["dog"])
    m = build_model(small_config(), tok)
    old = m.text_backbone.embedding.weight.detach().clone()
    assert m.grow_vocabulary(["cat", "dog", "emu"]) == ["cat", "emu"]
    new = m.text_backbone.embedding.weight
    assert new.requires_grad and new.shape[0] == 5
    assert torch.equal(new[:3], old)
    cap = m.config.text.vocab_size
    added = m.grow_vocabulary(f"w{i}" for i in range(cap + 10))
    assert len(m.tokenizer) == cap and len(added) == cap - 5
