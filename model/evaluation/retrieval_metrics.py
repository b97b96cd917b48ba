"""Retrieval metrics, the paper's protocol: recall at K and median rank.

Every query has one positive candidate (its own clip), ranks are computed against all
candidates, ties count against the query (a collapsed model that maps everything to
one point scores chance, not 1.0).
"""

from __future__ import annotations

import numpy as np

from model.evaluation.errors import MetricsError

RECALL_AT = (1, 5, 10)


def ranks_of_positives(similarity: np.ndarray, positive: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each query's positive among all candidates.

    similarity: [Q, N] scores, higher is better. positive: [Q] index of each query's
    positive candidate; default the diagonal (query i ↔ candidate i).
    Ties are pessimistic: rank = number of candidates scoring ≥ the positive.
    """
    if similarity.ndim != 2 or similarity.shape[0] == 0 or similarity.shape[1] == 0:
        raise MetricsError(f"similarity must be a non-empty [Q, N] matrix, got {similarity.shape}")
    n_queries, n_candidates = similarity.shape
    if positive is None:
        if n_queries > n_candidates:
            raise MetricsError("diagonal ground truth needs at least as many candidates as queries")
        positive = np.arange(n_queries)
    positive_scores = similarity[np.arange(n_queries), positive]
    ranks = (similarity >= positive_scores[:, None]).sum(axis=1)
    # A NaN score compares false with everything, which read as rank 0, a hit at every K:
    # a model whose weights went NaN scored 1.0 and was switched to. It found nothing.
    return np.where(np.isfinite(positive_scores), ranks, n_candidates)


def retrieval_metrics(
    queries: np.ndarray, candidates: np.ndarray, positive: np.ndarray | None = None
) -> dict[str, float]:
    """R@1/5/10 and median rank of L2-normalised `queries` [Q, D] against `candidates` [N, D]."""
    if queries.shape[1] != candidates.shape[1]:
        raise MetricsError(
            f"queries ({queries.shape[1]}-d) and candidates ({candidates.shape[1]}-d) "
            "live in different spaces"
        )
    similarity = queries.astype(np.float64) @ candidates.astype(np.float64).T
    ranks = ranks_of_positives(similarity, positive)
    out = {f"R@{k}": float((ranks <= k).mean()) for k in RECALL_AT}
    out["median_rank"] = float(np.median(ranks))
    out["candidates"] = int(candidates.shape[0])
    out["queries"] = int(queries.shape[0])
    return out


def chance_recall(k: int, n_candidates: int) -> float:
    return min(1.0, k / n_candidates)
