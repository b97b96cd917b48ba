"""Re-indexing a collection to a new model version (issue #17): items/s from the cache.

When a new model version is activated, the API process embeds every stored item again
(service/version_switch.py): media items' windows are read from the decode cache
(DATA_DIR/cache, written at upload) and embedded by the media worker processes, texts
by the new text tower in the API process; the vectors go to SQLite, the new version's
indexes are built beside the serving ones, and the service swaps. This measures that,
through the service's own objects: a `service.runtime.Runtime` over a real data
directory (SQLite, indexes, a MediaPool of MMV_WORKERS=2 processes) whose
`VersionSwitch` switches to a new version, end to end (`check()` ... `wait()`).

The collection: a few hundred generated corpus clips, sounds and stills
(`model.corpus.make_corpus`: 4.5–7.5 s narrated clips with sound, 4.5–5 s sounds,
stills) are decoded into cache entries as ingestion does (`load_windows` with
MMV_EMBED_WINDOWS=0: enough windows to cover the file), then N item rows are made
whose content hashes are all distinct: each media item's media file is a hard link of
a source file and its cache entry a hard link of that source's entry (the same bytes
under its own key, so a 10k collection costs no 7 GB of disk; the entries' pages are
shared, so reads come from the page cache). The mix: 70% clips with sound, 12% sounds,
10% images, 8% texts, in a shuffled upload order.

Baseline in the same run, through the same switch and pool: a second data directory
whose items (same mix, fewer) have media files but no cache entries, so every media
item is decoded again with ffmpeg (ffprobe + windows), as before the cache. Runs
alternate baseline / cache, each to a version not seen before (the workers load it
before the clock starts); medians. Stages of the cache run: the embedding pass, the
index build (`start_rebuild(swap=False)` + wait), the swap (last catch-up, the
database's switch, `registry.swap`), and the whole switch. Then a check: sampled
re-indexed vectors against the same files embedded as an upload is (fresh decode,
`MMV.embed_*` per window, averaged).

    .venv/bin/python bench/reindex.py [--quick] [--items 10000] [--decode-items 300]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the service runs (before torch loads)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from model.config import ModelConfig, load_config
from model.corpus import make_corpus, read_manifest
from model.media import MediaInfo, load_windows, read_media_info
from model.media.decode_cache import DecodeCache
from model.spaces import spaces_of

REPO = Path(__file__).resolve().parent.parent
GOAL = 200.0  # items/s re-embedded from the cache, 2 cores
MIX = {"clip": 0.70, "audio": 0.12, "image": 0.10, "text": 0.08}
MIX_WORDS = {"clip": "clips with sound", "audio": "sounds", "image": "images", "text": "texts"}


@dataclass
class Source:
    kind: str  # clip | audio | image
    path: Path
    digest: str
    info: MediaInfo
    entry: Path  # its windows entry in the sources' cache
    text: str = ""


@dataclass
class RunResult:
    items: int
    embed_s: float
    index_s: float = 0.0
    swap_s: float = 0.0
    total_s: float = 0.0
    failed: int = 0
    new_entries: int = 0  # cache entries written during the run (decodes)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.items / self.embed_s


# -- the collection ------------------------------------------------------------------------
def n_windows_of(kind: str) -> int | None:
    return 1 if kind == "image" else None  # as ingestion with MMV_EMBED_WINDOWS=0


def make_sources(tmp: Path, n_sources: int, config: ModelConfig) -> list[Source]:
    """Corpus files, decoded into a cache as ingestion decodes an upload."""
    n_audio = n_stills = max(2, n_sources * 2 // 15)
    n_clips = n_sources - n_audio - n_stills
    corpus = tmp / "corpus"
    make_corpus(corpus, n_clips, 3, workers=2, progress=False, n_audio=n_audio, n_stills=n_stills)
    cache = DecodeCache(tmp / "source-cache")
    rows = read_manifest(corpus)

    def decode(row: dict[str, Any]) -> Source:
        kind = "image" if row["kind"] == "still" else row["kind"]
        path = corpus / row["path"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        info = read_media_info(path)
        windows = load_windows(path, config, n_windows_of(kind), info)
        entry = cache.store_windows(digest, config, n_windows_of(kind), windows, path.name)
        text = row.get("narration") or row.get("description") or ""
        return Source(kind, path, digest, info, entry, text)

    with ThreadPoolExecutor(2) as pool:  # ffmpeg runs in child processes
        return list(pool.map(decode, rows))


def item_plan(n: int, rng: random.Random) -> list[str]:
    kinds = [k for k, share in MIX.items() for _ in range(round(n * share))]
    kinds = (kinds + ["clip"] * n)[:n]
    rng.shuffle(kinds)
    return kinds


def link_entry(source: Path, target: Path) -> None:
    """A cache entry holding the same files (hard links), meta.json last: complete."""
    target.mkdir(parents=True)
    files = sorted(source.iterdir(), key=lambda p: p.name == "meta.json")
    for f in files:
        os.link(f, target / f.name)


def fill(
    data_dir: Path,
    model_dir: Path,
    kinds: list[str],
    sources: dict[str, list[Source]],
    config: ModelConfig,
    tag: str,
    with_cache: bool,
) -> str:
    """A data directory holding len(kinds) ready items of the starting version (random
    vectors: never read here), their media files, and (with_cache) their cache entries.
    Returns the starting version."""
    from service.model_versions import active_model_version
    from service.storage import Embedding, NewItem, Storage

    media_dir, cache = data_dir / "media", DecodeCache(data_dir / "cache")
    media_dir.mkdir(parents=True)
    storage = Storage(data_dir / "db.sqlite")
    handle = active_model_version(str(model_dir), data_dir / "models", storage)
    assert handle is not None
    option = config.heads.space
    dims = {"va": config.heads.va_dim, "vat": config.heads.vat_dim, "vt": config.heads.vat_dim}
    if option == "shared":
        dims["vat"] = config.heads.va_dim
    rng = np.random.default_rng(0)
    rows: list[tuple[Any, list[Any]]] = []
    used: Counter[str] = Counter()
    for i, kind in enumerate(kinds):
        pool = sources["clip" if kind == "text" else kind]
        src = pool[used[kind] % len(pool)]
        used[kind] += 1
        modality_list = ["text"] if kind == "text" else list(src.info.modalities)
        vectors = []
        for modality in modality_list:
            for space in spaces_of(option, modality):
                v = rng.standard_normal(dims[space]).astype(np.float32)
                vectors.append(Embedding(space, modality, v / np.linalg.norm(v)))
        if kind == "text":
            new = NewItem(kind="text", modalities=["text"], status="ready", text=src.text)
        else:
            digest = hashlib.sha256(f"{src.digest}:{tag}:{i}".encode()).hexdigest()
            os.link(src.path, media_dir / digest)
            if with_cache:
                link_entry(src.entry, cache.windows_entry(digest, config, n_windows_of(kind)))
            new = NewItem(
                kind=src.info.kind,
                modalities=modality_list,
                content_hash=digest,
                media_type="video/mp4" if kind == "clip" else None,
                size_bytes=src.path.stat().st_size,
                duration_s=src.info.duration_s,
                width=src.info.width,
                height=src.info.height,
                metadata={"source": "bench"},
            )
        rows.append((new, vectors))
    for start in range(0, len(rows), 2000):
        storage.items.create_ready(rows[start : start + 2000], handle.version)
    storage.close()
    return handle.version


def count_entries(cache_dir: Path) -> int:
    root = cache_dir / "windows"
    return sum(1 for _ in root.glob("*/*")) if root.is_dir() else 0


# -- the switch ------------------------------------------------------------------------------
def add_version(runtime: Any, source_dir: Path, version: str, parent: str) -> None:
    """Register a new version (the same checkpoint under a new name: a freshly trained
    one would cost the same) and ask the service to switch to it."""
    from service.storage import ModelRow, now_rfc3339

    target = runtime.settings.models_dir / version
    shutil.copytree(source_dir, target)
    storage = runtime.storage
    storage.models.add(ModelRow(version, now_rfc3339(), {}, {}, parent, active=False))
    storage.models.request_switch(version)


def warm_workers(pool: Any, model_dir: Path, version: str, workers: int) -> None:
    """Every worker process loads `version` before the clock starts."""
    from service.media_worker import warm_up

    seen: set[int] = set()
    for _ in range(20):
        futures = [pool.submit(warm_up, str(model_dir), version, False) for _ in range(workers)]
        seen.update(f.result() for f in futures)
        if len(seen) >= workers:
            return


def run_switch(runtime: Any, version: str, items: int) -> RunResult:
    """Switch `runtime` to `version` through its VersionSwitch; times of the stages."""
    switch = runtime.switch
    registry = runtime.model.indexes
    marks: dict[str, float] = {}
    passes: list[tuple[float, float]] = []
    embed_lacking = switch._embed_lacking
    start_rebuild, wait_rebuild, swap = registry.start_rebuild, registry.wait_rebuild, registry.swap

    workers = list(getattr(switch.pool._executor, "_processes", {}))
    cpu: dict[str, float] = {}

    def timed_embed(*args: Any) -> None:
        t, parent, children = time.perf_counter(), time.process_time(), cpu_of(workers)
        embed_lacking(*args)
        passes.append((t, time.perf_counter()))
        if len(passes) == 1:
            cpu["items"] = args[1].done  # the SwitchStatus: items embedded in this pass
            cpu["parent"] = time.process_time() - parent
            cpu["workers"] = cpu_of(workers) - children

    def timed_start(*args: Any, **kwargs: Any) -> Any:
        marks["index_start"] = time.perf_counter()
        return start_rebuild(*args, **kwargs)

    def timed_wait(*args: Any) -> Any:
        try:
            return wait_rebuild(*args)
        finally:
            if "index_start" in marks and "index_end" not in marks:
                marks["index_end"] = time.perf_counter()

    def timed_swap(*args: Any) -> Any:
        marks["swap_start"] = time.perf_counter()
        try:
            return swap(*args)
        finally:
            marks["swap_end"] = time.perf_counter()

    switch._embed_lacking = timed_embed
    registry.start_rebuild, registry.wait_rebuild, registry.swap = (
        timed_start,
        timed_wait,
        timed_swap,
    )
    entries = count_entries(runtime.settings.cache_dir)
    try:
        t0 = time.perf_counter()
        switch.check()
        switch.wait()
        total = time.perf_counter() - t0
    finally:
        del switch._embed_lacking, registry.start_rebuild, registry.wait_rebuild, registry.swap
    status = switch.status
    if status is None or status.stage != "done":
        raise SystemExit(f"the switch to {version} did not finish: {status}")
    cpu["locked_s"] = marks["swap_end"] - passes[-1][0]  # under the ingestion lock
    return RunResult(
        items=int(cpu.pop("items")),
        embed_s=passes[0][1] - passes[0][0],
        index_s=marks["index_end"] - marks["index_start"],
        swap_s=marks["swap_end"] - marks["swap_start"],
        total_s=total,
        failed=status.failed_items,
        new_entries=count_entries(runtime.settings.cache_dir) - entries,
        extra=cpu,
    )


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes and their finished children (ffmpeg,
    ffprobe) have used so far, from /proc."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone: a worker that was restarted
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def make_runtime(data_dir: Path, model_dir: Path) -> Any:
    from service.prometheus import Metrics
    from service.runtime import Runtime
    from service.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        model=str(model_dir),
        workers=2,
        device="cpu",
        asr=False,
        log_json=False,
        embed_windows=0,
    )
    runtime = Runtime(settings, Metrics())
    runtime.load_model_and_indexes()
    return runtime


# -- the check: re-indexed vectors against an upload's --------------------------------------
def upload_vectors(model: Any, path: Path, kind: str) -> dict[tuple[str, str], np.ndarray]:
    """(space, modality) -> vector, as an upload of `path` is embedded: decoded afresh,
    each window through the model's public API, the windows averaged, normalised."""
    windows = load_windows(path, model.config, n_windows_of(kind), read_media_info(path))
    out: dict[tuple[str, str], np.ndarray] = {}
    for modality in windows.info.modalities:
        with torch.inference_mode():
            if modality == "video":
                z = [model.embed_video(w[None]) for w in windows.video]
            elif modality == "audio":
                z = [model.embed_audio(w[None]) for w in windows.audio]
            else:
                z = [model.embed_image(windows.video[:1, 0])]
        for space in z[0]:
            mean = np.mean([np.float64(x[space][0].numpy()) for x in z], axis=0)
            out[(space, modality)] = (mean / np.linalg.norm(mean)).astype(np.float32)
    return out


def check_vectors(
    runtime: Any, version: str, by_hash: dict[str, tuple[Path, str]], sample: int
) -> tuple[float, int]:
    from model import load_model

    model = load_model(runtime.settings.models_dir / version).eval()
    storage = runtime.storage
    rows = [r for r in storage.items.page(None, 100_000, None) if r.content_hash in by_hash]
    rows = random.Random(1).sample(rows, min(sample, len(rows)))
    worst, compared = 0.0, 0
    for row in rows:
        path, kind = by_hash[row.content_hash]  # type: ignore[index]
        for (space, modality), want in upload_vectors(model, path, kind).items():
            got = storage.embeddings.get(row.seq, version, space, modality)
            assert got is not None, (row.seq, space, modality)
            worst = max(worst, float(np.abs(got - want).max()))
            compared += 1
    return worst, compared


# -- main ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 items, one round")
    parser.add_argument("--items", type=int, default=None, help="items re-indexed from the cache")
    parser.add_argument("--decode-items", type=int, default=None, help="baseline items")
    parser.add_argument("--sources", type=int, default=None, help="distinct corpus files")
    parser.add_argument("--rounds", type=int, default=None, help="baseline + cache runs")
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    args = parser.parse_args()
    items = args.items or (1000 if args.quick else 10_000)
    decode_items = args.decode_items or (60 if args.quick else 300)
    n_sources = args.sources or (60 if args.quick else 300)
    rounds = args.rounds or (1 if args.quick else 2)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("indexer").setLevel(logging.ERROR)  # "building ... because": expected
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"{model_dir} is not a model checkpoint (make model)")

    config = load_config(model_dir / "config.json")
    cores = len(os.sched_getaffinity(0))
    print(
        f"machine: {platform.machine()}, {cores} cores, torch {torch.__version__}, parent "
        f"threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"MMV_WORKERS=2 worker processes, model {model_dir.name} ({config.name}), "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-reindex-") as tmp_name:
        tmp = Path(tmp_name)
        sources = make_sources(tmp, n_sources, config)
        by_kind: dict[str, list[Source]] = {}
        for s in sources:
            by_kind.setdefault(s.kind, []).append(s)
        windows = Counter(s.kind for s in sources)
        rng = random.Random(0)
        cache_kinds, decode_kinds = item_plan(items, rng), item_plan(decode_items, rng)
        cache_dir, decode_dir = tmp / "data-cache", tmp / "data-decode"
        v1 = fill(cache_dir, model_dir, cache_kinds, by_kind, config, "c", with_cache=True)
        fill(decode_dir, model_dir, decode_kinds, by_kind, config, "d", with_cache=False)
        setup_s = time.perf_counter() - started
        mix = Counter(cache_kinds)
        per_clip = statistics.mean(len(np.load(s.entry / "starts_s.npy")) for s in by_kind["clip"])
        print(
            f"collection: {items:,} items from the cache — "
            + ", ".join(f"{mix[k]:,} {MIX_WORDS[k]}" for k in MIX)
            + f" — made from {len(sources)} generated files ({windows['clip']} clips, "
            f"{windows['audio']} sounds, {windows['image']} stills; {per_clip:.1f} windows "
            "a clip) decoded once into cache entries as ingestion does; each item has its own "
            "content hash, its media file and cache entry hard links of its source's "
            "(same bytes, own key; pages shared, so reads hit the page cache)"
        )
        print(
            f"baseline: {decode_items} items of the same mix with media files but no cache "
            f"entries (decoded with ffmpeg again); set-up took {setup_s:.0f} s"
        )

        cache_rt = make_runtime(cache_dir, model_dir)
        decode_rt = make_runtime(decode_dir, model_dir)
        pool = cache_rt.media_pool
        pool.start()
        decode_rt.switch.pool = pool  # one pool: the same worker processes for both
        by_hash = {}
        runs: dict[str, list[RunResult]] = {"decode": [], "cache": []}
        try:
            parent = {"decode": decode_rt.model.embedder.version, "cache": v1}
            for r in range(rounds):
                version = f"next-{r + 1}"
                for name, rt in (("decode", decode_rt), ("cache", cache_rt)):
                    add_version(rt, model_dir, version, parent[name])
                    parent[name] = version
                warm_workers(pool, cache_rt.settings.models_dir / version, version, 2)
                for name, rt, n in (
                    ("decode", decode_rt, decode_items),
                    ("cache", cache_rt, items),
                ):
                    load = os.getloadavg()[0]
                    result = run_switch(rt, version, n)
                    result.extra["load"] = load
                    runs[name].append(result)
                    x = result.extra
                    print(
                        f"  round {r + 1} {name:6s}: {result.items:,} items in "
                        f"{result.embed_s:.1f} s = {result.rate:,.1f} items/s; CPU s: workers "
                        f"{x['workers']:.1f}, API process {x['parent']:.1f} (load average "
                        f"{load:.1f} before)",
                        flush=True,
                    )
                if r < rounds - 1:  # the baseline decodes again next round
                    shutil.rmtree(decode_rt.settings.cache_dir / "windows", ignore_errors=True)
            by_hash = {
                digest: (s.path, s.kind)
                for digest, s in _hash_sources(cache_dir, by_kind, cache_kinds).items()
            }
            worst, compared = check_vectors(cache_rt, f"next-{rounds}", by_hash, 20)
        finally:
            pool.shutdown()
            for rt in (cache_rt, decode_rt):
                rt.search_executor.shutdown(wait=True)
                rt.storage.close()
        load_end = os.getloadavg()[0]

    cache_rate = statistics.median(r.rate for r in runs["cache"])
    decode_rate = statistics.median(r.rate for r in runs["decode"])

    def med(rs: list[RunResult], key: Any) -> float:
        return statistics.median(key(r) for r in rs)

    def cpu(r: RunResult) -> float:
        return r.extra["workers"] + r.extra["parent"]

    def other(r: RunResult) -> float:
        return r.total_s - r.embed_s - r.index_s - r.swap_s

    print(f"\nmedians of {rounds} round(s), each: baseline then cache, a new version each")
    header = (
        f"{'what':40s}{'items':>7s}{'embed s':>8s}{'items/s':>9s}{'CPU s':>7s}"
        f"{'items/CPU-s':>12s}{'index s':>8s}{'swap s':>7s}{'other s':>8s}{'switch s':>9s}"
        f"{'decoded':>8s}"
    )
    print(header)
    print("-" * len(header))
    for name, label in (
        ("decode", "baseline: decoding from media (ffmpeg)"),
        ("cache", "re-indexing from the decode cache"),
    ):
        rs = runs[name]
        print(
            f"{label:40s}{rs[0].items:>7,d}{med(rs, lambda r: r.embed_s):>8.1f}"
            f"{med(rs, lambda r: r.rate):>9.1f}{med(rs, cpu):>7.1f}"
            f"{med(rs, lambda r: r.items / cpu(r)):>12.1f}{med(rs, lambda r: r.index_s):>8.2f}"
            f"{med(rs, lambda r: r.swap_s):>7.2f}{med(rs, other):>8.1f}"
            f"{med(rs, lambda r: r.total_s):>9.1f}{med(rs, lambda r: r.new_entries):>8.0f}"
        )
    c, d = runs["cache"], runs["decode"]
    share = med(c, lambda r: cpu(r) / (r.embed_s * cores))
    parent = med(c, lambda r: r.extra["parent"] / cpu(r))
    failed = sum(r.failed for rs in runs.values() for r in rs)
    print(
        "embed s: the first pass over the items (what items/s divides by); CPU s: the worker "
        "processes' and the API process's in it, ffmpeg included; index s: the new version's "
        "indexes built beside the serving ones; swap s: `IndexRegistry.swap`; other s: the "
        "rest of the switch (loading the model, counting what is left in SQLite, the catch-up "
        f"passes, the database's switch); decoded: cache entries written; items failed: {failed}"
    )
    print(
        f"\ncache / decoding: {cache_rate / decode_rate:.1f}× the items/s, "
        f"{med(c, lambda r: r.items / cpu(r)) / med(d, lambda r: r.items / cpu(r)):.1f}× the "
        f"items per CPU-second. The whole switch of {c[0].items:,} items takes "
        f"{med(c, lambda r: r.total_s):.1f} s (uploads wait "
        f"{med(c, lambda r: r.extra['locked_s']):.1f} s of it, under the ingestion lock); "
        f"decoding every item instead would take ≈ {c[0].items / decode_rate:.0f} s"
    )
    print(
        f"the switch got {share:.0%} of the {cores} cores while embedding from the cache (the "
        f"API process {parent:.0%} of its CPU); with all {cores} to itself: ≈ "
        f"{med(c, lambda r: r.items / cpu(r)) * cores:.0f} items/s (items/CPU-s × {cores})"
    )
    print(
        f"re-indexed vectors vs the same files embedded as an upload ({compared} vectors of 20 "
        f"items): max |diff| {worst:.1e}; load average at end {load_end:.1f} (above ~2, "
        "other processes share the cores)"
    )
    verdict = "HOLDS" if cache_rate >= GOAL else "MISSES"
    print(f"target reindex_from_cache: {cache_rate:.0f} items/s (goal ≥ {GOAL:.0f}) {verdict}")


def _hash_sources(
    data_dir: Path, by_kind: dict[str, list[Source]], kinds: list[str]
) -> dict[str, Source]:
    """content hash -> the source file it links (as fill() named them)."""
    used: Counter[str] = Counter()
    out: dict[str, Source] = {}
    for i, kind in enumerate(kinds):
        pool = by_kind["clip" if kind == "text" else kind]
        src = pool[used[kind] % len(pool)]
        used[kind] += 1
        if kind != "text":
            out[hashlib.sha256(f"{src.digest}:c:{i}".encode()).hexdigest()] = src
    return out


if __name__ == "__main__":
    main()
