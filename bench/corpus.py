"""Corpus generation speed: narrated clips per second (issue #3: 2,000 clips in ≤ 5 min on
2 cores, i.e. ≥ 6.7 clips/s).

Each run generates a whole corpus (N narrated clips + N/5 audio-only items + N/5 stills,
so the extras are inside the time) into a temporary folder. Measured side by side in
the same run:
- naive: one process, one ffmpeg process per clip;
- one process, clips batched 4 per ffmpeg process (ffmpeg's start-up costs ~70 ms);
- the shipped path: a pool of one worker per core, batched.
Besides wall time, CPU seconds per clip (this process and all its children) are shown:
on a shared machine they say what the work costs when wall time is inflated by others.

    .venv/bin/python bench/corpus.py [--quick] [--n 2000] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.corpus import make_corpus
from model.corpus.generate import ENCODE_BATCH, default_workers

GOAL_CLIPS_PER_S = 2000 / 300  # 2,000 clips in 5 minutes


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(n: int, workers: int, batch: int, seed: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for one corpus of n clips."""
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        summary = make_corpus(
            Path(tmp) / "c", n, seed, workers=workers, progress=False, encode_batch=batch
        )
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    assert summary.counts["clip"] == n
    return wall, cpu


def machine() -> str:
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({default_workers()} usable), "
        f"load average {load} at start; {ffmpeg.splitlines()[0]}; {espeak.split(' Data')[0]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpora, one run each")
    parser.add_argument("--n", type=int, default=None, help="clips for the shipped path")
    parser.add_argument("--runs", type=int, default=None, help="runs per variant (median)")
    args = parser.parse_args()
    n = args.n or (48 if args.quick else 400)
    n_single = max(8, n // 4)  # the one-process variants are slower: fewer clips
    runs = args.runs or (1 if args.quick else 2)
    workers = default_workers()

    print(f"machine: {machine()}")
    print("warm-up ...", flush=True)
    run_once(8, workers, ENCODE_BATCH, seed=99)  # page cache, imports, espeak data

    variants = [
        ("naive: 1 process, ffmpeg per clip", 1, 1, n_single),
        (f"1 process, {ENCODE_BATCH} clips per ffmpeg", 1, ENCODE_BATCH, n_single),
        (f"{workers} workers, {ENCODE_BATCH} clips per ffmpeg (shipped)", workers, ENCODE_BATCH, n),
    ]
    results = []
    for name, w, batch, clips in variants:
        walls, cpus = [], []
        for r in range(runs):
            wall, cpu = run_once(clips, w, batch, seed=r)
            walls.append(wall)
            cpus.append(cpu)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        results.append((name, clips, wall, clips / wall, cpu / clips))
        print(f"  {name}: {clips} clips in {wall:.1f} s", flush=True)

    naive_rate = results[0][3]
    print()
    header = (
        f"{'variant':<44} {'clips':>6} {'wall s':>8} {'clips/s':>8} {'CPU s/clip':>11} "
        f"{'× naive':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, clips, wall, rate, cpu_per_clip in results:
        print(
            f"{name:<44} {clips:>6} {wall:>8.1f} {rate:>8.2f} {cpu_per_clip:>11.3f} "
            f"{rate / naive_rate:>8.2f}"
        )
    shipped = results[-1]
    print(
        f"\n(extras inside the time: N/5 audio-only wavs and N/5 stills per run; "
        f"median of {runs} run(s); at the shipped CPU cost, {workers} idle cores would give "
        f"{workers / shipped[4]:.1f} clips/s)"
    )
    verdict = "HOLDS" if shipped[3] >= GOAL_CLIPS_PER_S else "MISSES"
    print(f"target corpus_clips_per_s: {shipped[3]:.2f} (goal {GOAL_CLIPS_PER_S:.1f}) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
