"""Which index serves a set on the GPU (gpu_choice.py), and the exact copy it clones
there (gpu.exact_twin): pure choices and CPU indexes, so they run on any machine."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer.gpu import exact_twin, stored_vectors, stores_vectors
from indexer.gpu_choice import GPU_EXACT_MAX_BYTES, choose_gpu_plan

GIB = 1 << 30


def test_a_flat_cpu_index_is_copied() -> None:
    assert choose_gpu_plan("flat", "IDMap2,Flat", True, 10_000, 256, 80 * GIB).plan == "copy"


def test_whole_vectors_that_fit_are_searched_exactly_on_the_gpu() -> None:
    plan = choose_gpu_plan("ivf", "IVF4096,Flat", True, 1_000_000, 256, 80 * GIB)
    assert plan.plan == "exact"
    assert "1,000,000 × 256" in plan.reason and "IVF4096,Flat" in plan.reason
    # Free memory unknown (no CUDA in torch): the size limit alone decides.
    assert choose_gpu_plan("ivf", "IVF4096,Flat", True, 1_000_000, 256, None).plan == "exact"
    # HNSW, which faiss-gpu cannot hold, gets a GPU index this way too.
    assert choose_gpu_plan("hnsw", "IDMap2,HNSW32,Flat", True, 200_000, 256, None).plan == "exact"


def test_past_the_exact_limit_the_inverted_file_goes_to_the_gpu() -> None:
    n = GPU_EXACT_MAX_BYTES // (256 * 4) + 1
    plan = choose_gpu_plan("ivf", "IVF16384,Flat", True, n, 256, 140 * GIB)
    assert plan.plan == "copy" and "exact limit" in plan.reason
    small_gpu = choose_gpu_plan("ivf", "IVF4096,Flat", True, 1_000_000, 256, GIB)
    assert small_gpu.plan == "copy" and "free memory" in small_gpu.reason
    codes = choose_gpu_plan("ivf", "IVF4096,PQ64", False, 1_000_000, 256, 80 * GIB)
    assert codes.plan == "copy" and "compressed codes" in codes.reason


def test_hnsw_past_the_exact_limit_stays_on_the_cpu() -> None:
    n = GPU_EXACT_MAX_BYTES // (256 * 4) + 1
    plan = choose_gpu_plan("hnsw", "IDMap2,HNSW32,Flat", True, n, 256, None)
    assert plan.plan == "cpu" and "no HNSW" in plan.reason


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IVF16,Flat", "IDMap2,HNSW16,Flat"])
def test_the_exact_twin_holds_the_same_ids_and_vectors(factory: str) -> None:
    d, n = 32, 2_000
    vectors = unit(n, d, 0)
    ids = np.arange(n, dtype=np.int64) * 7 + 1_000  # ids are not positions
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add_with_ids(vectors, ids)
    if "IVF" in factory:
        index.remove_ids(faiss.IDSelectorArray(ids[:100]))  # deletes are really gone
        ids, vectors = ids[100:], vectors[100:]
    assert stores_vectors(index)
    got_ids, got_vectors = stored_vectors(index)
    order = np.argsort(got_ids)
    assert np.array_equal(got_ids[order], ids)
    assert np.array_equal(got_vectors[order], vectors)

    twin = exact_twin(index)
    queries = unit(50, d, 1)
    truth = faiss.IndexFlatIP(d)
    truth.add(vectors)
    want_scores, want_rows = truth.search(queries, 10)
    scores, labels = twin.search(queries, 10)
    assert np.array_equal(labels, ids[want_rows])
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)


def test_compressed_indexes_keep_no_vectors_to_copy() -> None:
    d = 32
    index = faiss.index_factory(d, "IVF16,PQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(unit(2_000, d, 0))
    assert not stores_vectors(index)
    with pytest.raises(TypeError, match="does not keep whole vectors"):
        stored_vectors(index)


def test_an_ivf_tuned_past_what_the_gpu_can_probe_stays_on_the_cpu() -> None:
    """At 1M vectors IVF4096 may be tuned past 2048 lists: its GPU copy failed every
    unfiltered search, each logged and answered by the CPU."""
    codes = ("ivf", "IVF4096,PQ64", False, 1_000_000, 256, 80 * GIB)
    assert choose_gpu_plan(*codes, nprobe=2048).plan == "copy"
    plan = choose_gpu_plan(*codes, nprobe=4096)
    assert plan.plan == "cpu" and "nprobe 4096" in plan.reason
    # An exact copy probes nothing: the tuned value does not matter to it.
    assert choose_gpu_plan("ivf", "IVF4096,Flat", True, 1_000_000, 256, None, nprobe=4096).plan \
        == "exact"  # fmt: skip
