"""HTTP search and ingestion through a real `python -m service` (issue #6).

Search, with 100k items indexed: HTTP text -> audio search from 32 concurrent clients,
measured as docs/benchmarks.md says:
1. latency at an offered rate: `hey -z 20s -c 32 -q 16` (512 req/s offered), p50/p99
   computed here from hey's per-request CSV;
2. saturation: `wrk -t1 -c32` unpaced, beside the same server's /healthz (the ceiling
   of this HTTP stack on this machine): 3 runs of 5 s each, alternating, medians (one
   run to the next drifts by ±20% here).
The load generator runs on the same 2 cores as the server.
Baseline in the same run: a naive server (`naive-serve` below): FastAPI + uvicorn with
the same settings, a plain `def` endpoint that makes one text-encoder call per query
and an exact (flat) FAISS search, then joins items from the same database.

The 100k items are inserted directly into the service's database (the service builds
its indexes from them at start-up): unit vectors around mixes of two base vectors,
cosine ≈ 0.8 to the mix. The base vectors are the audio embeddings of generated corpus
clips by the trained models/default; until it exists, random unit vectors stand in (a
random network embeds every input alike, which would make a degenerate index).

Ingestion: 10 s clips with sound uploaded over HTTP (wait=true, 4 clients), with a
supplied transcript and, separately, with speech recognition; the baseline is the same
work sent one clip at a time. Stage shares come from the server's own histograms.

    .venv/bin/python bench/service.py [--quick] [--items 100000]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch and faiss load
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
QUERY = "a dog barks while a bell rings"
GOALS = {"qps": 500.0, "p50_ms": 15.0, "p99_ms": 60.0, "ratio": 0.6, "ingest": 2.0}


# -- the naive baseline server -------------------------------------------------------------
def naive_app(data_dir: Path, model_dir: Path) -> Any:
    """One encoder call per query, exact search, in FastAPI's thread pool."""
    import faiss
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from model import load_model
    from model.spaces import space_for
    from service.schemas import item_payload
    from service.storage import Storage

    storage = Storage(data_dir / "db.sqlite")
    model = load_model(model_dir).eval()
    version = storage.models.active().version  # type: ignore[union-attr]
    option = model.config.heads.space
    flat: dict[str, Any] = {}
    for target in ("audio",):
        space = space_for(option, "text", target)
        seqs = storage.embeddings.seqs(version, space, target)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(model.embedding_dims[space]))
        index.add_with_ids(storage.embeddings.vectors(version, space, target, seqs), seqs)
        flat[target] = (space, index)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/v1/search")
    def search(q: str, target: str, k: int = 10) -> JSONResponse:
        started = time.perf_counter()
        space, index = flat[target]
        vector = model.embed_text([q])[space].numpy()
        scores, seqs = index.search(vector, k)
        rows = storage.items.by_seqs(seqs[0].tolist())
        results = [
            {"item": item_payload(rows[s]), "score": float(sc)}
            for s, sc in zip(seqs[0].tolist(), scores[0].tolist(), strict=True)
            if s in rows
        ]
        took = (time.perf_counter() - started) * 1000
        return JSONResponse(
            {"results": results, "space": space, "model_version": version, "took_ms": took}
        )

    return app


def naive_serve(args: argparse.Namespace) -> None:
    import uvicorn

    app = naive_app(Path(args.data), Path(args.model))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


# -- setting up 100k items -------------------------------------------------------------
def make_model(tmp: Path) -> tuple[Path, str, bool]:
    default = REPO / "models" / "default"
    if (default / "config.json").is_file():
        return default, "models/default (trained)", True
    from e2e_server import make_random_model

    words = ["a", "dog", "barks", "while", "bell", "rings", "red", "ball", "drum"]
    out = make_random_model(tmp / "tiny-random", words)
    return out, "tiny, random init (models/default is not trained yet)", False


def base_audio_embeddings(model_dir: Path, tmp: Path, n: int) -> dict[str, np.ndarray]:
    """space -> [n, D]: the audio of n generated corpus clips, embedded by the model."""
    from model import load_model
    from model.corpus import make_corpus, read_manifest
    from model.embedding import embed_media
    from model.media import load_windows

    corpus = tmp / "corpus"
    make_corpus(corpus, n, seed=7, workers=2, progress=False, n_audio=0, n_stills=0)
    model = load_model(model_dir).eval()
    out: dict[str, list[np.ndarray]] = {}
    for row in read_manifest(corpus, kind="clip"):
        windows = load_windows(corpus / row["path"], model.config, 4)
        # As the service embeds a file: its windows averaged, normalised again.
        for space, vector in embed_media(model, windows, "audio").items():
            out.setdefault(space, []).append(vector)
    return {space: np.stack(vs) for space, vs in out.items()}


def random_bases(dims: dict[str, int], n: int) -> dict[str, np.ndarray]:
    """Spread-out unit vectors: the stand-in for real embeddings when the model is random
    (a random network maps every input to nearly the same direction, cosine ≈ 0.98, which
    no trained model does and which makes any IVF index degenerate)."""
    rng = np.random.default_rng(1)
    out = {}
    for space, d in dims.items():
        b = rng.standard_normal((n, d)).astype(np.float32)
        out[space] = b / np.linalg.norm(b, axis=1, keepdims=True)
    return out


def synthetic(base: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around mixes of two base vectors (a + r·b, r uniform in [0, 1]), with
    noise that leaves a cosine of ≈ 0.8 to the mix: a continuum, not a few tight blobs."""
    i = rng.integers(0, len(base), count)
    j = rng.integers(0, len(base), count)
    r = rng.random((count, 1)).astype(np.float32)
    mix = base[i] + r * base[j]
    mix /= np.linalg.norm(mix, axis=1, keepdims=True)
    noise = rng.standard_normal(mix.shape).astype(np.float32) / np.sqrt(mix.shape[1])
    v = mix + 0.75 * noise
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill_database(data_dir: Path, model_dir: Path, base: dict[str, np.ndarray], n: int) -> float:
    """Register the model and insert n audio items (synthetic vectors around the base)."""
    from service.model_versions import active_model_version
    from service.storage import Embedding, NewItem, Storage

    started = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(data_dir / "db.sqlite")
    handle = active_model_version(str(model_dir), data_dir / "models", storage)
    assert handle is not None
    rng = np.random.default_rng(0)
    batch = 5000
    for start in range(0, n, batch):
        count = min(batch, n - start)
        vectors = {space: synthetic(b, count, rng) for space, b in base.items()}
        rows = []
        for j in range(count):
            new = NewItem(
                kind="audio",
                modalities=["audio"],
                content_hash=f"bench-{start + j:07d}",
                media_type="audio/wav",
                duration_s=4.0,
                metadata={"source": "bench"},
            )
            rows.append((new, [Embedding(s, "audio", vectors[s][j]) for s in base]))
        storage.items.create_ready(rows, handle.version)
    storage.close()
    return time.perf_counter() - started


# -- load generation ---------------------------------------------------------------------
def hey_at_rate(url: str, seconds: int) -> dict[str, float]:
    """hey -z Ns -c 32 -q 16: achieved req/s, p50/p99 ms (from per-request CSV), errors."""
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", "32", "-q", "16", "-o", "csv", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    latencies = np.array([float(r["response-time"]) * 1000 for r in rows])
    errors = sum(1 for r in rows if r["status-code"] != "200")
    return {
        "requests": len(rows),
        "rps": len(rows) / seconds,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "errors": errors,
    }


def hey_light(url: str, seconds: int) -> dict[str, float]:
    """A light search load (4 clients × 10 req/s): latency, not throughput."""
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", "4", "-q", "10", "-o", "csv", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    latencies = np.array(
        [float(r["response-time"]) * 1000 for r in csv.DictReader(io.StringIO(out))]
    )
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
    }


def wrk_saturation(url: str, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"wrk gave no rate:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw {non2xx[1]} error responses from {url}")
    return float(match[1])


def warm(url: str) -> None:
    subprocess.run(["hey", "-n", "400", "-c", "8", url], capture_output=True, timeout=120)


def measure_search(base_url: str, seconds: int, sat_seconds: int) -> dict[str, float]:
    url = f"{base_url}/v1/search?q={QUERY.replace(' ', '+')}&target=audio&k=10"
    warm(url)
    rate = hey_at_rate(url, seconds)
    # Saturation against the ceiling: runs of each alternate (this machine's throughput
    # drifts by ±20% from one run to the next), medians reported.
    rounds = 3
    search, ceiling = [], []
    for _ in range(rounds):
        search.append(wrk_saturation(url, max(3, sat_seconds // rounds)))
        ceiling.append(wrk_saturation(f"{base_url}/healthz", max(3, sat_seconds // rounds)))
    rate["saturation_rps"] = float(np.median(search))
    rate["ceiling_rps"] = float(np.median(ceiling))
    rate["ratio"] = float(np.median(np.array(search) / np.array(ceiling)))
    print(
        "  saturation runs (search, /healthz): "
        + ", ".join(f"({s:.0f}, {c:.0f})" for s, c in zip(search, ceiling, strict=True))
    )
    return rate


# -- ingestion ---------------------------------------------------------------------------
def make_clips(folder: Path, n: int, speech: bool, offset: int) -> list[Path]:
    """n distinct 10 s clips, 320×240 h264 + aac: tones (or speech) over test pictures."""
    from e2e_server import ffmpeg, make_speech

    folder.mkdir(parents=True, exist_ok=True)
    pictures = ["testsrc", "testsrc2", "smptebars", "rgbtestsrc", "pal100bars", "yuvtestsrc"]
    clips = []
    for i in range(n):
        picture = pictures[i % len(pictures)]
        out = folder / f"clip-{offset + i}.mp4"
        src = ["-f", "lavfi", "-i", f"{picture}=size=320x240:rate=25:duration=10"]
        if speech:
            wav = make_speech(
                folder / f"speech-{offset + i}.wav",
                f"clip number {offset + i} shows a ball that bounces on the "
                "floor while a drum rolls and a dog barks in the garden",
            )
            audio = ["-i", str(wav), "-af", "apad", "-t", "10"]
        else:
            audio = ["-f", "lavfi", "-i", f"sine=frequency={200 + 37 * (offset + i)}:duration=10"]
        ffmpeg(
            *src,
            *audio,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(out),
        )
        clips.append(out)
    return clips


def stage_sums(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return {
        m[1]: float(m[2])
        for m in re.finditer(r'^mmv_ingest_stage_seconds_sum\{stage="(\w+)"\} (\S+)$', text, re.M)
    }


def ingest(base_url: str, clips: list[Path], clients: int, transcript: bool) -> dict[str, Any]:
    def one(path: Path) -> None:
        data = (
            {"transcript": "a ball bounces on the floor while a drum rolls"} if transcript else {}
        )
        r = httpx.post(
            f"{base_url}/v1/items",
            data=data,
            files={"file": (path.name, path.read_bytes())},
            timeout=300,
        )
        if r.status_code != 201:
            raise RuntimeError(f"upload of {path.name} answered {r.status_code}: {r.text}")

    before = stage_sums(base_url)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, clips))
    wall = time.perf_counter() - started
    after = stage_sums(base_url)
    stages = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    work = sum(v for k, v in stages.items() if k != "total")
    return {
        "clips_per_s": len(clips) / wall,
        "realtime": 10.0 * len(clips) / wall,
        "shares": {k: v / work for k, v in stages.items() if k != "total" and work > 0},
    }


# -- the run -----------------------------------------------------------------------------
def machine() -> str:
    import faiss
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"threads={torch.get_num_threads()}, faiss {faiss.__version__}, GPU: "
        f"{'yes' if torch.cuda.is_available() else 'none'}, load average {load}"
    )


def start(cmd: list[str], env: dict[str, str], log: Path, ready_url: str, timeout: float) -> Any:
    process = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{cmd} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    process.kill()
    raise RuntimeError(f"{cmd} not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def verdict(name: str, figure: float, goal: float, unit: str, higher_is_better: bool) -> str:
    holds = figure >= goal if higher_is_better else figure <= goal
    sign = "≥" if higher_is_better else "≤"
    shown = f"{figure:.2f}" if abs(figure) < 10 else f"{figure:.1f}"
    return (
        f"target {name}: {shown}{unit} (goal {sign} {goal:g}{unit}) "
        f"{'HOLDS' if holds else 'MISSES'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k items, 5 s runs, few clips")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the data directory here")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("naive-serve")
    serve.add_argument("--data", required=True)
    serve.add_argument("--model", required=True)
    serve.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.command == "naive-serve":
        naive_serve(args)
        return 0

    from e2e_server import free_port

    n_items = args.items or (20_000 if args.quick else 100_000)
    rate_s, sat_s = (5, 5) if args.quick else (20, 15)
    n_clips = 4 if args.quick else 12
    print(f"machine: {machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    data = args.keep or tmp / "data"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        model_dir, model_name, trained = make_model(tmp)
        print(f"model: {model_name}")
        t = time.perf_counter()
        if trained:
            base = base_audio_embeddings(model_dir, tmp, 8 if args.quick else 24)
            print(
                f"base: audio embeddings of {len(next(iter(base.values())))} corpus clips "
                f"({time.perf_counter() - t:.1f} s)"
            )
        else:
            from model import load_config

            heads = load_config(model_dir / "config.json").heads
            base = random_bases({"va": heads.va_dim, "vat": heads.vat_dim}, 256)
            print(
                "base: 256 random unit vectors per space (the random model's embeddings "
                "are all alike)"
            )
        print("items: unit vectors around mixes of two base vectors, cosine ≈ 0.8 to the mix")
        seconds = fill_database(data, model_dir, base, n_items)
        print(f"{n_items:,} items inserted into the database directly: {seconds:.1f} s")

        env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            MMV_DATA_DIR=str(data),
            MMV_MODEL=str(model_dir),
            MMV_WORKERS="2",
        )
        port = free_port()
        t = time.perf_counter()
        processes.append(
            start(
                [sys.executable, "-m", "service"],
                dict(env, MMV_PORT=str(port)),
                tmp / "service.log",
                f"http://127.0.0.1:{port}/readyz",
                600,
            )
        )
        print(f"service ready (indexes built from the database) in {time.perf_counter() - t:.1f} s")
        service_url = f"http://127.0.0.1:{port}"
        print(f"indexes: {httpx.get(service_url + '/readyz').json()['indexes']}")

        naive_port = free_port()
        processes.append(
            start(
                [
                    sys.executable,
                    __file__,
                    "naive-serve",
                    "--data",
                    str(data),
                    "--model",
                    str(model_dir),
                    "--port",
                    str(naive_port),
                ],
                env,
                tmp / "naive.log",
                f"http://127.0.0.1:{naive_port}/healthz",
                600,
            )
        )
        naive_url = f"http://127.0.0.1:{naive_port}"

        results = {}
        for name, url in (("naive", naive_url), ("service", service_url)):
            results[name] = measure_search(url, rate_s, sat_s)
            print(f"{name}: {json.dumps({k: round(v, 2) for k, v in results[name].items()})}")
        processes[1].terminate()

        clips = make_clips(tmp / "clips-a", n_clips, speech=False, offset=0)
        clips_seq = make_clips(tmp / "clips-b", n_clips // 2, speech=False, offset=100)
        speech = make_clips(tmp / "clips-c", n_clips // 2, speech=True, offset=200)
        ingest_seq = ingest(service_url, clips_seq, 1, transcript=True)
        search_url = f"{service_url}/v1/search?q={QUERY.replace(' ', '+')}&target=audio&k=10"
        idle = hey_light(search_url, 8)
        during: dict[str, float] = {}
        light = threading.Thread(target=lambda: during.update(hey_light(search_url, 8)))
        light.start()  # searches while uploads are decoded, recognised and embedded
        ingest_par = ingest(service_url, clips, 4, transcript=True)
        light.join()
        ingest_asr = ingest(service_url, speech, 4, transcript=False)
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)

    s, nv = results["service"], results["naive"]
    print()
    print(
        f"HTTP text -> audio search, {n_items:,} items, 32 clients, load generator on the "
        "same 2 cores"
    )
    print(
        "| server | offered | achieved req/s | p50 ms | p99 ms | errors | saturation req/s "
        "| /healthz req/s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in (("naive (1 encoder call/query, exact)", nv), ("service (batched)", s)):
        print(
            f"| {name} | 512/s | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['errors']:.0f} | {r['saturation_rps']:.0f} | {r['ceiling_rps']:.0f} | "
            f"{r['ratio']:.2f} |"
        )
    print(
        f"saturation throughput, service / naive: {s['saturation_rps'] / nv['saturation_rps']:.2f}×"
    )
    print()
    print("Ingestion of 10 s clips with sound over HTTP (wait=true)")
    print(
        "| run | clients | clips/s | × real time | decode | asr | embed | store | index | probe |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, clients, r in (
        ("transcript supplied, one at a time (baseline)", 1, ingest_seq),
        ("transcript supplied", 4, ingest_par),
        ("speech recognition", 4, ingest_asr),
    ):
        sh = r["shares"]
        cells = " | ".join(
            f"{100 * sh.get(k, 0):.0f}%"
            for k in ("decode", "asr", "embed", "store", "index", "probe")
        )
        print(f"| {name} | {clients} | {r['clips_per_s']:.2f} | {r['realtime']:.1f} | {cells} |")
    speedup = ingest_par["clips_per_s"] / ingest_seq["clips_per_s"]
    print(f"ingestion, 4 clients / 1 client: {speedup:.2f}×")
    print(
        f"search (4 clients × 10 req/s) while idle: p50 {idle['p50_ms']:.1f} ms, p99 "
        f"{idle['p99_ms']:.1f} ms; while ingesting: p50 {during['p50_ms']:.1f} ms, p99 "
        f"{during['p99_ms']:.1f} ms"
    )
    print()
    print(verdict("search_rps_at_512_offered", s["rps"], GOALS["qps"], " req/s", True))
    print(verdict("search_p50", s["p50_ms"], GOALS["p50_ms"], " ms", False))
    print(verdict("search_p99", s["p99_ms"], GOALS["p99_ms"], " ms", False))
    print(verdict("search_saturation_ratio", s["ratio"], GOALS["ratio"], "", True))
    print(verdict("search_errors", s["errors"], 0, "", False))
    print(
        verdict(
            "ingest_clips_per_s_with_transcript",
            ingest_par["clips_per_s"],
            GOALS["ingest"],
            " clips/s",
            True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
