"""Tokenizer: text -> word ids for the text backbone, with its vocabulary as JSON.

Rules (the paper's): lower-case, split on anything that is not a letter or digit,
remove stop-words, keep the first `max_words` (16) words. Id 0 is padding, id 1 is the
unknown word: any word outside the vocabulary maps to it, so encoding never fails.
The vocabulary file travels with every checkpoint (`vocab.json`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from model.errors import ModelError

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
VOCAB_FORMAT = "mmv-vocab"
VOCAB_VERSION = 1

# English stop-words (the usual NLTK-style list, with contraction fragments such as
# "s", "t", "ll" that splitting on apostrophes leaves behind).
_STOP_WORDS_TEXT = """
    a about above after again against ain all am an and any are aren as at be because
    been before being below between both but by can couldn d did didn do does doesn
    doing don down during each few for from further had hadn has hasn have haven having
    he her here hers herself him himself his how i if in into is isn it its itself just
    ll m ma me mightn more most mustn my myself needn no nor not now o of off on once
    only or other our ours ourselves out over own re s same shan she should shouldn so
    some such t than that the their theirs them themselves then there these they this
    those through to too under until up ve very was wasn we were weren what when where
    which while who whom why will with won wouldn y you your yours yourself yourselves
"""
STOP_WORDS: frozenset[str] = frozenset(_STOP_WORDS_TEXT.split())

_WORD = re.compile(r"[^\W_]+")


class TokenizerError(ModelError):
    """A vocabulary file that cannot be read, or an invalid vocabulary."""


class Tokenizer:
    """Maps texts to `(ids [N, max_words] long, mask [N, max_words] bool)`."""

    def __init__(
        self,
        words: Iterable[str] = (),
        max_words: int = 16,
        stop_words: Iterable[str] = STOP_WORDS,
    ) -> None:
        if max_words < 1:
            raise TokenizerError(f"max_words must be at least 1, got {max_words}")
        self.max_words = max_words
        self.stop_words = frozenset(stop_words)
        self._words: list[str] = [PAD, UNK]
        self._ids: dict[str, int] = {PAD: PAD_ID, UNK: UNK_ID}
        self.add_words(words)

    # -- vocabulary -------------------------------------------------------------------
    @property
    def vocabulary(self) -> list[str]:
        """Every entry, index = id, specials included."""
        return list(self._words)

    @property
    def words(self) -> list[str]:
        """The real words (no specials), in id order."""
        return self._words[2:]

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def id_of(self, word: str) -> int:
        return self._ids.get(word, UNK_ID)

    def add_words(self, words: Iterable[str]) -> list[str]:
        """Append new words (in order, skipping known ones); returns those added."""
        added = []
        for word in words:
            if not isinstance(word, str) or not word or word in self._ids:
                continue
            self._ids[word] = len(self._words)
            self._words.append(word)
            added.append(word)
        return added

    # -- text -> words ----------------------------------------------------------------
    def split(self, text: str) -> list[str]:
        """All words of a text after normalisation and stop-word removal (no cut-off)."""
        text = unicodedata.normalize("NFKC", text).lower()
        return [w for w in _WORD.findall(text) if w not in self.stop_words]

    def tokens(self, text: str) -> list[str]:
        """The words the model sees: `split(text)` cut to `max_words`."""
        return self.split(text)[: self.max_words]

    def encode(self, texts: Sequence[str] | str) -> tuple[Tensor, Tensor]:
        """Texts -> `(ids LongTensor [N, max_words], mask BoolTensor [N, max_words])`.

        Unknown words get `UNK_ID`; a text with no words left has an all-False mask.
        `None` or non-string entries count as empty texts.
        """
        if isinstance(texts, str):
            texts = [texts]
        width = self.max_words
        get = self._ids.get
        rows: list[list[int]] = []
        lengths: list[int] = []
        for text in texts:
            words = self.tokens(text) if isinstance(text, str) else []
            lengths.append(len(words))
            # one flat list, one tensor: much faster than filling a tensor row by row
            rows.append([get(w, UNK_ID) for w in words] + [PAD_ID] * (width - len(words)))
        ids = torch.tensor(rows, dtype=torch.long).view(len(rows), width)
        mask = torch.arange(width)[None, :] < torch.tensor(lengths, dtype=torch.long)[:, None]
        return ids, mask

    # -- building ---------------------------------------------------------------------
    def frequent_words(
        self, texts: Iterable[str], limit: int | None = None, min_count: int = 1
    ) -> list[str]:
        """Words of `texts` (after stop-word removal) by falling count, ties by word."""
        counts: Counter[str] = Counter()
        for text in texts:
            if isinstance(text, str):
                counts.update(self.split(text))
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        return ranked if limit is None else ranked[: max(limit, 0)]

    @classmethod
    def build(
        cls, texts: Iterable[str], max_size: int, max_words: int = 16, min_count: int = 1
    ) -> Tokenizer:
        """A vocabulary of the most frequent words of `texts`; `max_size` counts PAD and
        UNK, so at most `max_size - 2` words."""
        if max_size < 2:
            raise TokenizerError(f"max_size must leave room for PAD and UNK, got {max_size}")
        tok = cls(max_words=max_words)
        tok.add_words(tok.frequent_words(texts, max_size - 2, min_count))
        return tok

    # -- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        return {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "max_words": self.max_words,
            "lowercase": True,
            "stop_words": sorted(self.stop_words),
            "words": self.vocabulary,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=0) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Tokenizer:
        if data.get("format") != VOCAB_FORMAT:
            raise TokenizerError(f"not an MMV vocabulary (format={data.get('format')!r})")
        if data.get("version") != VOCAB_VERSION:
            raise TokenizerError(
                f"vocabulary version {data.get('version')!r} is not supported "
                f"(this code reads version {VOCAB_VERSION})"
            )
        words = data.get("words")
        if not isinstance(words, list) or words[:2] != [PAD, UNK]:
            raise TokenizerError("vocabulary must start with the entries '<pad>', '<unk>'")
        if len(set(words)) != len(words):
            raise TokenizerError("vocabulary has duplicate words")
        stop_words = data.get("stop_words", sorted(STOP_WORDS))
        max_words = data.get("max_words", 16)
        if not isinstance(stop_words, list) or not isinstance(max_words, int):
            raise TokenizerError("vocabulary has a malformed 'stop_words' or 'max_words'")
        return cls(words[2:], max_words=max_words, stop_words=stop_words)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise TokenizerError(f"vocabulary file {path} does not exist") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"vocabulary file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise TokenizerError(f"vocabulary file {path} does not hold a JSON object")
        return cls.from_dict(data)
