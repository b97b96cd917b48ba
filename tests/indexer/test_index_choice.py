"""The rules that pick an index type from size and memory (pure functions, no FAISS build)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer import IndexBuildError, IndexPolicy, choose_for_set, choose_index
from indexer.choice import GIB, choice_from_factory, estimate_bytes, nlist_for
from indexer.vector_index import structure_bytes


def test_small_sets_are_searched_exactly() -> None:
    choice = choose_index(10_000, 256, IndexPolicy())
    assert choice.factory == "IDMap2,Flat"
    assert choice.param is None and choice.train_size == 0


def test_large_sets_get_an_ivf_sized_by_sqrt_n_and_trained_on_a_sample() -> None:
    million = choose_index(1_000_000, 256, IndexPolicy())
    assert million.factory == "IVF4096,Flat"
    assert million.train_size == 40 * 4096
    assert million.param == "nprobe" and million.candidates[0] == 1
    assert million.candidates[-1] == 4096
    assert choose_index(100_000, 256, IndexPolicy()).factory == "IVF1024,Flat"
    assert 16 <= nlist_for(20_000) <= 20_000 // 39


def test_memory_budget_steps_down_the_codec_ladder() -> None:
    policy = IndexPolicy()
    n, d = 1_000_000, 256
    assert choose_index(n, d, policy, budget_bytes=int(1.5 * GIB)).factory == "IVF4096,Flat"
    assert choose_index(n, d, policy, budget_bytes=int(0.6 * GIB)).factory == "IVF4096,SQfp16"
    sq8 = choose_index(n, d, policy, budget_bytes=int(0.4 * GIB))
    assert sq8.factory == "IVF4096,SQ8"
    assert "would need" in sq8.reason
    pq = choose_index(n, d, policy, budget_bytes=int(0.1 * GIB))
    assert pq.factory == "IVF4096,PQ64"
    assert pq.train_size >= 256 * 39  # PQ's 256 centroids need their training points
    tiny = choose_index(n, d, policy, budget_bytes=1)
    assert tiny.factory == "IVF4096,PQ16" and "OVER" in tiny.reason


def test_a_set_shares_its_budget_and_shrinks_the_largest_index_first() -> None:
    sizes = {("vat", "video"): (1_000_000, 256), ("vat", "text"): (200_000, 256)}
    full = estimate_bytes("ivf", 1_000_000, 256, "Flat", 4096)
    choices = choose_for_set(sizes, IndexPolicy(), budget_bytes=full)
    assert choices[("vat", "video")].factory.endswith("SQfp16")
    assert choices[("vat", "text")].factory.endswith(",Flat")
    total = sum(c.bytes_estimate for c in choices.values())
    assert total <= full


def test_hnsw_only_when_the_policy_allows_it() -> None:
    assert "HNSW" not in choose_index(500_000, 256, IndexPolicy()).factory
    allowed = choose_index(500_000, 256, IndexPolicy(allow_hnsw=True))
    assert allowed.factory == "IDMap2,HNSW32,Flat" and allowed.param == "efSearch"


def test_forced_factory_strings_get_ids_where_faiss_lacks_them() -> None:
    assert choice_from_factory("Flat", 10, 8).factory == "IDMap2,Flat"
    assert choice_from_factory("HNSW16,Flat", 10, 8).kind == "hnsw"
    ivf = choice_from_factory("IVF64,SQ8", 10_000, 8)
    assert ivf.factory == "IVF64,SQ8" and ivf.param == "nprobe"
    assert ivf.candidates[-1] == 64
    # Not a power of two: every list is still a value to try (512 was the last).
    assert choice_from_factory("IVF1000,Flat", 100_000, 8).candidates[-2:] == (512, 1000)


def test_estimates_match_what_faiss_actually_holds() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 32)).astype(np.float32)
    for factory, kind, codec in [("IVF32,Flat", "ivf", "Flat"), ("IVF32,SQ8", "ivf", "SQ8")]:
        index = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.add_with_ids(x, np.arange(5000, dtype=np.int64))
        assert structure_bytes(index) == estimate_bytes(kind, 5000, 32, codec, 32)


def test_factories_whose_search_ignores_id_selectors_are_refused() -> None:
    for factory in ("PQ8", "LSH", "HNSW16,PQ8"):
        with pytest.raises(IndexBuildError, match="not supported"):
            choice_from_factory(factory, 1000, 32)
