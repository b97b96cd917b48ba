"""Filtered search: allowed ids or a FAISS IDSelector, combined with deletes, k when k exist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer import ArraySource, IndexPolicy, IndexSet, recall_at_k
from indexer.synthetic import ClusteredSphere

Reference = Callable[..., tuple[np.ndarray, np.ndarray]]
LAYOUT = {"vat": ["audio"]}
DIMS = {"vat": 32}
POLICIES = {
    "flat": IndexPolicy(tuning_queries=200),
    "ivf": IndexPolicy(exact_max_floats=0, tuning_queries=200),
    "hnsw": IndexPolicy(exact_max_floats=0, allow_hnsw=True, hnsw_m=16, tuning_queries=200),
}


@pytest.fixture(params=sorted(POLICIES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def index_set(tmp_path: Path, source: ArraySource, kind: str) -> IndexSet:
    opened = IndexSet.open(tmp_path, "v1", LAYOUT, DIMS, source, POLICIES[kind], save=False)
    assert opened.stats()["indexes"]["vat/audio"]["kind"] == kind
    return opened


def test_allowed_ids_return_k_results_all_allowed(
    index_set: IndexSet,
    kind: str,
    data: tuple[np.ndarray, np.ndarray],
    sphere: ClusteredSphere,
    reference: Reference,
) -> None:
    ids, vectors = data
    rng = np.random.default_rng(3)
    allowed = rng.choice(ids, size=80, replace=False)  # 2% of the set
    queries = sphere.sample(50, seed=5)
    result = index_set.search("vat", "audio", queries, 10, filter=allowed)
    assert (result.ids >= 0).all(), "k allowed items exist, so k results must come back"
    assert np.isin(result.ids, allowed).all()
    assert (np.diff(result.scores, axis=1) <= 1e-6).all(), "best first"
    keep = np.isin(ids, allowed)
    truth = reference(ids[keep], vectors[keep], queries, 10)[1]
    recall = recall_at_k(result.ids, truth)
    assert recall >= (1.0 if kind == "flat" else 0.9), recall


def test_fewer_allowed_than_k_returns_them_all_then_padding(
    index_set: IndexSet, data: tuple[np.ndarray, np.ndarray], sphere: ClusteredSphere
) -> None:
    ids, _ = data
    allowed = ids[[5, 500, 3999]]
    result = index_set.search("vat", "audio", sphere.sample(4, seed=6), 10, filter=allowed)
    assert (np.sort(result.ids[:, :3], axis=1) == np.sort(allowed)).all()
    assert (result.ids[:, 3:] == -1).all()
    assert np.isneginf(result.scores[:, 3:]).all()
    empty = index_set.search("vat", "audio", sphere.sample(2, seed=7), 5, filter=[])
    assert (empty.ids == -1).all()


def test_deleted_ids_never_come_back_even_when_allowed(
    index_set: IndexSet, data: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, vectors = data
    victims = ids[:30]
    assert index_set.remove(victims) == 30
    # Each victim's own vector would find it first if it were still there.
    result = index_set.search("vat", "audio", vectors[:30], 10, filter=ids[:60])
    assert not np.isin(result.ids, victims).any()
    assert (result.ids >= 0).all()  # 30 allowed ids are still live
    unfiltered = index_set.search("vat", "audio", vectors[:30], 10)
    assert not np.isin(unfiltered.ids, victims).any()


def test_a_faiss_selector_is_a_filter_too(
    index_set: IndexSet, data: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, vectors = data
    low, high = int(ids[100]), int(ids[300])  # ids are increasing: 200 of them in range
    index_set.remove(ids[100:110])
    result = index_set.search(
        "vat", "audio", vectors[150:160], 10, filter=faiss.IDSelectorRange(low, high)
    )
    assert ((result.ids >= low) & (result.ids < high)).all()
    assert not np.isin(result.ids, ids[100:110]).any()
    assert (result.ids[:, 0] == ids[150:160]).all()  # each finds itself first


def test_a_faiss_selector_on_an_empty_forced_hnsw_finds_nothing(tmp_path: Path) -> None:
    """An IDSelector claimed every id might match, so an empty HNSW (a forced factory on a
    modality with nothing yet) went on to its exhaustive retry and raised."""
    empty = ArraySource()
    empty.put("vat", "audio", np.zeros(0, np.int64), np.zeros((0, 32), np.float32))
    policy = IndexPolicy(factory="HNSW16")
    index_set = IndexSet.open(tmp_path, "v1", LAYOUT, DIMS, empty, policy, save=False)
    assert index_set.stats()["indexes"]["vat/audio"]["kind"] == "hnsw"
    keep = faiss.IDSelectorBatch(np.array([1], np.int64))
    not_one = faiss.IDSelectorNot(keep)
    query = np.eye(32, dtype=np.float32)[:2]
    result = index_set.search("vat", "audio", query, 5, filter=not_one)
    assert (result.ids == -1).all() and np.isneginf(result.scores).all()
