"""Tune an index's search parameter (nprobe / efSearch) to a recall target, measured honestly.

Held-out queries, leave-one-out: a few hundred stored vectors are drawn and each is
searched for as if it were new, its own entry left out of both the exact answer and the
index's answer. Such a query comes from the same distribution as the stored items,
which is what the service's item-to-item queries are, and is never trivially found.
The exact answer is FAISS brute force over every stored vector (streamed in batches).

The tuner then walks the parameter's values from cheapest up, sets each through
``faiss.ParameterSpace`` and keeps the first whose recall@k reaches the target. The
value, the recall measured there and the whole curve are stored with the index and
reported; when no value reaches the target (a PQ codec under a tight memory budget,
say) the best one is kept and ``met`` says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import faiss
import numpy as np


@dataclass(frozen=True)
class Tuning:
    param: str | None  # nprobe | efSearch | None (exact)
    value: int | None
    recall: float  # recall@k measured at value on the held-out queries
    target: float
    met: bool
    k: int
    queries: int
    curve: tuple[tuple[int, float], ...] = ()  # (value, recall) for every value tried
    # The same target measured at a larger k (the most results a search may ask for):
    # more results need more lists probed (recall@500 fell to 0.81 at recall@10's
    # nprobe). None: not measured (an exact index, too few vectors, an older build).
    wide_k: int | None = None
    wide_value: int | None = None
    wide_recall: float | None = None

    def value_for(self, k: int) -> int | None:
        """The parameter for a search of `k` results: the tuned value up to `self.k`;
        past it, scaled as measured at `wide_k` (a power law through the two points,
        which the measured curves follow, and on with it past `wide_k`)."""
        if k <= self.k or self.value is None or self.wide_k is None or self.wide_value is None:
            return self.value
        if self.wide_value <= self.value or self.wide_k <= self.k:
            return self.value
        slope = math.log(self.wide_value / self.value) / math.log(self.wide_k / self.k)
        return math.ceil(self.value * (k / self.k) ** slope - 1e-9)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["curve"] = [list(point) for point in self.curve]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tuning:
        fields = dict(data)
        fields["curve"] = tuple((int(v), float(r)) for v, r in data.get("curve", []))
        return cls(**fields)


def exact_tuning(k: int, target: float) -> Tuning:
    """What an exact index reports: nothing to tune, recall 1 by construction."""
    return Tuning(param=None, value=None, recall=1.0, target=target, met=True, k=k, queries=0)


class ExactNeighbours:
    """Exact inner-product top-k of fixed queries, fed the database chunk by chunk.

    Uses FAISS's own brute force (`faiss.knn`) and merge (`faiss.ResultHeap`), so a
    million stored vectors never have to sit in memory at once.
    """

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self._heap = faiss.ResultHeap(len(queries), k, keep_max=True)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        kk = min(self.k, len(ids))
        scores, rows = faiss.knn(
            self.queries,
            np.ascontiguousarray(vectors, np.float32),
            kk,
            metric=faiss.METRIC_INNER_PRODUCT,
        )
        labels = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1).astype(np.int64)
        if kk < self.k:  # pad so every block has k columns
            pad = self.k - kk
            scores = np.hstack([scores, np.full((len(scores), pad), -np.inf, np.float32)])
            labels = np.hstack([labels, np.full((len(labels), pad), -1, np.int64)])
        self._heap.add_result(np.ascontiguousarray(scores), np.ascontiguousarray(labels))

    def result(self) -> np.ndarray:
        self._heap.finalize()
        return self._heap.I


def drop_self(labels: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row without the query's own id (leave-one-out), cut to k columns."""
    own = labels == query_ids[:, None]
    order = np.argsort(own, axis=1, kind="stable")  # own entry moves to the end
    kept = np.take_along_axis(labels, order, axis=1)[:, :k]
    return np.where(np.take_along_axis(own, order, axis=1)[:, :k], -1, kept)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (the usual k-recall@k; -1 ignored)."""
    hits = 0
    total = 0
    for row_found, row_truth in zip(found, truth, strict=True):
        wanted = row_truth[row_truth >= 0]
        total += len(wanted)
        hits += int(np.isin(wanted, row_found).sum())
    return hits / total if total else 1.0


def tune(
    index: faiss.Index,
    param: str | None,
    candidates: tuple[int, ...],
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    target: float,
) -> Tuning:
    """Set `param` on `index` to the cheapest candidate that reaches `target` recall@k.

    truth: the exact top-k of each query with its own id left out (see drop_self)."""
    k = truth.shape[1]

    def search() -> np.ndarray:
        return drop_self(index.search(queries, k + 1)[1], query_ids, k)

    if param is None or not candidates:
        found = search()
        recall = recall_at_k(found, truth)
        return Tuning(None, None, recall, target, recall >= target, k, len(queries))
    space = faiss.ParameterSpace()
    curve: list[tuple[int, float]] = []
    for value in candidates:
        space.set_index_parameter(index, param, value)
        found = search()
        recall = recall_at_k(found, truth)
        curve.append((value, recall))
        if recall >= target:
            return Tuning(param, value, recall, target, True, k, len(queries), tuple(curve))
    best_value, best_recall = max(curve, key=lambda point: (point[1], -point[0]))
    space.set_index_parameter(index, param, best_value)
    return Tuning(param, best_value, best_recall, target, False, k, len(queries), tuple(curve))


def tune_wide(
    index: faiss.Index,
    tuning: Tuning,
    candidates: tuple[int, ...],
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
) -> Tuning:
    """`tuning` with the value that reaches its target at `truth`'s larger k (from the
    tuned value up); the index is left at the tuned value."""
    if tuning.param is None or tuning.value is None or truth.shape[1] <= tuning.k:
        return tuning
    wider = tuple(c for c in candidates if c >= tuning.value) or (tuning.value,)
    wide = tune(index, tuning.param, wider, queries, query_ids, truth, tuning.target)
    faiss.ParameterSpace().set_index_parameter(index, tuning.param, tuning.value)
    return replace(tuning, wide_k=wide.k, wide_value=wide.value, wide_recall=wide.recall)
