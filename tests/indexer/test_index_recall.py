"""Recall of every index type the indexer may choose, against exact search, on clustered data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer import ArraySource, IndexPolicy, IndexSet, recall_at_k
from indexer.synthetic import ClusteredSphere
from indexer.tuning import Tuning

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


def test_tuned_recall_is_what_fresh_queries_get(tmp_path: Path) -> None:
    """The tuner's held-out queries must not be the vectors k-means trained on: those sit
    nearer their own centroids and find their neighbours in fewer lists, so a tuner
    measuring on them reports more recall than new items get, and stops one nprobe too
    early (at 100k x 256-d: 0.960 measured, 0.947 for fresh queries). Small sparse
    clusters (10 points each) and IVF64 trained on 2,560 of the 4,000 vectors show it."""
    mixture = ClusteredSphere(dim=64, clusters=400, cosine=0.7, seed=0)
    vectors = mixture.sample(4000, seed=1)
    ids = np.arange(4000, dtype=np.int64)
    source = ArraySource()
    source.put("vat", "audio", ids, vectors)
    queries = mixture.sample(5000, seed=42)
    _, truth = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    gaps = []
    for target in (0.5, 0.6, 0.7, 0.8):
        policy = IndexPolicy(exact_max_floats=0, tuning_queries=1000, recall_target=target)
        index_set = IndexSet.open(
            tmp_path / str(target), "v1", LAYOUT, {"vat": 64}, source, policy, save=False
        )
        stats = index_set.stats()["indexes"]["vat/audio"]
        assert stats["factory"] == "IVF64,Flat" and stats["train_size"] == 2560
        fresh = recall_at_k(index_set.search("vat", "audio", queries, 10).ids, truth)
        gaps.append(stats["recall_at_k"] - fresh)
        index_set.close()
    assert abs(float(np.mean(gaps))) < 0.012, gaps  # 0.031 when it tuned on training vectors


@pytest.mark.parametrize("factory", ["rules-ivf", "rules-hnsw"])
def test_many_results_keep_the_recall_target(
    tmp_path: Path,
    source: ArraySource,
    data: tuple[np.ndarray, np.ndarray],
    sphere: ClusteredSphere,
    reference: Reference,
    factory: str,
) -> None:
    """The parameter was tuned for recall@10 and used for any k: searches for hundreds
    of results (the API allows 1,000) lost a fifth of them. The target is measured at
    the largest k too, and a search probes what its k needs."""
    ids, vectors = data
    policy = _policy(factory, factory == "rules-hnsw")
    index_set = IndexSet.open(tmp_path, "v1", LAYOUT, DIMS, source, policy, save=False)
    stats = index_set.stats()["indexes"]["vat/audio"]
    measured_ks = [k for k, _, _ in stats["wide_tuning"]]
    assert measured_ks == list(policy.wide_ks)
    assert all(recall >= policy.recall_target for _, _, recall in stats["wide_tuning"])
    ((_, value),) = stats["params"].items()
    assert [v for _, v, _ in stats["wide_tuning"]] == sorted(v for _, v, _ in stats["wide_tuning"])
    assert stats["wide_tuning"][0][1] >= value
    queries = sphere.sample(200, seed=42)
    for k in (100, 500):
        found = index_set.search("vat", "audio", queries, k).ids
        measured = recall_at_k(found, reference(ids, vectors, queries, k)[1])
        assert measured >= 0.93, (k, measured, stats["params"], stats["wide_tuning"])
    if factory == "rules-ivf":
        # A fetch past the results wanted (segments grouped into items) probes as for
        # the results wanted: the cheap parameter, and its recall at the deep k.
        truth = reference(ids, vectors, queries, 100)[1]
        grouped = index_set.search("vat", "audio", queries, 100, param_k=10).ids
        assert (
            recall_at_k(grouped, truth)
            < 0.9
            < recall_at_k(index_set.search("vat", "audio", queries, 100).ids, truth)
        )


def test_the_parameter_grows_with_k_as_measured() -> None:
    wide = ((100, 256, 0.95), (1000, 512, 0.95))
    tuned = Tuning("nprobe", 8, 0.96, 0.95, True, 10, 200, wide=wide)
    assert [tuned.value_for(k) for k in (1, 10, 100, 1000)] == [8, 8, 256, 512]
    assert tuned.value_for(30) == 42  # 8 × 3^(log 32 / log 10): between the measures
    assert tuned.value_for(4000) == 778  # 256 × 40^(log 2 / log 10): on as the last stretch
    flat = Tuning("nprobe", 16, 0.96, 0.95, True, 10, 200, wide=((100, 16, 0.97),))
    assert flat.value_for(1000) == 16
    older = Tuning("nprobe", 16, 0.96, 0.95, True, 10, 200)  # built before it was measured
    assert older.value_for(1000) == 16
    assert Tuning.from_dict(tuned.as_dict()) == tuned
    # Odd stored values cannot overflow the extrapolation (a search clips it to nlist).
    odd = Tuning("nprobe", 1, 0.96, 0.95, True, 10, 200, wide=((11, 65536, 0.95),))
    assert odd.value_for(4096) == 1 << 24
