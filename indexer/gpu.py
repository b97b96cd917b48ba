"""Serving copies of CPU indexes on GPUs, when faiss-gpu is installed and sees a GPU.

The CPU index stays the master copy: it is what is saved, what ``remove_ids`` edits and
what answers filtered searches, because FAISS GPU indexes ignore ``SearchParameters.sel``
(facebookresearch/faiss#3924) and cannot remove vectors. The GPU copy answers unfiltered
searches; deleted ids are dropped from its answers (it is asked for ``k + tombstones``
results) until the next compaction re-clones it.

FAISS GPU indexes are not thread-safe even for searches (the GpuResources scratch memory
has one user at a time; FAISS wiki "Threads and asynchronous calls"), so every GPU call
in this process goes through one lock. A batch of queries on a GPU is fast enough that
the lock is not the bottleneck; CPU searches keep running in parallel beside it.

Where whole vectors fit, the GPU holds an exact flat of them instead of a copy of the
CPU's inverted file (gpu_choice.py says when and why).

On a CPU-only machine (faiss-cpu, or faiss-gpu with ``get_num_gpus() == 0``) nothing
here is used and the indexes are served from the CPU with the same results.

A GPU that faiss-gpu sees but cannot drive also serves from the CPU: a wheel without
kernels for the card (faiss-gpu-cu12 1.14 has sm_70 and sm_80 only, so an H100, sm_90,
fails) makes the first GPU search fail a FAISS assertion that *aborts the process*. That
cannot be caught, so one small search runs first in a child process (`gpu_usable`).
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from faiss.contrib.inspect_tools import get_invlist

from indexer.gpu_choice import choose_gpu_plan

LOG = logging.getLogger("indexer")
GPU_LOCK = threading.Lock()
# GPU IVF and flat k-selection handle k (and nprobe) up to 2048.
GPU_MAX_K = 2048
_resources: list[Any] = []
_resources_lock = threading.Lock()


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu and on machines without a GPU."""
    get = getattr(faiss, "get_num_gpus", None)
    if get is None or not hasattr(faiss, "GpuMultipleClonerOptions"):
        return 0
    try:
        return int(get())
    except RuntimeError:  # a CUDA build without a driver can raise here
        return 0


# A flat IP search on the GPU beside the same search on the CPU: the kernels FAISS needs
# most (norms, GEMM, k-selection). Exit 0 only when both agree.
_SMOKE_TEST = """
import faiss, numpy as np
x = np.random.default_rng(0).standard_normal((256, 32)).astype("float32")
gpu = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), 32)
gpu.add(x)
cpu = faiss.IndexFlatIP(32)
cpu.add(x)
assert (gpu.search(x[:8], 4)[1] == cpu.search(x[:8], 4)[1]).all(), "GPU and CPU disagree"
"""
SMOKE_TIMEOUT_S = 120.0


@functools.cache
def gpu_usable() -> tuple[bool, str]:
    """(True, "") when faiss-gpu sees a GPU and a small search on it works, checked once
    per process in a child process; else (False, why) and indexes stay on the CPU."""
    if gpu_count() == 0:
        return False, "no GPU (faiss.get_num_gpus() == 0)"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SMOKE_TEST],
            capture_output=True,
            text=True,
            timeout=SMOKE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return False, f"a test search on the GPU took over {SMOKE_TIMEOUT_S:.0f} s"
    if done.returncode == 0:
        return True, ""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    detail = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")
    detail = detail.partition("details: ")[2] or detail  # FAISS puts the CUDA error last
    why = (
        f"faiss-gpu sees {gpu_count()} GPU(s) but cannot run on them (a test search exited "
        f"with {done.returncode}: {detail.strip()[:200]})"
    )
    LOG.warning("%s; indexes are served on the CPU", why)
    return False, why


def _gpu_resources(ngpu: int) -> list[Any]:
    """One StandardGpuResources per GPU for the whole process (each reserves scratch memory)."""
    with _resources_lock:
        while len(_resources) < ngpu:
            _resources.append(faiss.StandardGpuResources())
        return _resources[:ngpu]


def free_gpu_bytes(ngpu: int) -> list[int] | None:
    """Free memory per GPU, through torch when it has CUDA; None when it cannot be known."""
    try:
        import torch  # optional here: only to ask CUDA how much memory is free
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return [int(torch.cuda.mem_get_info(i)[0]) for i in range(ngpu)]
    except RuntimeError:  # e.g. no CUDA context left (the trainer filled the GPU)
        return None


@dataclass
class GpuReplica:
    """A GPU copy of a CPU index; every call holds GPU_LOCK."""

    index: faiss.Index
    device: str  # e.g. "cuda:0", "cuda:0,1 (replicated)", "cuda:0,1 (sharded)"
    exact: bool = False  # an exact search (a flat copy): right at any k, nothing tuned

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with GPU_LOCK:
            return self.index.search(queries, k)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        with GPU_LOCK:
            self.index.add_with_ids(vectors, ids)


def stores_vectors(index: faiss.Index) -> bool:
    """Whether `index` keeps each vector whole (float32), so an exact copy can be made."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):  # IndexIDMap2 too
        return stores_vectors(index.index)
    if isinstance(index, faiss.IndexHNSW):
        return stores_vectors(index.storage)
    return isinstance(index, (faiss.IndexFlat, faiss.IndexIVFFlat))


def stored_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [n], vectors float32 [n, d]) held by an index that `stores_vectors`."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        inner = faiss.downcast_index(index.index)
        return ids, inner.reconstruct_n(0, inner.ntotal)
    if isinstance(index, faiss.IndexIVFFlat):
        parts = [get_invlist(index.invlists, i) for i in range(index.nlist)]
        ids = np.concatenate([list_ids for list_ids, _ in parts])
        codes = np.concatenate([codes for _, codes in parts]) if parts else np.zeros((0, 0))
        return ids, np.ascontiguousarray(codes).view(np.float32).reshape(len(ids), index.d)
    raise TypeError(f"{type(index).__name__} does not keep whole vectors")


def exact_twin(index: faiss.Index) -> faiss.Index:
    """A flat inner-product index (with ids) holding the same vectors as `index`: what
    is cloned to the GPU for exact search there (see gpu_choice.py)."""
    ids, vectors = stored_vectors(index)
    twin = faiss.IndexIDMap2(faiss.IndexFlatIP(index.d))
    twin.add_with_ids(vectors, ids)
    return twin


def make_replica(
    cpu_index: faiss.Index,
    kind: str,
    factory: str,
    param: str | None,
    value: int | None,
    bytes_estimate: int,
    shard_mode: str,
    exact_max_bytes: int,
) -> tuple[GpuReplica | None, str]:
    """Serve `cpu_index` from every GPU (replicas, or shards when one GPU cannot hold it):
    its GPU copy, or an exact flat of its vectors where that fits (gpu_choice.py).

    Returns the replica, or None and the reason the index stays on the CPU.
    """
    ngpu = gpu_count()
    if ngpu == 0:
        return None, "no GPU (faiss.get_num_gpus() == 0)"
    usable, why = gpu_usable()
    if not usable:
        return None, f"{why}; served on the CPU"
    free = free_gpu_bytes(ngpu)
    plan = choose_gpu_plan(
        kind,
        factory,
        stores_vectors(cpu_index),
        cpu_index.ntotal,
        cpu_index.d,
        min(free) if free else None,
        exact_max_bytes,
        value if param == "nprobe" else None,
    )
    if plan.plan == "cpu":
        return None, plan.reason
    source = cpu_index
    if plan.plan == "exact":
        source = exact_twin(cpu_index)
        bytes_estimate = cpu_index.ntotal * (4 * cpu_index.d + 8)
        param = value = None  # nothing to tune in an exact search
    fits_one = free is None or bytes_estimate < 0.8 * min(free)
    shard = shard_mode == "always" or (shard_mode == "auto" and not fits_one)
    if shard and ngpu == 1:
        return None, (
            f"needs ~{bytes_estimate / 2**30:.2f} GiB, more than the one GPU has "
            "free; served on the CPU"
        )
    if shard and free is not None and bytes_estimate >= 0.8 * sum(free):
        return None, (
            f"needs ~{bytes_estimate / 2**30:.2f} GiB, more than all {ngpu} GPUs "
            "have free; served on the CPU"
        )
    options = faiss.GpuMultipleClonerOptions()
    options.shard = shard
    options.useFloat16 = False  # same scores as the CPU copy
    codec = faiss.downcast_index(source)
    if isinstance(codec, faiss.IndexIVFPQ) and codec.pq.M >= 56:
        options.useFloat16 = True  # GPU IVFPQ needs float16 lookup tables for long codes
    try:
        with GPU_LOCK:
            gpu_index = faiss.index_cpu_to_gpu_multiple_py(_gpu_resources(ngpu), source, options)
            if param is not None and value is not None:
                faiss.GpuParameterSpace().set_index_parameter(gpu_index, param, value)
    except RuntimeError as exc:  # FAISS throws for types it cannot move
        return None, f"could not move to GPU ({str(exc).splitlines()[0][:160]}); served on CPU"
    devices = ",".join(str(i) for i in range(ngpu))
    layout = "sharded" if shard else "replicated" if ngpu > 1 else "single"
    device = f"cuda:{devices}" + ("" if layout == "single" else f" ({layout})")
    LOG.info("index served on %s: %s", device, plan.reason)
    exact = plan.plan == "exact" or kind == "flat"
    return GpuReplica(gpu_index, device, exact), f"faiss-gpu sees a GPU; {plan.reason}"
