"""Sources: a plain load_vectors(space, modality) function works as well as a VectorSource."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

from indexer import ArraySource, IndexSet, SourceError


def test_a_load_vectors_function_is_enough(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, vectors = data
    stored = {"n": 1000}
    calls: list[tuple[str, str]] = []

    def load_vectors(space: str, modality: str) -> tuple[np.ndarray, np.ndarray]:
        calls.append((space, modality))
        return ids[: stored["n"]], vectors[: stored["n"]]

    layout, dims = {"vat": ["audio"]}, {"vat": 32}
    first = IndexSet.open(tmp_path, "v1", layout, dims, load_vectors)
    assert first.count("vat", "audio") == 1000
    assert set(calls) == {("vat", "audio")}
    stored["n"] = 1100  # the database grew while the process was down
    second = IndexSet.open(tmp_path, "v1", layout, dims, load_vectors)
    assert second.events[0].action == "patched" and second.events[0].added == 100
    found = second.search("vat", "audio", vectors[1000:1100], 1).ids[:, 0]
    assert (found == ids[1000:1100]).all()


def test_the_vectors_a_load_vectors_function_gave_are_not_kept(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """Its answer is cached for the build; the set kept that copy of every vector for its
    whole life (and cached it again at every check with the source)."""
    ids, vectors = data
    given: list[weakref.ref[np.ndarray]] = []

    def load_vectors(space: str, modality: str) -> tuple[np.ndarray, np.ndarray]:
        copy = vectors[:1000].copy()
        given.append(weakref.ref(copy))
        return ids[:1000].copy(), copy

    index_set = IndexSet.open(tmp_path, "v1", {"vat": ["audio"]}, {"vat": 32}, load_vectors)
    index_set.reconcile()
    index_set.rebuild("vat", "audio")
    gc.collect()
    assert len(given) >= 3 and all(ref() is None for ref in given)
    assert index_set.count("vat", "audio") == 1000


def test_a_source_with_unusable_vectors_is_named_in_the_error(tmp_path: Path) -> None:
    source = ArraySource()
    source.put("vat", "audio", np.arange(3, dtype=np.int64), np.ones((3, 32), np.float32))
    with pytest.raises(SourceError, match="L2-normalised"):
        IndexSet.open(tmp_path, "v1", {"vat": ["audio"]}, {"vat": 32}, source)
    duplicate = ArraySource()
    unit = np.eye(32, dtype=np.float32)[:2]
    duplicate.put("vat", "audio", np.array([5, 5], dtype=np.int64), unit)
    with pytest.raises(SourceError, match="duplicate"):
        IndexSet.open(tmp_path, "v1", {"vat": ["audio"]}, {"vat": 32}, duplicate)


class DeletesDuringRead(ArraySource):
    """A live database: rows are deleted after ids() was read, before vectors() is."""

    def __init__(self, doomed: np.ndarray) -> None:
        super().__init__()
        self.doomed = doomed

    def vectors(self, space: str, modality: str, ids: np.ndarray) -> np.ndarray:
        if len(self.doomed):
            self.delete(self.doomed)
            self.doomed = np.zeros(0, np.int64)
        return super().vectors(space, modality, ids)


def test_rows_deleted_between_ids_and_vectors_are_skipped(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, vectors = data
    source = DeletesDuringRead(doomed=ids[10:20])
    source.put("vat", "audio", ids[:2000], vectors[:2000])
    index_set = IndexSet.open(tmp_path, "v1", {"vat": ["audio"]}, {"vat": 32}, source)
    assert index_set.count("vat", "audio") == 1990
    hits = index_set.search("vat", "audio", vectors[10:20], 5).ids
    assert not np.isin(hits, ids[10:20]).any()
