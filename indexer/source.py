"""Where the indexer gets vectors from: the service's database, which is the truth.

The indexer never owns embeddings. To build, repair or catch up an index it asks a
``VectorSource`` for the ids it should hold and for the vectors of some of them. The
service implements it over SQLite (``SELECT id ...`` and ``... WHERE id IN (...)``);
``ArraySource`` keeps arrays in memory (tests, benchmarks, small tools) and
``CallbackSource`` adapts a single ``load_vectors(space, modality) -> (ids, vectors)``
function.

Contract: ids are int64 and unique per (space, modality); the vector of an id never
changes within a model version (a new model gives a new version), so an id the index
already holds never needs its vector refreshed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from indexer.errors import SourceError


@runtime_checkable
class VectorSource(Protocol):
    def ids(self, space: str, modality: str) -> np.ndarray:
        """Every id stored for (space, modality): int64 [n], any order."""
        ...

    def vectors(self, space: str, modality: str, ids: np.ndarray) -> np.ndarray:
        """The vectors of these ids, float32 [len(ids), d], in the order given."""
        ...


LoadVectors = Callable[[str, str], tuple[np.ndarray, np.ndarray]]


class ArraySource:
    """An in-memory, thread-safe VectorSource that can change (tests, benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], dict[int, np.ndarray]] = {}
        # bulk loads: (ids, vectors, argsort of ids)
        self._arrays: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def put(self, space: str, modality: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store vectors (the truth); later calls add to or replace what is there."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            key = (space, modality)
            if key not in self._data and key not in self._arrays:
                # Bulk first load stays as two arrays: a dict of 1M rows is slow.
                self._arrays[key] = (ids.copy(), vectors.copy(), np.argsort(ids))
                return
            rows = self._rows(key)
            for i, vector in zip(ids.tolist(), vectors, strict=True):
                rows[i] = vector

    def delete(self, ids: np.ndarray) -> None:
        """Delete ids from every (space, modality)."""
        with self._lock:
            for key in list(self._data) + list(self._arrays):
                rows = self._rows(key)
                for i in np.asarray(ids, dtype=np.int64).tolist():
                    rows.pop(i, None)

    def _rows(self, key: tuple[str, str]) -> dict[int, np.ndarray]:
        if key in self._arrays:
            ids, vectors, _ = self._arrays.pop(key)
            self._data[key] = dict(zip(ids.tolist(), vectors, strict=True))
        return self._data.setdefault(key, {})

    def ids(self, space: str, modality: str) -> np.ndarray:
        with self._lock:
            key = (space, modality)
            if key in self._arrays:
                return self._arrays[key][0].copy()
            return np.fromiter(self._data.get(key, {}).keys(), dtype=np.int64)

    def vectors(self, space: str, modality: str, ids: np.ndarray) -> np.ndarray:
        with self._lock:
            key = (space, modality)
            if key in self._arrays:
                all_ids, all_vectors, order = self._arrays[key]
                if len(all_ids) == 0:
                    if len(ids):
                        raise SourceError(f"{space}/{modality}: nothing is stored")
                    return all_vectors[:0]
                pos = np.searchsorted(all_ids, ids, sorter=order)
                pos = np.minimum(pos, len(all_ids) - 1)
                rows = order[pos]
                if len(ids) and not np.array_equal(all_ids[rows], ids):
                    raise SourceError(f"{space}/{modality}: some requested ids are not stored")
                return all_vectors[rows]
            rows = self._data.get(key, {})
            try:
                picked = [rows[i] for i in np.asarray(ids).tolist()]
            except KeyError as exc:
                raise SourceError(f"{space}/{modality}: id {exc.args[0]} is not stored") from exc
            if not picked:
                return np.zeros((0, 0), dtype=np.float32)
            return np.stack(picked).astype(np.float32, copy=False)


class CallbackSource:
    """A VectorSource over one `load_vectors(space, modality) -> (ids, vectors)` function.

    `ids()` calls the function and keeps its answer, which `vectors()` then serves, so a
    build reads the database once per index. It holds a full copy of the vectors of the
    indexes being opened (or caught up, or rebuilt) until that is done, when IndexSet
    releases it: for very large sets implement VectorSource directly.
    """

    def __init__(self, load_vectors: LoadVectors) -> None:
        self._load = load_vectors
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def ids(self, space: str, modality: str) -> np.ndarray:
        ids, vectors = self._load(space, modality)
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(ids) != len(vectors):
            raise SourceError(
                f"{space}/{modality}: load_vectors returned {len(ids)} ids "
                f"but {len(vectors)} vectors"
            )
        with self._lock:
            self._cache[(space, modality)] = (ids, vectors, np.argsort(ids))
        return ids.copy()

    def vectors(self, space: str, modality: str, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        for attempt in range(2):
            with self._lock:
                cached = self._cache.get((space, modality))
            if cached is None or attempt == 1:
                # not read yet, or the database moved on since ids() was read: read again
                self.ids(space, modality)
                with self._lock:
                    cached = self._cache[(space, modality)]
            all_ids, all_vectors, order = cached
            if len(ids) == 0:
                return np.zeros(
                    (0, all_vectors.shape[1] if all_vectors.ndim == 2 else 0), np.float32
                )
            if len(all_ids) == 0:
                continue
            pos = np.minimum(np.searchsorted(all_ids, ids, sorter=order), len(all_ids) - 1)
            rows = order[pos]
            if np.array_equal(all_ids[rows], ids):
                return all_vectors[rows]
        raise SourceError(
            f"{space}/{modality}: load_vectors does not return some of the requested ids"
        )

    def release(self) -> None:
        """Drop the cached copies (call after a build)."""
        with self._lock:
            self._cache.clear()
