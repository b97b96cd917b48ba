"""The FAISS indexes of the active model version, fed from the database (the truth).

Each (space, modality) has an index of items and, for video and audio, one of the
segments of long items ("video_segments", "audio_segments"; docs/service.md "Moments").
Segment ids are their seqs plus SEGMENT_ID_BASE, so one id names one thing across a
version's indexes and removing an item's ids from all of them removes nothing else.

`StorageSource` is the indexer's VectorSource over SQLite; `open_indexes` opens an
IndexRegistry on DATA_DIR/indexes/ with the version's IndexSet active (loaded, patched
after a crash, or rebuilt from stored embeddings: the indexer decides and logs why).
The registry is also what a switch to a new model version will use (background
rebuild, then an atomic swap).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from indexer import IndexPolicy, IndexRegistry, SourceError
from service.storage import Storage

# Item seqs stay far below this (SQLite AUTOINCREMENT from 1); FAISS ids are int64.
SEGMENT_ID_BASE = 1 << 40
SEGMENTED = ("video", "audio")  # modalities whose long items have segments
SUFFIX = "_segments"


def segment_index(modality: str) -> str:
    """The index (the indexer's "modality") that holds the segments of `modality`."""
    return modality + SUFFIX


def segment_ids(seqs: list[int] | np.ndarray) -> np.ndarray:
    return np.asarray(seqs, dtype=np.int64) + SEGMENT_ID_BASE


class StorageSource:
    """VectorSource: ids and vectors of one model version, read from the embeddings
    tables (segment indexes from segment_embeddings, under SEGMENT_ID_BASE)."""

    def __init__(self, storage: Storage, version: str) -> None:
        self.storage = storage
        self.version = version

    def ids(self, space: str, modality: str) -> np.ndarray:
        if modality.endswith(SUFFIX):
            seqs = self.storage.segments.seqs(self.version, space, modality[: -len(SUFFIX)])
            return segment_ids(seqs)
        return self.storage.embeddings.seqs(self.version, space, modality)

    def vectors(self, space: str, modality: str, ids: np.ndarray) -> np.ndarray:
        try:
            if modality.endswith(SUFFIX):
                return self.storage.segments.vectors(
                    self.version, space, modality[: -len(SUFFIX)], ids - SEGMENT_ID_BASE
                )
            return self.storage.embeddings.vectors(self.version, space, modality, ids)
        except KeyError as exc:  # deleted between ids() and vectors()
            raise SourceError(str(exc.args[0])) from None


def layout_of(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    layout: dict[str, list[str]] = defaultdict(list)
    for space, modality in pairs:
        layout[space].append(modality)
    return dict(layout)


def open_indexes(
    root: Path,
    storage: Storage,
    version: str,
    pairs: list[tuple[str, str]],
    dims: dict[str, int],
    memory_budget_bytes: int,
) -> IndexRegistry:
    registry = IndexRegistry(root, IndexPolicy(memory_budget_bytes=memory_budget_bytes))
    registry.open(version, layout_of(pairs), dims, StorageSource(storage, version))
    return registry
