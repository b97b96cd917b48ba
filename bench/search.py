"""Benchmark of indexer/: the index the rules choose, beside exact search, in one run.

Data sets (--data, default all three; queries are fresh draws from the same generator,
never stored):
- clustered: a mixture of 5,000 Gaussian clusters on the unit sphere in 256-d, each
  point at cosine ~0.7 from its cluster centre (indexer.synthetic.ClusteredSphere).
  Real embeddings crowd around topics, but these clusters are tight: easy for IVF.
- spectrum: one Gaussian in 256-d, no cluster structure, whose covariance eigenvalues
  decay like the trained model's segment embeddings' (indexer.synthetic.
  DecayingSpectrum: lambda_i ~ (i + 57.5)^-6.18, fitted by bench/moment_vectors.py to
  the model's S_vat segments: a flat head of ~30 directions, then a power-law tail).
- model: the trained default model's own segment embeddings (S_vat, 128-d, video) of
  generated recordings: the 6,747 real 2 s window embeddings of 2,000 corpus clips
  (3.3 h), played in a new random order for every ~2,400 segments asked, cut into 10 s
  segments at a 5 s hop, each the mean of its windows (bench/moment_vectors.py,
  ResequencedSegments). Derived from real embeddings: 360k segments are 150 orderings
  of the same 2,000 clips, not 1,000 hours of distinct content. model-va: S_va, 256-d.

For 100k and 1M vectors (--quick: 100k only) it builds, through IndexSet.open, the
index the shipped rules choose (memory budget 1.5 GB) and an exact IDMap2,Flat, and
reports: build time (choose + train + add + tune), index memory (FAISS structures) and
the process RSS growth, save and verified-reload times, recall@10 of fresh queries
against the exact answer, single-query latency p50/p99 (1,000 queries, one thread,
after a warm-up), single queries/s from 1 and 2 threads (500 queries; FAISS releases
the GIL), batched queries/s (one call, OpenMP on every core), and the cost of single
adds and deletes while serving and of one batched remove_ids. Then one target line each
per data set, at the largest size.

Where faiss-gpu runs on a GPU here (`indexer.gpu_usable()`), two more rows each size,
beside the CPU rows of the same run: the GPU index the rules choose (an exact flat of
the vectors where they fit, docs/indexer.md "GPU") and the GPU copy of the CPU's IVF.
The CPU rows stay on the CPU (`use_gpu=False`); the targets judge them.

    .venv/bin/python bench/search.py [--quick] [--sizes 100000,1000000] [--no-gpu]
        [--data all|clustered,spectrum,model,model-va]

The model data sets need the window embeddings cached in data/bench/; the first run
makes them (corpus generation and decoding and embedding: ~4 + ~9 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer import ArraySource, IndexPolicy, IndexSet, gpu_count, gpu_usable, recall_at_k
from indexer.synthetic import ClusteredSphere, DecayingSpectrum

DIM = 256
CLUSTERS = 5000
DATA_SETS = ("clustered", "spectrum", "model", "model-va")
ALL = DATA_SETS[:3]
K = 10
LATENCY_QUERIES = 1000
THREADED_QUERIES = 500
LAYOUT = {"vat": ["video"]}
MEMORY_BUDGET = int(1.5e9)
TARGETS = {  # at 1M x 256-d; judged on each data set at the largest size run
    "recall@10": (0.95, ">="),
    "single-query p50 ms": (2.0, "<="),
    "batched queries/s": (2000.0, ">="),
    "build s": (300.0, "<="),
    "memory GB": (1.5, "<="),
}


@dataclass(frozen=True)
class DataSet:
    name: str
    dim: int
    description: str
    sample: Callable[[int, int], np.ndarray]  # (n, seed) -> float32 [n, dim], unit norm


def data_set(name: str) -> DataSet:
    if name == "clustered":
        mixture = ClusteredSphere(DIM, CLUSTERS, cosine=0.7, seed=0)
        return DataSet(
            name,
            DIM,
            f"{CLUSTERS:,} Gaussian clusters on the unit sphere, {DIM}-d, cosine to centre ~0.7",
            mixture.sample,
        )
    if name == "spectrum":
        gaussian = DecayingSpectrum(DIM, seed=0)
        return DataSet(
            name,
            DIM,
            f"one Gaussian, {DIM}-d, no clusters, eigenvalues ~ (i + {gaussian.knee:g})^"
            f"-{gaussian.alpha:g} (the model's segment embeddings' fit), random basis",
            gaussian.sample,
        )
    if name in ("model", "model-va"):
        import moment_vectors  # bench/moment_vectors.py: imports the model, only here

        space = "va" if name == "model-va" else "vat"
        windows = moment_vectors.load_windows_cached()
        segments = moment_vectors.ResequencedSegments(windows, f"video/{space}")
        dim = windows.embeddings[f"video/{space}"].shape[1]
        return DataSet(
            name,
            dim,
            f"models/default S_{space} ({dim}-d) video segments, 10 s at a 5 s hop, of "
            f"recordings made of {len(windows.durations):,} generated clips "
            f"({windows.recording_s / 3600:.1f} h, {len(windows.clip):,} real window "
            "embeddings) in random orders",
            segments.sample,
        )
    raise SystemExit(f"unknown data set {name!r}: choose from {', '.join(DATA_SETS)} or all")


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def latencies_ms(index_set: IndexSet, queries: np.ndarray) -> np.ndarray:
    faiss.omp_set_num_threads(1)
    for q in queries[:50]:  # warm-up
        index_set.search("vat", "video", q[None, :], K)
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        start = time.perf_counter()
        index_set.search("vat", "video", q[None, :], K)
        out[i] = (time.perf_counter() - start) * 1000
    return out


def threaded_qps(index_set: IndexSet, queries: np.ndarray, threads: int) -> float:
    """Single-query searches from several Python threads at once (FAISS drops the GIL)."""
    faiss.omp_set_num_threads(1)
    parts = np.array_split(queries, threads)

    def run(part: np.ndarray) -> None:
        for q in part:
            index_set.search("vat", "video", q[None, :], K)

    workers = [threading.Thread(target=run, args=(part,)) for part in parts]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(queries) / (time.perf_counter() - start)


def batched(index_set: IndexSet, queries: np.ndarray) -> tuple[float, np.ndarray]:
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index_set.search("vat", "video", queries[:100], K)  # warm-up
    start = time.perf_counter()
    result = index_set.search("vat", "video", queries, K)
    return len(queries) / (time.perf_counter() - start), result.ids


def measure(
    name: str,
    data: DataSet,
    vectors: np.ndarray,
    queries: np.ndarray,
    policy: IndexPolicy,
    workdir: Path,
    batch_queries: int,
    truth: np.ndarray | None,
) -> dict[str, object]:
    n = len(vectors)
    source = ArraySource()
    source.put("vat", "video", np.arange(n, dtype=np.int64), vectors)
    gc.collect()
    rss0 = rss_bytes()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    start, cpu = time.perf_counter(), time.process_time()
    built = IndexSet.open(
        workdir / name,
        "bench",
        LAYOUT,
        {"vat": data.dim},
        source,
        policy,
        budget_bytes=MEMORY_BUDGET,
        save=False,
    )
    build_s = time.perf_counter() - start
    build_cpu_s = time.process_time() - cpu
    rss_growth = rss_bytes() - rss0
    start = time.perf_counter()
    built.save()
    save_s = time.perf_counter() - start
    stats = built.stats()["indexes"]["vat/video"]
    built.close()
    del built
    gc.collect()
    start = time.perf_counter()
    index_set = IndexSet.open(
        workdir / name,
        "bench",
        LAYOUT,
        {"vat": data.dim},
        source,
        policy,
        budget_bytes=MEMORY_BUDGET,
        save=False,
    )
    load_s = time.perf_counter() - start
    assert index_set.events[0].action == "loaded", index_set.events
    del source
    gc.collect()

    lat = latencies_ms(index_set, queries[:LATENCY_QUERIES])
    one = threaded_qps(index_set, queries[:THREADED_QUERIES], 1)
    two = threaded_qps(index_set, queries[:THREADED_QUERIES], 2)
    qps, found = batched(index_set, queries[:batch_queries])
    recall = recall_at_k(found[: len(truth)], truth) if truth is not None else 1.0

    # Writes while serving: single adds, single deletes (tombstones), one compaction.
    faiss.omp_set_num_threads(1)  # as the service runs (OMP_NUM_THREADS=1)
    extra = data.sample(200, 7)
    add_us = []
    for i, vector in enumerate(extra):
        start = time.perf_counter()
        index_set.add("vat", "video", [n + i], vector[None, :])
        add_us.append((time.perf_counter() - start) * 1e6)
    victims = np.arange(0, n, max(1, n // 1000), dtype=np.int64)[:1000]
    start = time.perf_counter()
    for victim in victims:
        index_set.remove([victim])
    remove_us = (time.perf_counter() - start) * 1e6 / len(victims)
    start = time.perf_counter()
    index_set.compact()  # one batched remove_ids of the 1,000 tombstones
    compact_ms = (time.perf_counter() - start) * 1000
    index_set.close()
    shutil.rmtree(workdir / name, ignore_errors=True)
    return {
        "data": data.name,
        "n": n,
        "dim": data.dim,
        "index": stats["factory"],
        "device": stats["device"],
        "params": stats["params"],
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "save_s": save_s,
        "load_s": load_s,
        "memory_gb": stats["memory_bytes"] / 1e9,
        "rss_gb": rss_growth / 1e9,
        "tuned_recall": stats["recall_at_k"],
        "recall": recall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "qps1": one,
        "qps2": two,
        "batched": qps,
        "found": found,
        "add_us": float(np.median(add_us)),
        "remove_us": remove_us,
        "compact_ms": compact_ms,
    }


def times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


def row(r: dict[str, object]) -> str:
    params = ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-"  # type: ignore[union-attr]
    return (
        f"| {r['data']:<9} | {r['n']:>9,} | {r['index']:<14} | {r['device']:<6} | {params:<10} | "
        f"{r['build_s']:7.1f} | "
        f"{r['build_cpu_s']:7.1f} | "
        f"{r['memory_gb']:5.2f} | {r['rss_gb']:5.2f} | {r['recall']:.3f} "
        f"({r['tuned_recall']:.3f}) | {r['p50']:7.2f} | {r['p99']:7.2f} | "
        f"{r['qps1']:7.0f} | {r['qps2']:7.0f} | {r['batched']:7.0f} | "
        f"{r['save_s']:5.1f} | {r['load_s']:5.1f} | {r['add_us']:6.0f} | "
        f"{r['remove_us']:6.0f} | {r['compact_ms']:6.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k vectors only")
    parser.add_argument("--sizes", default=None, help="comma-separated sizes")
    parser.add_argument(
        "--data",
        default="all",
        help=f"comma-separated data sets: {', '.join(DATA_SETS)}; all = {', '.join(ALL)}",
    )
    parser.add_argument("--no-gpu", action="store_true", help="CPU rows only")
    args = parser.parse_args()
    on_gpu, gpu_why = (False, "--no-gpu") if args.no_gpu else gpu_usable()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([100_000] if args.quick else [100_000, 1_000_000])
    )
    names: list[str] = []
    for name in args.data.split(","):
        for one in ALL if name.strip() == "all" else (name.strip(),):
            if one not in names:
                names.append(one)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.1f}, faiss {faiss.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"GPUs seen by faiss: {gpu_count()}"
        + ("" if on_gpu else f" (GPU rows left out: {gpu_why})")
    )
    sets = [data_set(name) for name in names]
    for data in sets:
        print(f"data {data.name}: {data.description}; queries: fresh draws from the same")
    # Shipped rules; compaction deferred only so the bench can time it on its own.
    policy = IndexPolicy(
        memory_budget_bytes=MEMORY_BUDGET, compact_max=1 << 30, compact_fraction=1.0, use_gpu=False
    )
    exact_policy = replace(policy, factory="Flat")
    gpu_policies = {
        "gpu-chosen": replace(policy, use_gpu=True),
        "gpu-ivf": replace(policy, use_gpu=True, gpu_exact_max_bytes=0),
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    header = (
        "| data      | vectors   | index          | device | params     | build s | CPU s   | "
        "mem GB | RSS+GB | recall@10 (tuned) | p50 ms  | p99 ms  | 1-thr/s | 2-thr/s | "
        "batch/s | save s | load s | add µs | del µs | cmpct ms |"
    )
    results = []
    gpu_results: list[list[dict[str, object]]] = []
    try:
        for data in sets:
            queries = data.sample(20_000, 999)
            for n in sizes:
                vectors = data.sample(n, 1)
                exact = measure(
                    "exact", data, vectors, queries, exact_policy, workdir, 2000, truth=None
                )
                truth = exact["found"]
                chosen = measure(
                    "chosen", data, vectors, queries, policy, workdir, 20_000, truth=truth
                )  # type: ignore[arg-type]
                on_gpus = [
                    measure(name, data, vectors, queries, gpu_policy, workdir, 20_000, truth)  # type: ignore[arg-type]
                    for name, gpu_policy in (gpu_policies.items() if on_gpu else ())
                ]
                del vectors
                gc.collect()
                results.append((exact, chosen))
                gpu_results.append(on_gpus)
                print(
                    f"{data.name}: {n:,} vectors done, {chosen['index']} "
                    f"{chosen['params']}, recall@10 {chosen['recall']:.3f} "
                    f"(load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n" + header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for (exact, chosen), on_gpus in zip(results, gpu_results, strict=True):
        print(row(exact))
        print(row(chosen))
        for r in on_gpus:
            print(row(r))
    print(
        "\nrecall@10: fresh queries against exact search (in brackets: what the tuner "
        "measured at build on held-out queries). mem: FAISS structures; RSS+: process "
        "growth during the build. CPU s: CPU time of the build (all threads); on an idle "
        "machine its wall time is about CPU s / cores. add / del: one id per call while "
        "serving (median add, "
        "mean of 1,000 deletes, which are tombstones); cmpct: one batched remove_ids of "
        "the 1,000."
    )
    for exact, chosen in results:
        print(
            f"{exact['data']} n={exact['n']:,}: chosen vs exact: single-query p50 "
            f"{times(exact['p50'] / chosen['p50'])} faster, batched "
            f"{times(chosen['batched'] / exact['batched'])} the queries/s, "
            f"2 threads vs 1: {chosen['qps2'] / chosen['qps1']:.2f}x"
        )

    for (_, chosen), on_gpus in zip(results, gpu_results, strict=True):
        for r in on_gpus:
            print(
                f"{r['data']} n={r['n']:,}: {r['index']} on {r['device']} vs {chosen['index']} "
                f"on the CPU: recall@10 {r['recall']:.3f} vs {chosen['recall']:.3f}, "
                f"single-query p50 {r['p50']:.2f} vs {chosen['p50']:.2f} ms, batched "
                f"{float(r['batched']) / float(chosen['batched']):.1f}x the queries/s"  # type: ignore[arg-type]
            )

    cores = os.cpu_count() or 1
    for _, chosen in results:
        print(
            f"{chosen['data']} n={chosen['n']:,}: build took {chosen['build_s']:.0f} s of wall "
            f"time and {chosen['build_cpu_s']:.0f} s of CPU: ~"
            f"{chosen['build_cpu_s'] / cores:.0f} s on {cores} idle cores"
        )
    print(f"(load average now {os.getloadavg()[0]:.1f})")

    print()
    largest = max(sizes)
    for _, chosen in results:
        if chosen["n"] != largest:
            continue
        at = f"{largest // 1000}k" if largest < 1_000_000 else f"{largest / 1e6:g}M"
        figures = {
            "recall@10": chosen["recall"],
            "single-query p50 ms": chosen["p50"],
            "batched queries/s": chosen["batched"],
            "build s": chosen["build_s"],
            "memory GB": chosen["memory_gb"],
        }
        for name, (goal, op) in TARGETS.items():
            figure = float(figures[name])  # type: ignore[arg-type]
            holds = figure >= goal if op == ">=" else figure <= goal
            print(
                f"target {name} at {at} on {chosen['data']} ({chosen['dim']}-d): {figure:.3f} "
                f"(goal {op} {goal:g}) {'HOLDS' if holds else 'MISSES'}"
            )


if __name__ == "__main__":
    main()
