"""Readers for pre-trained word vectors: word2vec text, word2vec binary, GloVe text.

- word2vec text:   header "N D", then one "word v1 ... vD" per line
- word2vec binary: header "N D\\n", then per word: the word's bytes, a space, D
  little-endian float32 (GoogleNews-vectors-negative300.bin), optional newline
- GloVe text:      no header, one "word v1 ... vD" per line

The format is detected from the file's first bytes. Large files (GoogleNews: 3M words,
3.6 GB) are streamed: pass `keep` (the words you need) or `limit` (the first N words,
which in these files are the most frequent) so only those are held in memory.
Words are looked up lower-cased by default (our tokenizer lower-cases); the first
occurrence of a lower-cased form wins, which in frequency-sorted files is the most
common casing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from tqdm import tqdm

from model.errors import ModelError

WordVectorFormat = Literal["word2vec-text", "word2vec-binary", "glove"]
_CHUNK = 1 << 20
_PROGRESS_MIN_BYTES = 64 << 20


class WordVectorsError(ModelError):
    """A word-vector file that is missing, malformed, or does not fit the model."""


@dataclass
class WordVectors:
    words: list[str]
    vectors: np.ndarray  # float32 [N, D]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def _is_int(token: bytes) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def _floats(tokens: list[bytes]) -> bool:
    try:
        [float(t) for t in tokens]
    except ValueError:
        return False
    return True


def detect_format(path: str | Path) -> WordVectorFormat:
    """Look at the first bytes: a two-integer header means word2vec (text when the next
    line parses as a word and D numbers, else binary); no header means GloVe."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(_CHUNK)
    first, _, rest = head.partition(b"\n")
    parts = first.split()
    if len(parts) == 2 and all(_is_int(p) for p in parts):
        dim = int(parts[1])
        line = rest.split(b"\n", 1)[0].rstrip().split(b" ")
        if len(line) >= dim + 1 and _floats(line[-dim:]):
            return "word2vec-text"
        return "word2vec-binary"
    if len(parts) >= 2 and _floats(parts[1:]):
        return "glove"
    raise WordVectorsError(
        f"{path} is not a word2vec (text or binary) or GloVe text file: "
        f"first line starts {first[:60]!r}"
    )


class _Collector:
    """Keeps the wanted words' vectors while a reader streams the file."""

    def __init__(self, keep: Collection[str] | None, limit: int | None, lowercase: bool):
        self.keep = keep
        self.limit = limit
        self.lowercase = lowercase
        self.words: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.seen: set[str] = set()

    @property
    def full(self) -> bool:
        if self.limit is not None and len(self.words) >= self.limit:
            return True
        return self.keep is not None and len(self.words) >= len(self.keep)

    def offer(self, word: str, vector: np.ndarray) -> None:
        key = word.lower() if self.lowercase else word
        if key in self.seen or (self.keep is not None and key not in self.keep):
            return
        self.seen.add(key)
        self.words.append(key)
        self.vectors.append(np.array(vector, dtype=np.float32))

    def result(self, dim: int) -> WordVectors:
        vectors = np.stack(self.vectors) if self.vectors else np.zeros((0, dim), dtype=np.float32)
        return WordVectors(self.words, vectors)


def read_word_vectors(
    path: str | Path,
    *,
    keep: Collection[str] | None = None,
    limit: int | None = None,
    lowercase: bool = True,
    format: WordVectorFormat | None = None,
) -> WordVectors:
    """Read the vectors of `keep` (or the first `limit` words, or all) from a file."""
    path = Path(path)
    if not path.is_file():
        raise WordVectorsError(f"word-vector file {path} does not exist")
    fmt = format or detect_format(path)
    if keep is not None:
        keep = {w.lower() for w in keep} if lowercase else set(keep)
    collector = _Collector(keep, limit, lowercase)
    size = path.stat().st_size
    with (
        path.open("rb") as f,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"reading {path.name}",
            disable=size < _PROGRESS_MIN_BYTES,
        ) as bar,
    ):
        if fmt == "word2vec-binary":
            dim = _read_binary(f, path, collector, bar)
        else:
            dim = _read_text(f, path, collector, bar, has_header=fmt == "word2vec-text")
    return collector.result(dim)


def _header(line: bytes, path: Path) -> tuple[int, int]:
    parts = line.split()
    if len(parts) != 2 or not all(_is_int(p) for p in parts):
        raise WordVectorsError(f"{path}: expected a 'count dimension' header, got {line[:60]!r}")
    count, dim = int(parts[0]), int(parts[1])
    if count < 0 or dim < 1:
        raise WordVectorsError(f"{path}: invalid header count={count} dimension={dim}")
    return count, dim


def _read_text(f: BinaryIO, path: Path, out: _Collector, bar: tqdm, has_header: bool) -> int:
    dim = 0
    if has_header:
        header = f.readline()
        bar.update(len(header))
        _, dim = _header(header, path)
    for lineno, raw in enumerate(f, start=2 if has_header else 1):
        bar.update(len(raw))
        line = raw.rstrip(b"\r\n").rstrip(b" ")
        if not line:
            continue
        parts = line.split(b" ")
        if dim == 0:  # GloVe: the first line fixes the dimension
            dim = len(parts) - 1
        if len(parts) < dim + 1:
            raise WordVectorsError(
                f"{path}, line {lineno}: expected a word and {dim} numbers, got {len(parts)} fields"
            )
        # A few GloVe words contain spaces: the last `dim` fields are the numbers.
        word = b" ".join(parts[:-dim]).decode("utf-8", errors="replace")
        try:
            vector = np.array(parts[-dim:], dtype=np.float32)
        except ValueError as exc:
            raise WordVectorsError(f"{path}, line {lineno}: {exc}") from exc
        out.offer(word, vector)
        if out.full:
            break
    if dim == 0:
        raise WordVectorsError(f"{path} holds no vectors")
    return dim


def _read_binary(f: BinaryIO, path: Path, out: _Collector, bar: tqdm) -> int:
    header = f.readline()
    bar.update(len(header))
    count, dim = _header(header, path)
    record = dim * 4
    buf = b""
    pos = 0
    for i in range(count):
        while True:
            end = buf.find(b" ", pos)
            if end != -1 and end + 1 + record <= len(buf):
                break
            more = f.read(_CHUNK)
            if not more:
                raise WordVectorsError(
                    f"{path} is truncated: the header promises {count} words, "
                    f"the file ends inside word {i + 1}"
                )
            bar.update(len(more))
            buf = buf[pos:] + more
            pos = 0
        word = buf[pos:end].strip(b"\n\r").decode("utf-8", errors="replace")
        vector = np.frombuffer(buf, dtype="<f4", count=dim, offset=end + 1)
        pos = end + 1 + record
        out.offer(word, vector)
        if out.full:
            break
    return dim


def write_word_vectors(path: str | Path, vectors: WordVectors, format: WordVectorFormat) -> None:
    """Write vectors in one of the three formats (tests and tools make small files)."""
    path = Path(path)
    v = np.asarray(vectors.vectors, dtype=np.float32)
    with path.open("wb") as f:
        if format != "glove":
            f.write(f"{len(vectors.words)} {v.shape[1]}\n".encode())
        for word, row in zip(vectors.words, v, strict=True):
            if format == "word2vec-binary":
                f.write(word.encode() + b" " + row.astype("<f4").tobytes() + b"\n")
            else:
                f.write((word + " " + " ".join(repr(float(x)) for x in row) + "\n").encode())
