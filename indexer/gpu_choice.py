"""Which index serves a set on the GPU, chosen by size as choice.py chooses CPU indexes.

The CPU index is chosen for a CPU: exact only up to ``exact_max_floats`` (16k × 256-d),
then an inverted file tuned to recall@10 ≥ 0.95. A GPU reads memory an order of
magnitude faster, so it can search every vector exactly far past that point (faiss's
GPU flat search is one GEMM and a k-selection). The rules:

1. A flat CPU index: its GPU copy (exact, as on the CPU).
2. An index that stores whole float32 vectors (``IVF…,Flat``, ``HNSW…,Flat``) whose
   vectors fit in ``IndexPolicy.gpu_exact_max_bytes`` (4 GiB) and in half the GPU's
   free memory: an exact
   flat index on the GPU holding the same ids and vectors. Recall 1.0 instead of the
   tuned ~0.95, and HNSW, which faiss-gpu cannot hold, gets a GPU index too.
3. Above that, an inverted file: the GPU copy of the CPU's IVF (faiss's GpuIndexIVF*,
   searched at the nprobe the CPU tuner chose).
4. HNSW above that: the CPU (faiss-gpu has no HNSW; CAGRA needs the cuVS build, which
   cannot share an environment with torch 2.13, docs/indexer.md "GPU").

Pure data in, a plan out: tested on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The default of IndexPolicy.gpu_exact_max_bytes: 4 GiB of float32 vectors, 4M × 256-d.
# An exact scan of that is ~1.5 ms of an H100's memory bandwidth a query batch; past it
# an inverted file answers faster.
GPU_EXACT_MAX_BYTES = 4 << 30
# The exact copy may take at most this share of a GPU's free memory (search scratch,
# the other indexes of the version, a second version during a switch need the rest).
GPU_EXACT_MAX_FREE_SHARE = 0.5
# GPU IVF probes at most this many lists (its k-selection's limit).
GPU_MAX_NPROBE = 2048

Plan = Literal["copy", "exact", "cpu"]


@dataclass(frozen=True)
class GpuPlan:
    plan: Plan  # copy: clone the CPU index; exact: a GPU flat of its vectors; cpu: none
    reason: str


def choose_gpu_plan(
    kind: str,
    factory: str,
    stores_vectors: bool,
    n: int,
    d: int,
    free_bytes: int | None,
    exact_max_bytes: int = GPU_EXACT_MAX_BYTES,
    nprobe: int | None = None,
) -> GpuPlan:
    """How to serve one index (of `kind`, built by `factory`, n vectors of d dims) on a
    GPU with `free_bytes` free (None: unknown, as when torch has no CUDA); `nprobe`: the
    value an IVF was tuned to."""
    if kind == "flat":
        return GpuPlan("copy", "exact on the CPU already; its GPU copy is the same search")
    vector_bytes = n * d * 4
    size = f"{n:,} × {d} float32 ({vector_bytes / 2**30:.2f} GiB)"
    fits_free = free_bytes is None or vector_bytes <= GPU_EXACT_MAX_FREE_SHARE * free_bytes
    if stores_vectors and vector_bytes <= exact_max_bytes and fits_free:
        return GpuPlan(
            "exact",
            f"exact search on the GPU: {size} fits, recall 1.0 (the CPU serves {factory})",
        )
    if not stores_vectors:
        why = f"{factory} keeps compressed codes, not the vectors"
    elif not fits_free:
        why = f"{size} is over half the GPU's free memory"
    else:
        why = f"{size} is over the {exact_max_bytes / 2**30:.2f} GiB exact limit"
    if kind == "hnsw":
        return GpuPlan("cpu", f"{why}, and faiss-gpu has no HNSW; served on the CPU")
    if nprobe is not None and nprobe > GPU_MAX_NPROBE:
        # Its every search would fail there and fall back to the CPU, with a warning.
        return GpuPlan(
            "cpu", f"{why}, and its tuned nprobe {nprobe} is past the {GPU_MAX_NPROBE} lists "
            "GPU IVF can probe; served on the CPU",
        )  # fmt: skip
    return GpuPlan("copy", f"{why}: the inverted file itself on the GPU")
