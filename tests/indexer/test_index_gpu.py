"""Device choice: GPU when faiss-gpu sees one, otherwise the CPU with the same results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import indexer.gpu
from indexer import ArraySource, IndexPolicy, IndexSet, gpu_count, gpu_usable
from indexer.synthetic import ClusteredSphere

LAYOUT = {"vat": ["audio"]}
DIMS = {"vat": 32}


def test_without_a_gpu_indexes_are_served_on_the_cpu_and_say_why(
    tmp_path: Path, source: ArraySource, ivf_policy: IndexPolicy
) -> None:
    if gpu_count() > 0:
        pytest.skip("this machine has a GPU")
    index_set = IndexSet.open(tmp_path, "v1", LAYOUT, DIMS, source, ivf_policy, save=False)
    stats = index_set.stats()["indexes"]["vat/audio"]
    assert stats["device"] == "cpu"
    assert "get_num_gpus() == 0" in stats["device_reason"]


def test_a_gpu_faiss_cannot_drive_is_left_for_the_cpu_with_the_reason(
    tmp_path: Path, source: ArraySource, monkeypatch: pytest.MonkeyPatch
) -> None:
    # faiss-gpu wheels without kernels for the card abort the process at the first
    # search; the child-process test search must catch that. Here faiss is told it has
    # a GPU it cannot use (faiss-cpu has no GPU classes, so the child fails for real).
    if gpu_count() > 0:
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(indexer.gpu, "gpu_count", lambda: 1)
    indexer.gpu.gpu_usable.cache_clear()
    try:
        usable, why = indexer.gpu.gpu_usable()
        assert not usable
        assert "cannot run on them" in why and "has no attribute" in why
        index_set = IndexSet.open(
            tmp_path, "v1", LAYOUT, DIMS, source, IndexPolicy(exact_max_floats=0), save=False
        )
        stats = index_set.stats()["indexes"]["vat/audio"]
        assert stats["device"] == "cpu"
        assert "cannot run on them" in stats["device_reason"]
    finally:
        indexer.gpu.gpu_usable.cache_clear()


@pytest.mark.skipif(not gpu_usable()[0], reason="needs faiss-gpu and a GPU it can run on")
def test_gpu_and_cpu_give_the_same_results(
    tmp_path: Path,
    source: ArraySource,
    data: tuple[np.ndarray, np.ndarray],
    sphere: ClusteredSphere,
) -> None:
    # The CPU serves an inverted file; the GPU, where the vectors fit, an exact flat of
    # them (gpu_choice.py): its answers are the exact ones.
    ids, vectors = data
    on_cpu = IndexSet.open(
        tmp_path / "cpu",
        "v1",
        LAYOUT,
        DIMS,
        source,
        IndexPolicy(exact_max_floats=1 << 40, use_gpu=False),
        save=False,
    )
    on_gpu = IndexSet.open(
        tmp_path / "gpu",
        "v1",
        LAYOUT,
        DIMS,
        source,
        IndexPolicy(exact_max_floats=0, use_gpu=True),
        save=False,
    )
    stats = on_gpu.stats()["indexes"]["vat/audio"]
    assert stats["device"].startswith("cuda") and stats["kind"] == "ivf"
    assert "exact search on the GPU" in stats["device_reason"]
    queries = sphere.sample(100, seed=51)
    cpu = on_cpu.search("vat", "audio", queries, 10)
    gpu = on_gpu.search("vat", "audio", queries, 10)
    assert (cpu.ids == gpu.ids).mean() > 0.99
    assert np.allclose(cpu.scores, gpu.scores, atol=1e-4)
    for index_set in (on_cpu, on_gpu):
        index_set.remove(ids[:20])
    after = on_gpu.search("vat", "audio", vectors[:20], 10)
    assert not np.isin(after.ids, ids[:20]).any()
    filtered = on_gpu.search("vat", "audio", queries, 10, filter=ids[100:200])
    assert np.isin(filtered.ids, ids[100:200]).all()


@pytest.mark.skipif(not gpu_usable()[0], reason="needs faiss-gpu and a GPU it can run on")
def test_compressed_codes_put_the_inverted_file_itself_on_the_gpu(
    tmp_path: Path, source: ArraySource, sphere: ClusteredSphere
) -> None:
    policy = IndexPolicy(factory="IVF64,SQ8", use_gpu=True)
    on_gpu = IndexSet.open(tmp_path, "v1", LAYOUT, DIMS, source, policy, save=False)
    stats = on_gpu.stats()["indexes"]["vat/audio"]
    assert stats["device"].startswith("cuda")
    assert "the inverted file itself on the GPU" in stats["device_reason"]
    on_cpu = IndexSet.open(
        tmp_path / "cpu", "v1", LAYOUT, DIMS, source, replace(policy, use_gpu=False), save=False
    )
    queries = sphere.sample(100, seed=52)
    gpu = on_gpu.search("vat", "audio", queries, 10)
    cpu = on_cpu.search("vat", "audio", queries, 10)
    assert (cpu.ids == gpu.ids).mean() > 0.95  # same codes, same nprobe


class FailingGpuCopy:
    """Stands in for a GPU copy whose device has run out of memory: every call raises,
    as faiss-gpu does (RuntimeError) when it cannot allocate."""

    def add_with_ids(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        raise RuntimeError("Error: cudaMalloc failed: out of memory")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("Error: cudaMalloc failed: out of memory")


def test_a_failing_gpu_copy_falls_back_to_the_cpu_and_loses_no_bookkeeping(
    tmp_path: Path,
    source: ArraySource,
    ivf_policy: IndexPolicy,
    data: tuple[np.ndarray, np.ndarray],
    sphere: ClusteredSphere,
) -> None:
    ids, vectors = data
    index_set = IndexSet.open(tmp_path, "v1", LAYOUT, DIMS, source, ivf_policy, save=False)
    index = index_set._get("vat", "audio")
    queries = vectors[:5]
    expected = index_set.search("vat", "audio", queries, 3)
    index._gpu = indexer.gpu.GpuReplica(FailingGpuCopy(), "cuda:0")  # type: ignore[arg-type]
    index.device = "cuda:0"
    # A failing GPU search is answered from the CPU copy, with the same results.
    scores, labels = index_set.search("vat", "audio", queries, 3)
    np.testing.assert_array_equal(labels, expected[1])
    np.testing.assert_allclose(scores, expected[0], rtol=1e-6)
    # A failing GPU add: the CPU index holds the vector, it is live, and it can be deleted.
    new_id, new_vector = np.array([7]), sphere.sample(1, seed=99)
    assert index_set.add("vat", "audio", new_id, new_vector) == 1
    stats = index_set.stats()["indexes"]["vat/audio"]
    assert stats["device"] == "cpu" and "out of memory" in stats["device_reason"]
    assert index_set.search("vat", "audio", new_vector, 1)[1][0, 0] == 7
    assert index_set.remove(new_id) == 1
    assert 7 not in index_set.search("vat", "audio", new_vector, 10)[1]
    assert index.ntotal == len(ids)
