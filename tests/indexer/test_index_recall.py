"""Recall of every index type the indexer may choose, against exact search, on clustered data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from indexer import ArraySource, IndexPolicy, IndexSet, recall_at_k
from indexer.synthetic import ClusteredSphere

Reference = Callable[..., tuple[np.ndarray, np.ndarray]]

LAYOUT = {"vat": ["audio"]}
DIMS = {"vat": 32}

# (factory forced, or None for the shipped rules), allow_hnsw, must reach the target
CASES = [
    pytest.param(None, False, True, id="rules-flat"),
    pytest.param("rules-ivf", False, True, id="rules-ivf-flat"),
    pytest.param("IVF32,SQfp16", False, True, id="ivf-sqfp16"),
    pytest.param("IVF32,SQ8", False, True, id="ivf-sq8"),
    pytest.param("IVF32,PQ4", False, False, id="ivf-pq"),
    pytest.param("rules-hnsw", True, True, id="rules-hnsw"),
    pytest.param("HNSW16,SQ8", True, True, id="hnsw-sq8"),
]


def _policy(factory: str | None, allow_hnsw: bool) -> IndexPolicy:
    if factory is None:
        return IndexPolicy(tuning_queries=200)
    exact_max = 0 if factory.startswith("rules") else IndexPolicy().exact_max_floats
    forced = None if factory.startswith("rules") else factory
    return IndexPolicy(
        exact_max_floats=exact_max,
        factory=forced,
        allow_hnsw=allow_hnsw,
        hnsw_m=16,
        tuning_queries=200,
    )


@pytest.mark.parametrize(("factory", "allow_hnsw", "reaches"), CASES)
def test_index_recall_against_exact_search(
    tmp_path: Path,
    source: ArraySource,
    data: tuple[np.ndarray, np.ndarray],
    sphere: ClusteredSphere,
    factory: str | None,
    allow_hnsw: bool,
    reaches: bool,
    reference: Reference,
) -> None:
    ids, vectors = data
    policy = _policy(factory, allow_hnsw)
    index_set = IndexSet.open(tmp_path, "v1", LAYOUT, DIMS, source, policy, save=False)
    stats = index_set.stats()["indexes"]["vat/audio"]
    expected_kind = {"rules-hnsw": "hnsw", "HNSW16,SQ8": "hnsw", None: "flat"}.get(factory, "ivf")
    assert stats["kind"] == expected_kind

    # Fresh queries from the same mixture: other items near the stored ones.
    queries = sphere.sample(300, seed=42)
    found = index_set.search("vat", "audio", queries, 10).ids
    measured = recall_at_k(found, reference(ids, vectors, queries, 10)[1])

    reported = stats["recall_at_k"]
    assert stats["recall_met"] == (reported >= policy.recall_target)
    if reaches:
        assert stats["recall_met"], stats["tuning_curve"]
        assert measured >= 0.93, (measured, stats)
    else:
        # PQ under a tight budget: the target is not reached and the report says so.
        assert not stats["recall_met"]
        assert 0.3 < measured < policy.recall_target
    # The stored figure is an honest measurement, not a promise.
    assert abs(measured - reported) < 0.08, (measured, reported)
    if stats["params"]:
        ((name, value),) = stats["params"].items()
        assert name in ("nprobe", "efSearch") and value >= 1
        assert stats["tuning_curve"][-1][0] == value or not stats["recall_met"]


def test_tuner_picks_the_cheapest_value_that_reaches_the_target(
    tmp_path: Path, source: ArraySource, ivf_policy: IndexPolicy
) -> None:
    index_set = IndexSet.open(tmp_path, "v1", LAYOUT, DIMS, source, ivf_policy, save=False)
    stats = index_set.stats()["indexes"]["vat/audio"]
    curve = stats["tuning_curve"]
    below = [recall for _, recall in curve[:-1]]
    assert all(recall < ivf_policy.recall_target for recall in below)
    assert curve[-1][1] >= ivf_policy.recall_target
    assert stats["params"] == {"nprobe": curve[-1][0]}
