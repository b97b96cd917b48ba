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

import itertools
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import faiss
import numpy as np

MAX_VALUE = 1 << 24  # past any nlist or efSearch an index uses


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
    # The same target measured at larger k, up to the most results a search may ask
    # for: (k, value, recall) each. More results need more lists probed (recall@100
    # fell to 0.62 at recall@10's nprobe). Empty: not measured (an exact index, too few
    # vectors, an index built before this was measured).
    wide: tuple[tuple[int, int, float], ...] = ()

    def value_for(self, k: int) -> int | None:
        """The parameter for a search of `k` results: the tuned value up to `self.k`;
        past it, between the values measured at larger k (straight lines in log k and
        log value, as the measured curves go), and on past the last with its slope."""
        if k <= self.k or self.value is None or not self.wide:
            return self.value
        points = [(self.k, self.value), *((wk, max(self.value, wv)) for wk, wv, _ in self.wide)]
        # The stretch k falls in; past the widest k measured, the last one.
        (k0, v0), (k1, v1) = next(
            ((a, b) for a, b in itertools.pairwise(points) if k <= b[0]), points[-2:]
        )
        if k1 <= k0 or v1 <= v0:
            return max(v0, v1)
        slope = math.log(v1 / v0) / math.log(k1 / k0)
        # Capped: a search clips it to the index's lists anyway, and past the widest k
        # it is an extrapolation that odd stored values could overflow.
        try:
            raw = v0 * (k / k0) ** slope
        except OverflowError:
            return MAX_VALUE
        return min(MAX_VALUE, math.ceil(raw - 1e-9))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["curve"] = [list(point) for point in self.curve]
        data["wide"] = [list(point) for point in self.wide]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tuning:
        fields = dict(data)
        fields["curve"] = tuple((int(v), float(r)) for v, r in data.get("curve", []))
        fields["wide"] = tuple((int(k), int(v), float(r)) for k, v, r in data.get("wide", []))
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


WIDE_QUERIES = 200


def tune_wide(
    index: faiss.Index,
    tuning: Tuning,
    candidates: tuple[int, ...],
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    ks: tuple[int, ...],
) -> Tuning:
    """`tuning` with the value that reaches its target at each of `ks` above its own k
    (each from the value before it up; `truth`: the exact lists, at least max(ks) long).
    The index is left at the tuned value."""
    if tuning.param is None or tuning.value is None:
        return tuning
    # Each query counts up to 1000 neighbours here: a few hundred pin the recall down
    # (±0.002), and every value tried searches deep.
    queries, query_ids, truth = (
        queries[:WIDE_QUERIES],
        query_ids[:WIDE_QUERIES],
        truth[:WIDE_QUERIES],
    )
    wide: list[tuple[int, int, float]] = []
    start = tuning.value
    for k in sorted({min(k, truth.shape[1]) for k in ks}):
        if k <= tuning.k:
            continue
        wider = tuple(c for c in candidates if c >= start) or (start,)
        found = tune(index, tuning.param, wider, queries, query_ids, truth[:, :k], tuning.target)
        assert found.value is not None
        wide.append((k, found.value, found.recall))
        start = found.value
    faiss.ParameterSpace().set_index_parameter(index, tuning.param, tuning.value)
    return replace(tuning, wide=tuple(wide))
