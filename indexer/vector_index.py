"""One FAISS index over (id, vector) pairs that many threads can search while it changes.

What this class adds to a FAISS index, and nothing more:

- a reader-writer lock around FAISS calls (searches in parallel, adds/removes alone);
- the set of live ids, so adds are idempotent and counts and checksums are exact;
- tombstones: ``remove`` hides ids at once through an ``IDSelectorNot(IDSelectorBatch)``
  passed to every search; they are removed for real with one batched ``remove_ids``
  (O(n) per call for IVF) once they pass a threshold, and before every save. HNSW cannot
  remove, so its tombstones stay until a rebuild;
- filters: allowed ids (or any ``faiss.IDSelector``) go to FAISS as a selector, with
  nprobe/efSearch raised by the filter's selectivity; rows that still come back short
  of k are searched again exhaustively, so a filtered search returns k results whenever
  k allowed items exist;
- an optional GPU copy for unfiltered searches (see ``indexer.gpu``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import faiss
import numpy as np

from indexer.choice import ID_MAP2_BYTES, IVF_ID_BYTES, IndexPolicy, Kind
from indexer.errors import VectorError
from indexer.gpu import GPU_MAX_K, GpuReplica, make_replica
from indexer.locking import ReadWriteLock
from indexer.tuning import Tuning

LOG = logging.getLogger("indexer")
T = TypeVar("T")

IdFilter = np.ndarray | Sequence[int] | set[int] | frozenset[int] | faiss.IDSelector
NORM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class IndexInfo:
    """What was built and why; stored in the manifest and reported by stats()."""

    factory: str
    kind: Kind
    dim: int
    tuning: Tuning
    built_n: int
    built_at: str
    build_seconds: float
    train_size: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tuning"] = self.tuning.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexInfo:
        fields = dict(data)
        fields["tuning"] = Tuning.from_dict(fields["tuning"])
        return cls(**fields)


def index_ids(index: faiss.Index) -> np.ndarray:
    """Every id physically stored in a FAISS index (IDMap, IDMap2 or IVF), sorted."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2):
        ids = faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size()).copy()
    elif isinstance(index, faiss.IndexIVF):
        lists = index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(index.nlist)
            if lists.list_size(i)
        ]
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    else:
        raise VectorError(f"{type(index).__name__} keeps no ids; build it with IDMap2 or IVF")
    return np.sort(ids.astype(np.int64, copy=False))


def structure_bytes(index: faiss.Index) -> int:
    """Memory a CPU index holds, read from its structure (codes, ids, graph, centroids)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2):
        return structure_bytes(index.index) + index.ntotal * (8 + ID_MAP2_BYTES)
    if isinstance(index, faiss.IndexIDMap):
        return structure_bytes(index.index) + index.ntotal * 8
    if isinstance(index, faiss.IndexIVF):
        return index.ntotal * (index.code_size + IVF_ID_BYTES) + structure_bytes(index.quantizer)
    if isinstance(index, faiss.IndexHNSW):
        graph = index.hnsw.neighbors.size() * 4 + index.hnsw.levels.size() * 4
        graph += index.hnsw.offsets.size() * 8
        return structure_bytes(index.storage) + graph
    code_size = getattr(index, "code_size", 4 * index.d)
    return index.ntotal * code_size


def check_vectors(ids: Any, vectors: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 ids [n] and C-contiguous float32 unit vectors [n, dim], or a VectorError."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise VectorError(f"ids must be a 1-D integer array, got shape {ids.shape} {ids.dtype}")
    vectors = np.asarray(vectors)
    if len(ids) == 0:
        return ids.astype(np.int64), np.zeros((0, dim), np.float32)
    if vectors.ndim != 2 or vectors.shape != (len(ids), dim):
        raise VectorError(
            f"vectors must have shape ({len(ids)}, {dim}) to match the ids and "
            f"the space's dimension, got {vectors.shape}"
        )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise VectorError("vectors contain NaN or infinity")
    norms = np.linalg.norm(vectors, axis=1)
    worst = float(np.max(np.abs(norms - 1.0)))
    if worst > NORM_TOLERANCE:
        raise VectorError(
            f"vectors must be L2-normalised (inner product = cosine); a norm is off by {worst:.3f}"
        )
    ids = ids.astype(np.int64, copy=False)
    if len(np.unique(ids)) != len(ids):
        raise VectorError("ids must be unique within one add")
    return ids, vectors


def check_queries(queries: Any, dim: int) -> np.ndarray:
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise VectorError(f"queries must have shape (n, {dim}), got {queries.shape}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not np.isfinite(queries).all():
        raise VectorError("queries contain NaN or infinity")
    return queries


def _contains(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mask of ids found in a sorted array (searchsorted: no hashing of the big side)."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[pos] == ids


def _merge(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Sorted union; O(n) memory move, not an O(n log n) re-sort of a million ids."""
    new = np.unique(ids)
    new = new[~_contains(sorted_ids, new)]
    if len(new) == 0:
        return sorted_ids
    return np.insert(sorted_ids, np.searchsorted(sorted_ids, new), new)


def _drop(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Sorted difference; finds the few ids by binary search, then one O(n) memory move."""
    if len(ids) == 0 or len(sorted_ids) == 0:
        return sorted_ids
    ids = np.unique(ids)
    pos = np.searchsorted(sorted_ids, ids)
    inside = pos < len(sorted_ids)
    pos, ids = pos[inside], ids[inside]
    return np.delete(sorted_ids, pos[sorted_ids[pos] == ids])


def _keep_first(
    scores: np.ndarray, labels: np.ndarray, bad: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first k entries that are not `bad`, order kept; -1 / -inf past them."""
    bad = bad | (labels < 0)
    order = np.argsort(bad, axis=1, kind="stable")
    labels = np.take_along_axis(labels, order, axis=1)[:, :k]
    scores = np.take_along_axis(scores, order, axis=1)[:, :k]
    gone = np.take_along_axis(bad, order, axis=1)[:, :k]
    labels = np.where(gone, -1, labels)
    scores = np.where(gone, -np.inf, scores).astype(np.float32)
    return scores, labels


class VectorIndex:
    """One FAISS index with ids, tombstones, filters, a lock and an optional GPU copy."""

    def __init__(
        self,
        name: str,
        index: faiss.Index,
        info: IndexInfo,
        policy: IndexPolicy,
        physical_ids: np.ndarray,
        live_ids: np.ndarray | None = None,
    ) -> None:
        self.name = name
        self.info = info
        self.policy = policy
        self._index = index
        physical = np.unique(np.asarray(physical_ids, dtype=np.int64))
        live = physical if live_ids is None else np.intersect1d(physical, live_ids)
        self._live = live
        self._tomb = np.setdiff1d(physical, live)
        self._tomb_sel: faiss.IDSelector | None = None
        self._tomb_keep: list[Any] = []
        self._lock = ReadWriteLock()
        self._gpu: GpuReplica | None = None
        self.device = "cpu"
        self.device_reason = "not asked to use a GPU"
        self._changes = 0  # bumped by every add/remove; `dirty` compares it with the save
        self._saved_changes = 0
        self.compactions = 0
        self._faiss_ivf = faiss.extract_index_ivf(index) if info.kind == "ivf" else None
        self._set_params(index)
        self._refresh_tombstones()

    # ------------------------------------------------------------------ properties
    @property
    def ntotal(self) -> int:
        """Live vectors (what searches can return)."""
        return len(self._live)

    @property
    def dirty(self) -> bool:
        """Whether the index changed since the last save the manifest holds."""
        return self._changes != self._saved_changes

    def mark_changed(self) -> None:
        self._changes += 1

    def mark_saved(self, generation: int) -> None:
        """The save of `generation` (returned by write()) is committed to the manifest."""
        self._saved_changes = max(self._saved_changes, generation)

    @property
    def tombstones(self) -> int:
        return len(self._tomb)

    def live_ids(self) -> np.ndarray:
        with self._lock.read():
            return self._live.copy()

    def memory_bytes(self) -> int:
        with self._lock.read():
            return structure_bytes(self._index)

    # ------------------------------------------------------------------ set-up
    def _set_params(self, index: faiss.Index) -> None:
        tuning = self.info.tuning
        if tuning.param is not None and tuning.value is not None:
            faiss.ParameterSpace().set_index_parameter(index, tuning.param, tuning.value)

    def attach_gpu(self) -> None:
        """Serve unfiltered searches from a GPU copy when the policy and FAISS allow."""
        with self._lock.write():
            self._attach_gpu_locked()

    def _drop_gpu_locked(self, why: str) -> None:
        LOG.warning("index %s leaves the GPU: %s; served on the CPU", self.name, why)
        self._gpu = None
        self.device = "cpu"
        self.device_reason = f"{str(why).splitlines()[0][:200]}; served on the CPU"

    def _attach_gpu_locked(self) -> None:
        self._gpu = None
        self.device = "cpu"
        if not self.policy.use_gpu:
            self.device_reason = "GPU use switched off by the policy"
            return
        replica, reason = make_replica(
            self._index,
            self.info.kind,
            self.info.factory,
            self.info.tuning.param,
            self.info.tuning.value,
            structure_bytes(self._index),
            self.policy.gpu_shard,
            self.policy.gpu_exact_max_bytes,
        )
        self._gpu = replica
        self.device_reason = reason
        if replica is not None:
            self.device = replica.device

    def _refresh_tombstones(self) -> None:
        if len(self._tomb) == 0:
            self._tomb_sel, self._tomb_keep = None, []
            return
        batch = faiss.IDSelectorBatch(self._tomb)
        self._tomb_sel = faiss.IDSelectorNot(batch)
        self._tomb_keep = [batch]  # SWIG does not keep the inner selector alive

    def _compact_threshold(self) -> int:
        threshold = min(
            self.policy.compact_max,
            max(64, int(self.policy.compact_fraction * max(1, self.ntotal))),
        )
        if self._gpu is not None:  # the GPU copy over-fetches k + tombstones (<= 2048)
            threshold = min(threshold, GPU_MAX_K // 2)
        return threshold

    # ------------------------------------------------------------------ writes
    def add(self, ids: Any, vectors: Any) -> int:
        """Add vectors; ids already live are left alone (vectors never change within a
        version), ids deleted but not yet compacted come back. Returns how many became live."""
        ids, vectors = check_vectors(ids, vectors, self.info.dim)
        if len(ids) == 0:
            return 0
        with self._lock.write():
            live = _contains(self._live, ids)
            revived = _contains(self._tomb, ids) & ~live
            new = ~live & ~revived
            if new.any():
                self._index.add_with_ids(vectors[new], ids[new])
                if self._gpu is not None:
                    try:
                        self._gpu.add(vectors[new], ids[new])
                    except RuntimeError as exc:  # e.g. GPU out of memory
                        # The CPU index has them: serve from it rather than lose the bookkeeping.
                        self._drop_gpu_locked(f"adding to the GPU copy failed ({exc})")
            if revived.any():
                self._tomb = _drop(self._tomb, ids[revived])
                self._refresh_tombstones()
            self._live = _merge(self._live, ids[~live])
            changed = int((~live).sum())
            if changed:
                self._changes += 1
            return changed

    def remove(self, ids: Any) -> int:
        """Hide ids from every later search at once; returns how many were live here."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        with self._lock.write():
            present = ids[_contains(self._live, ids)]
            if len(present) == 0:
                return 0
            self._live = _drop(self._live, present)
            self._tomb = _merge(self._tomb, present)
            self._refresh_tombstones()
            self._changes += 1
            if len(self._tomb) >= self._compact_threshold():
                self._compact_locked()
            return len(present)

    def compact(self) -> int:
        """Physically remove tombstoned vectors (one batched remove_ids); returns how many."""
        if len(self._tomb) == 0:
            return 0
        with self._lock.write():
            return self._compact_locked()

    def _compact_locked(self) -> int:
        if len(self._tomb) == 0 or self.info.kind == "hnsw":
            return 0  # HNSW cannot remove_ids: its tombstones wait for a rebuild
        removed = self._index.remove_ids(faiss.IDSelectorBatch(self._tomb))
        self._tomb = np.zeros(0, np.int64)
        self._refresh_tombstones()
        self.compactions += 1
        if self._gpu is not None:  # GPU indexes cannot remove: clone the compacted copy
            self._attach_gpu_locked()
        return int(removed)

    # ------------------------------------------------------------------ search
    def search(
        self, queries: Any, k: int, filter: IdFilter | None = None, param_k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores [n, k] float32, ids [n, k] int64); -1 / -inf where fewer exist.
        param_k: the results the search parameter is chosen for (default k; IndexSet)."""
        if int(k) < 1:
            raise VectorError(f"k must be at least 1, got {k}")
        k = int(k)
        param_k = k if param_k is None else max(1, int(param_k))
        queries = check_queries(queries, self.info.dim)
        with self._lock.read():
            gpu = (
                filter is None
                and self._gpu is not None
                and k + len(self._tomb) <= GPU_MAX_K
                # An IVF's GPU copy probes as tuned for recall_k; more results need more
                # (an exact copy is right at any k).
                and (
                    self._gpu.exact or self.info.tuning.value_for(param_k) == self.info.tuning.value
                )
            )
            try:
                if gpu:
                    scores, labels = self._gpu_search(queries, k)
            except RuntimeError as exc:  # e.g. no GPU memory for this batch's scratch space
                LOG.warning("GPU search failed (%s); answered from the CPU copy", exc)
                gpu = False
            if not gpu:
                scores, labels = self._cpu_search(queries, k, filter, param_k=param_k)
        scores = np.where(labels < 0, -np.inf, scores).astype(np.float32)
        return scores, labels

    def _gpu_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._gpu is not None
        fetch = k + len(self._tomb)
        scores, labels = self._gpu.search(queries, fetch)
        if len(self._tomb):
            scores, labels = _keep_first(scores, labels, _contains_2d(self._tomb, labels), k)
        wanted = min(k, self.ntotal)
        short = (labels >= 0).sum(axis=1) < wanted
        if short.any():  # nprobe lists too thin for these rows: ask the CPU exhaustively
            s2, l2 = self._cpu_search(queries[short], k, None, exhaustive=True)
            scores[short], labels[short] = s2, l2
        return scores, labels

    def _selector(
        self, filter: IdFilter | None
    ) -> tuple[faiss.IDSelector | None, float, int, list[Any]]:
        """(selector, selectivity, matches wanted per row, objects to keep alive)."""
        if filter is None:
            return self._tomb_sel, 1.0, self.ntotal, []
        if isinstance(filter, faiss.IDSelector):
            # How many it lets through is unknown: at most every live vector (none in an
            # empty index, which an HNSW's exhaustive retry could not search).
            if self._tomb_sel is None:
                return filter, 1.0, self.ntotal, []
            both = faiss.IDSelectorAnd(filter, self._tomb_sel)
            return both, 1.0, self.ntotal, [filter]
        if isinstance(filter, set | frozenset):
            filter = list(filter)
        allowed = np.unique(np.asarray(filter, dtype=np.int64))
        allowed = allowed[_contains(self._live, allowed)]  # drops tombstones too
        batch = faiss.IDSelectorBatch(allowed)
        selectivity = len(allowed) / max(1, self.ntotal)
        return batch, selectivity, len(allowed), [allowed]

    def _cpu_search(
        self,
        queries: np.ndarray,
        k: int,
        filter: IdFilter | None,
        exhaustive: bool = False,
        param_k: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        sel, selectivity, matches, keep = self._selector(filter)
        if matches == 0:
            n = len(queries)
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        search = self._search_with(sel, selectivity, exhaustive, param_k or k)
        scores, labels = search(queries, k)
        wanted = min(k, matches)
        short = (labels >= 0).sum(axis=1) < wanted
        if short.any() and not exhaustive and self.info.kind != "flat":
            again = self._search_with(sel, selectivity, True, k)
            s2, l2 = again(queries[short], k)
            scores[short], labels[short] = s2, l2
        del keep
        return scores, labels

    def _search_with(
        self, sel: faiss.IDSelector | None, selectivity: float, exhaustive: bool, k: int
    ) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
        """A search function with this selector and the parameter scaled to the filter
        and to `k` (Tuning.value_for)."""
        index = self._index
        kind = self.info.kind
        if kind == "flat":
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
            return lambda q, k: index.search(q, k, params=params)
        if kind == "ivf":
            assert self._faiss_ivf is not None
            nlist = self._faiss_ivf.nlist
            base = self.info.tuning.value_for(k) or self._faiss_ivf.nprobe
            nprobe = (
                nlist if exhaustive else min(nlist, math.ceil(base / max(selectivity, 1 / nlist)))
            )
            if sel is None and nprobe == self._faiss_ivf.nprobe:
                return lambda q, k: index.search(q, k)
            params = (
                faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
                if sel is not None
                else faiss.SearchParametersIVF(nprobe=nprobe)
            )
            return lambda q, k: index.search(q, k, params=params)
        # HNSW: efSearch scaled by the filter; exhaustive = FAISS brute force over its storage
        if exhaustive:
            return self._hnsw_exhaustive(sel)
        base = self.info.tuning.value_for(k) or 64
        ef = int(min(4096, math.ceil(base / max(selectivity, 1e-3))))

        def hnsw_search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            params = faiss.SearchParametersHNSW(efSearch=max(ef, k))
            if sel is not None:
                params.sel = sel
            return index.search(q, k, params=params)

        return hnsw_search

    def _hnsw_exhaustive(
        self, sel: faiss.IDSelector | None
    ) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
        id_map_index = faiss.downcast_index(self._index)
        hnsw = faiss.downcast_index(id_map_index.index)
        storage = faiss.downcast_index(hnsw.storage)
        id_map = faiss.rev_swig_ptr(id_map_index.id_map.data(), id_map_index.id_map.size())
        translated = faiss.IDSelectorTranslated(id_map_index.id_map, sel) if sel else None
        params = faiss.SearchParameters(sel=translated) if translated is not None else None

        def exhaustive(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            scores, rows = storage.search(q, k, params=params)
            labels = np.where(rows >= 0, id_map[np.maximum(rows, 0)], -1).astype(np.int64)
            return scores, labels

        return exhaustive

    # ------------------------------------------------------------------ persistence
    def write(self, writer: Callable[[faiss.Index], T]) -> tuple[T, np.ndarray, np.ndarray, int]:
        """Compact, then hand the index to `writer` under the read lock (searches go on,
        writes wait, and searches wait behind a waiting write: keep `writer` short). Returns
        what `writer` returned, the live and the deleted ids physically in what it saw (an
        HNSW keeps its deleted ones), and the generation to pass to mark_saved() once the
        save is committed."""
        self.compact()
        with self._lock.read():
            return writer(self._index), self._live.copy(), self._tomb.copy(), self._changes

    def maintenance_reason(self) -> str | None:
        """Why this index should be rebuilt from the source now, or None."""
        policy = self.policy
        n, built = self.ntotal, self.info.built_n
        if self.info.kind == "hnsw":
            physical = n + len(self._tomb)
            if physical and len(self._tomb) > policy.hnsw_tombstone_fraction * physical:
                return (
                    f"{len(self._tomb):,} of {physical:,} vectors in the HNSW index are "
                    "deleted (HNSW cannot remove; rebuilding drops them)"
                )
        if self.info.reason.startswith("fallback"):
            if n >= policy.regrow_factor * max(built, 64):
                return f"grew from {built:,} to {n:,} vectors: enough to train the chosen index"
            return None
        if policy.factory:
            return None
        if self.info.kind == "flat":
            if n * self.info.dim > 2 * policy.exact_max_floats:
                return f"exact index grew to {n:,} vectors, past twice the exact-search limit"
            return None
        if built and (n >= policy.regrow_factor * built or n * policy.regrow_factor <= built):
            return f"{self.info.factory} was built for {built:,} vectors and now holds {n:,}"
        return None

    def stats(self) -> dict[str, Any]:
        tuning = self.info.tuning
        return {
            "factory": self.info.factory,
            "kind": self.info.kind,
            "dim": self.info.dim,
            "ntotal": self.ntotal,
            "tombstones": len(self._tomb),
            "params": {tuning.param: tuning.value} if tuning.param else {},
            "recall_at_k": tuning.recall,
            "recall_k": tuning.k,
            "recall_target": tuning.target,
            "recall_met": tuning.met,
            "tuning_queries": tuning.queries,
            "tuning_curve": [list(point) for point in tuning.curve],
            # [k, value, recall] measured for searches of more results
            "wide_tuning": [list(point) for point in tuning.wide],
            "device": self.device,
            "device_reason": self.device_reason,
            "memory_bytes": self.memory_bytes(),
            "built_n": self.info.built_n,
            "built_at": self.info.built_at,
            "build_seconds": self.info.build_seconds,
            "train_size": self.info.train_size,
            "choice_reason": self.info.reason,
            "compactions": self.compactions,
        }


def _contains_2d(sorted_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return _contains(sorted_ids, labels.ravel()).reshape(labels.shape)


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
