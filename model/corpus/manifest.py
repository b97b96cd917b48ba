"""Reading a corpus: manifest rows and corpus.json.

Row format (docs/architecture.md): `id, kind, split, path, transcript, duration_s,
description, narration, aligned, attributes`. Training reads only the first six;
`description`, `narration`, `aligned` and `attributes` are ground truth for evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.corpus.errors import ManifestError

MANIFEST = "manifest.jsonl"
CORPUS_INFO = "corpus.json"
ROW_FIELDS = (
    "id",
    "kind",
    "split",
    "path",
    "transcript",
    "duration_s",
    "description",
    "narration",
    "aligned",
    "attributes",
)
# What training needs of a row; a user's own corpus may hold only these.
TRAINING_FIELDS = ROW_FIELDS[:6]


def iter_manifest(
    corpus_dir: str | Path,
    kind: str | None = None,
    split: str | None = None,
    required: tuple[str, ...] = ROW_FIELDS,
) -> Iterator[dict[str, Any]]:
    """Rows of DIR/manifest.jsonl in generation order, optionally one kind and/or split;
    a row without one of the `required` fields is an error."""
    path = Path(corpus_dir) / MANIFEST
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(
            f"no corpus manifest at {path}: generate one with "
            f"`python -m model.corpus make --out {corpus_dir} --n N --seed S` ({exc.strerror})"
        ) from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path} line {number} is not JSON: {exc}") from exc
            missing = [f for f in required if f not in row]
            if missing:
                raise ManifestError(f"{path} line {number} lacks fields {missing}")
            if (kind is None or row["kind"] == kind) and (split is None or row["split"] == split):
                yield row


def read_manifest(
    corpus_dir: str | Path, kind: str | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    """All rows (of one kind and/or split) as a list."""
    return list(iter_manifest(corpus_dir, kind=kind, split=split))


def read_corpus_info(corpus_dir: str | Path) -> dict[str, Any]:
    """DIR/corpus.json: generator version, seed, n, vocabularies, held-out pairs, splits."""
    path = Path(corpus_dir) / CORPUS_INFO
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"no corpus.json in {corpus_dir} ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc


def encode_row(row: dict[str, Any]) -> str:
    """One manifest line, fields in the documented order."""
    return json.dumps({f: row[f] for f in ROW_FIELDS}, ensure_ascii=False)
