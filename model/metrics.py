"""Evaluation metrics: retrieval recall/median rank and linear probes.

Both follow the paper's protocols. Retrieval: every query has one positive candidate
(its own clip), ranks are computed against all candidates, ties count against the
query (a collapsed model that maps everything to one point scores chance, not 1.0).
Linear probe (UCF101 / ESC-50 protocol): standardise frozen features, fit a linear
classifier on the training split, report accuracy on the test split; the
regularisation strength is chosen by cross-validation on the training split only.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from model.errors import ModelError

RECALL_AT = (1, 5, 10)


class MetricsError(ModelError, ValueError):
    """Inputs that a metric cannot be computed from (shapes, empty sets, one class)."""


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
    return (similarity >= positive_scores[:, None]).sum(axis=1)


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


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of a linear SVM on standardised frozen features (C chosen by 3-fold CV on train).

    Returns {"accuracy", "chance" (majority class of the test split), "classes", "C"}.
    """
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise MetricsError("features and labels differ in length")
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise MetricsError(f"a linear probe needs at least two classes, got {classes.tolist()}")
    pipeline = make_pipeline(StandardScaler(), LinearSVC(max_iter=5000, random_state=seed))
    min_class = int(np.min(np.unique(train_y, return_counts=True)[1]))
    folds = min(3, min_class)
    with warnings.catch_warnings():
        # An SVM on a small probe set may stop at max_iter; the accuracy still stands.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if folds >= 2:
            search = GridSearchCV(
                pipeline,
                {"linearsvc__C": [0.01, 0.1, 1.0]},
                cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            )
            search.fit(train_x, train_y)
            model, c_value = search.best_estimator_, search.best_params_["linearsvc__C"]
        else:
            model, c_value = pipeline.fit(train_x, train_y), 1.0
    accuracy = float((model.predict(test_x) == test_y).mean())
    _, counts = np.unique(test_y, return_counts=True)
    return {
        "accuracy": accuracy,
        "chance": float(counts.max() / counts.sum()),
        "classes": len(classes),
        "C": float(c_value),
    }
