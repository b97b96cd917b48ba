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

Past one machine (docs/scaling.md), in the same run: a throwaway PostgreSQL server
(tests/postgres_cluster.py) filled with the same items, two API replicas on it (one
data directory, a local directory and port each) and haproxy round robin in front
(health-checked on /readyz). Side by side, alternating:
1. search, the same load as above: the SQLite server (baseline), one replica addressed
   directly, and both replicas through the proxy;
2. the follow delay: a text item uploaded through replica 1, the time until a search on
   replica 2 finds it;
3. uploads (10 s clips, wait=true, 4 clients, transcript supplied): the SQLite server
   against replica 1 alone (replica 2 and the proxy stopped), in alternating rounds.

    .venv/bin/python bench/service.py [--quick] [--items 100000]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import signal
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
# Past one machine: two replicas behind the proxy against one (on 2 cores a second
# replica brings no CPU of its own, so this says the proxy and the replica cost little),
# the follow delay, and uploads on PostgreSQL against SQLite.
REPLICA_GOALS = {"replicas": 0.8, "follow_s": 1.0, "ingest_pg": 0.8}
# Lines of a server's (JSON or plain) or haproxy's log that the run reports at its end.
PROBLEM = r'^.*(?:"level": "(?:error|critical)"|\bERROR\b|CRITICAL|Traceback|\[ALERT\]).*$'


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


def fill_database(
    location: Path | str,
    data_dir: Path,
    model_dir: Path,
    base: dict[str, np.ndarray],
    n: int,
) -> float:
    """Register the model and insert n audio items (synthetic vectors around the base).

    location: what Storage opens, a SQLite file or a postgresql:// URL; data_dir: the
    service's MMV_DATA_DIR (the model version is copied into its models/). The same n
    and base give the same vectors in any database. PostgreSQL gets VACUUM ANALYZE after
    the bulk insert, as after any bulk load (autovacuum would, within a minute or so):
    with the planner's statistics still those of an empty table, a replica reading the
    vectors to build its indexes took ≈ 20× longer (service/storage/embeddings.py reads
    them in IN-lists of 900, each filtered over every row of its space and modality)."""
    from service.model_versions import active_model_version
    from service.storage import Embedding, NewItem, Storage

    started = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(location)
    try:
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
    finally:
        storage.close()
    if isinstance(location, str) and location.startswith("postgresql"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


# -- load generation ---------------------------------------------------------------------
def hey_samples(url: str, seconds: int) -> tuple[np.ndarray, int]:
    """hey -z Ns -c 32 -q 16 (512 req/s offered): per-request latencies (ms), errors."""
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", "32", "-q", "16", "-o", "csv", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    latencies = np.array([float(r["response-time"]) * 1000 for r in rows])
    return latencies, sum(1 for r in rows if r["status-code"] != "200")


def rate_summary(latencies: np.ndarray, errors: int, seconds: float) -> dict[str, float]:
    if not len(latencies):
        raise RuntimeError("hey got no answer at all: is the server still running?")
    return {
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "errors": errors,
    }


def hey_at_rate(url: str, seconds: int) -> dict[str, float]:
    """hey -z Ns -c 32 -q 16: achieved req/s, p50/p99 ms (from per-request CSV), errors."""
    latencies, errors = hey_samples(url, seconds)
    return rate_summary(latencies, errors, seconds)


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


# -- past one machine: PostgreSQL, replicas, haproxy -------------------------------------
def postgres_cluster_class() -> Any:
    """tests/postgres_cluster.py, imported by its path (tests/ is no package)."""
    path = REPO / "tests" / "postgres_cluster.py"
    spec = importlib.util.spec_from_file_location("bench_postgres_cluster", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PostgresCluster


def haproxy_config(port: int, monitor_port: int, backends: list[int]) -> str:
    """Round robin over the replicas whose /readyz answers 200, as
    docker/haproxy/haproxy.cfg, without request logs (they would cost CPU here) and with
    1 s checks; the monitor port answers 200 once every replica is in."""
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p}" for i, p in enumerate(backends, start=1))
    return f"""global
    maxconn 4096

defaults
    mode http
    option forwardfor
    retries 2
    option redispatch
    timeout connect 5s
    timeout http-request 30s
    timeout http-keep-alive 15s
    timeout queue 30s
    timeout client 5m
    timeout server 5m

frontend mmv
    bind 127.0.0.1:{port}
    default_backend api

backend api
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server check inter 1s fall 3 rise 1
{servers}

frontend monitor
    bind 127.0.0.1:{monitor_port}
    monitor-uri /healthz
    monitor fail if {{ nbsrv(api) lt {len(backends)} }}
"""


def start_haproxy(tmp: Path, backends: list[int]) -> tuple[subprocess.Popen[bytes], str]:
    from e2e_server import free_port

    # Debian installs it in /usr/sbin, which a user's PATH may lack (make bench-deps).
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if haproxy is None:
        raise RuntimeError("haproxy is not installed: make bench-deps (Debian's haproxy)")
    port, monitor = free_port(), free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, monitor, backends))
    check = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy -c rejected {cfg}:\n{check.stdout}{check.stderr}")
    log = tmp / "haproxy.log"
    process = launch([haproxy, "-f", str(cfg), "-db"], dict(os.environ), log)
    wait_ready(process, log, f"http://127.0.0.1:{monitor}/healthz", 60)
    return process, f"http://127.0.0.1:{port}"


def compare_search(urls: dict[str, str], seconds: int, sat_seconds: int) -> dict[str, Any]:
    """The same load on each server, in rounds that alternate the order (this machine
    drifts by ±20% from one run to the next): hey at 512 req/s offered, 2 rounds of
    seconds / 2 each, the samples pooled; then wrk saturation, 3 rounds, medians."""
    query = f"/v1/search?q={QUERY.replace(' ', '+')}&target=audio&k=10"
    for base in urls.values():
        warm(base + query)
    rounds = 2
    samples: dict[str, list[np.ndarray]] = {name: [] for name in urls}
    errors = {name: 0 for name in urls}
    for r in range(rounds):
        for name in list(urls) if r % 2 == 0 else list(reversed(urls)):
            latencies, failed = hey_samples(urls[name] + query, max(3, seconds // rounds))
            samples[name].append(latencies)
            errors[name] += failed
    out: dict[str, dict[str, Any]] = {
        name: rate_summary(
            np.concatenate(samples[name]), errors[name], rounds * max(3, seconds // rounds)
        )
        for name in urls
    }
    rounds = 3
    runs: dict[str, list[float]] = {name: [] for name in urls}
    for r in range(rounds):
        order = list(urls) if r % 2 == 0 else list(reversed(urls))
        for name in order:
            runs[name].append(wrk_saturation(urls[name] + query, max(3, sat_seconds // rounds)))
    for name in urls:
        out[name]["saturation_rps"] = float(np.median(runs[name]))
        out[name]["saturation_runs"] = runs[name]
    print(
        "  saturation runs: "
        + "; ".join(f"{n}: " + ", ".join(f"{v:.0f}" for v in runs[n]) for n in urls)
    )
    return out


def follow_delay(writer: str, reader: str, n: int) -> dict[str, Any]:
    """n text items uploaded through `writer`; for each, the time from its 201 (it is
    searchable on the writer) until a search on `reader` finds it, polled every 10 ms.
    The search is filtered on the item's own metadata, so only the follow counts."""
    rng = np.random.default_rng(3)
    run = f"{time.time_ns():x}"
    after_201, after_send = [], []
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            time.sleep(float(rng.uniform(0.05, 0.3)))  # out of step with the 0.2 s poll
            text = f"follow probe {i}: a bell rings twice while a dog barks"
            tag = f"{run}-{i}"
            sent = time.perf_counter()
            r = client.post(
                f"{writer}/v1/items/text", json={"text": text, "metadata": {"bench_follow": tag}}
            )
            answered = time.perf_counter()
            if r.status_code != 201:
                raise RuntimeError(f"text upload answered {r.status_code}: {r.text}")
            item_id = r.json()["id"]
            body = {
                "query": {"text": text},
                "target": "text",
                "k": 5,
                "filter": {"bench_follow": tag},
            }
            while True:
                r = client.post(f"{reader}/v1/search", json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"search on the reader answered {r.status_code}: {r.text}")
                if any(hit["item"]["id"] == item_id for hit in r.json()["results"]):
                    found = time.perf_counter()
                    break
                if time.perf_counter() - answered > 30:
                    raise RuntimeError(f"replica 2 did not find {item_id} within 30 s")
                time.sleep(0.01)
            after_201.append(found - answered)
            after_send.append(found - sent)
    return {
        "n": n,
        "p50_s": float(np.median(after_201)),
        "max_s": float(np.max(after_201)),
        "p50_from_send_s": float(np.median(after_send)),
        "delays": after_201,
    }


def compare_ingest(urls: dict[str, str], clips: list[Path], rounds: int) -> dict[str, Any]:
    """The same clips uploaded to each server (each its own database), 4 clients, in
    rounds of len(clips) / rounds that alternate which server goes first."""
    chunk = len(clips) // rounds
    walls = {name: 0.0 for name in urls}
    done = {name: 0 for name in urls}
    shares: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    for r in range(rounds):
        part = clips[r * chunk : (r + 1) * chunk]
        order = list(urls) if r % 2 == 0 else list(reversed(urls))
        for name in order:
            result = ingest(urls[name], part, 4, transcript=True)
            walls[name] += len(part) / result["clips_per_s"]
            done[name] += len(part)
            shares[name].append(result["shares"])
    return {
        name: {
            "clips": done[name],
            "clips_per_s": done[name] / walls[name],
            "shares": {
                k: float(np.mean([s.get(k, 0.0) for s in shares[name]]))
                for k in ("decode", "asr", "embed", "store", "index", "probe")
            },
        }
        for name in urls
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


def launch(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(
    process: subprocess.Popen[bytes], log: Path, ready_url: str, timeout: float
) -> subprocess.Popen[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    process.kill()
    raise RuntimeError(f"{process.args} not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def start(cmd: list[str], env: dict[str, str], log: Path, ready_url: str, timeout: float) -> Any:
    return wait_ready(launch(cmd, env, log), log, ready_url, timeout)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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

    # SIGTERM as Ctrl-C: the finally below stops every server, haproxy and PostgreSQL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n_items = args.items or (20_000 if args.quick else 100_000)
    rate_s, sat_s = (5, 5) if args.quick else (20, 15)
    n_clips = 4 if args.quick else 12
    ingest_rounds = 2 if args.quick else 3
    follow_probes = 10
    print(f"machine: {machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    data = args.keep or tmp / "data"
    processes: list[subprocess.Popen[bytes]] = []
    cluster: Any = None
    logs: dict[str, Path] = {}
    log_problems: dict[str, list[str]] = {}
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
        seconds = fill_database(data / "db.sqlite", data, model_dir, base, n_items)
        print(f"{n_items:,} items inserted into the database directly: {seconds:.1f} s")

        env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            MMV_DATA_DIR=str(data),
            MMV_MODEL=str(model_dir),
            MMV_WORKERS="2",
            MMV_DEMO_CLIPS="0",
        )
        for name in ("MMV_DATABASE_URL", "MMV_LOCAL_DIR"):  # this server: SQLite, as ever
            env.pop(name, None)
        logs["service (SQLite)"] = tmp / "service.log"
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

        # -- past one machine: the same items in PostgreSQL, two replicas, haproxy
        cluster = postgres_cluster_class()(prefix="bench-pg-")
        t = time.perf_counter()
        cluster.start()
        pg_url = cluster.create_database("bench")
        print(f"PostgreSQL ({cluster.bindir}) started in {time.perf_counter() - t:.1f} s")
        pg_data = tmp / "pg-data"  # never the SQLite server's (a replica tidies media/)
        seconds = fill_database(pg_url, pg_data, model_dir, base, n_items)
        print(
            f"{n_items:,} items (the same vectors) inserted into PostgreSQL, then VACUUM "
            f"ANALYZE: {seconds:.1f} s"
        )
        replica_env = dict(env, MMV_DATA_DIR=str(pg_data), MMV_DATABASE_URL=pg_url)
        replicas: list[tuple[subprocess.Popen[bytes], Path, int]] = []
        t = time.perf_counter()
        for i in (1, 2):  # started together, as a deployment would
            replica_port = free_port()
            log = logs[f"replica {i} (PostgreSQL)"] = tmp / f"replica-{i}.log"
            process = launch(
                [sys.executable, "-m", "service"],
                dict(
                    replica_env,
                    MMV_PORT=str(replica_port),
                    MMV_LOCAL_DIR=str(tmp / f"local-{i}"),
                ),
                log,
            )
            processes.append(process)
            replicas.append((process, log, replica_port))
        for process, log, replica_port in replicas:
            wait_ready(process, log, f"http://127.0.0.1:{replica_port}/readyz", 600)
        print(f"two replicas ready (each built its indexes) in {time.perf_counter() - t:.1f} s")
        r1_url, r2_url = (f"http://127.0.0.1:{p}" for _, _, p in replicas)
        logs["haproxy"] = tmp / "haproxy.log"
        proxy, proxy_url = start_haproxy(tmp, [p for _, _, p in replicas])
        processes.append(proxy)
        print(f"haproxy ({tmp / 'haproxy.cfg'}): both replicas in")
        scale = compare_search(
            {"sqlite": service_url, "replica": r1_url, "proxy": proxy_url}, rate_s, sat_s
        )
        for name, r in scale.items():
            shown = {k: round(v, 2) for k, v in r.items() if not isinstance(v, list)}
            print(f"{name}: {json.dumps(shown)}")
        follow = follow_delay(r1_url, r2_url, follow_probes)
        print("follow delays (s): " + ", ".join(f"{d:.3f}" for d in follow["delays"]))
        stop(proxy)
        stop(replicas[1][0])  # uploads below: one server on each database

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

        # Uploads, SQLite server against replica 1 alone, the same clips to each; one
        # clip first to each, untimed (replica 1's media processes have not worked yet).
        both = make_clips(tmp / "clips-d", n_clips * ingest_rounds + 1, speech=False, offset=300)
        for url in (service_url, r1_url):
            ingest(url, both[:1], 1, transcript=True)
        uploads = compare_ingest(
            {"sqlite": service_url, "postgres": r1_url}, both[1:], ingest_rounds
        )
        for name, r in uploads.items():
            print(f"uploads {name}: {r['clips']} clips, {r['clips_per_s']:.2f} clips/s")
    finally:
        for p in processes:
            stop(p)
        if cluster is not None:
            cluster.stop()
        for name, path in logs.items():
            if path.is_file():
                text = path.read_text(errors="replace")
                hits = re.findall(PROBLEM, text, re.M)
                if hits:
                    log_problems[name] = hits
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

    cores = os.cpu_count()
    print()
    print(
        f"Past one machine: HTTP text -> audio search, {n_items:,} items, 32 clients; the "
        f"load generator, haproxy and every server share the same {cores} cores"
    )
    print(
        "| server | database | achieved req/s at 512 offered | p50 ms | p99 ms | errors "
        "| saturation req/s | × SQLite server |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base_rps = scale["sqlite"]["saturation_rps"]
    for name, db, key in (
        ("one server (baseline, the service row above)", "SQLite", "sqlite"),
        ("one replica, addressed directly (replica 2 idle)", "PostgreSQL", "replica"),
        ("two replicas behind haproxy, round robin", "PostgreSQL", "proxy"),
    ):
        r = scale[key]
        print(
            f"| {name} | {db} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['errors']:.0f} | {r['saturation_rps']:.0f} | "
            f"{r['saturation_rps'] / base_rps:.2f} |"
        )
    two_vs_one = scale["proxy"]["saturation_rps"] / scale["replica"]["saturation_rps"]
    print(f"saturation throughput, two replicas behind the proxy / one replica: {two_vs_one:.2f}×")
    print(
        f"Notes: this machine has {cores} cores and the load generator, the proxy and "
        "every server run on them, so a second replica brings no CPU of its own: it can "
        "only use what one replica leaves idle (one process is held to about a core by its "
        "event loop and the GIL), and the proxy takes some. The target is therefore that "
        "the proxy and the second replica cost little (≥ "
        f"{REPLICA_GOALS['replicas']:g}× one replica's saturation req/s), not that they "
        "scale. Each replica answers searches from its own memory, so with cores (or a "
        "machine) per replica the same setup scales with replicas; that is not measured "
        "here. Saturation: wrk -t1 -c32, 3 rounds alternating the three servers, medians; "
        "at 512 req/s offered: 2 rounds, samples pooled."
    )
    print(
        f"follow delay ({follow['n']} text items uploaded through replica 1, each until a "
        "search on replica 2 finds it, polled every 10 ms): median "
        f"{1000 * follow['p50_s']:.0f} ms after the 201 (max {1000 * follow['max_s']:.0f} "
        f"ms), {1000 * follow['p50_from_send_s']:.0f} ms from sending the upload"
    )
    print()
    n_up = uploads["sqlite"]["clips"]
    print(
        f"Uploads of 10 s clips with sound over HTTP (wait=true, 4 clients, transcript "
        f"supplied): the same {n_up} clips to each server, {ingest_rounds} alternating rounds"
    )
    print("| server | database | clips/s | × SQLite | decode | embed | store | index | probe |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, db, key in (
        ("one server (baseline)", "SQLite", "sqlite"),
        ("replica 1 alone (replica 2 and haproxy stopped)", "PostgreSQL", "postgres"),
    ):
        r = uploads[key]
        cells = " | ".join(
            f"{100 * r['shares'].get(k, 0):.0f}%"
            for k in ("decode", "embed", "store", "index", "probe")
        )
        ratio = r["clips_per_s"] / uploads["sqlite"]["clips_per_s"]
        print(f"| {name} | {db} | {r['clips_per_s']:.2f} | {ratio:.2f} | {cells} |")
    pg_vs_sqlite = uploads["postgres"]["clips_per_s"] / uploads["sqlite"]["clips_per_s"]
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
    print(
        verdict(
            "replicas_2_proxy_vs_1_saturation", two_vs_one, REPLICA_GOALS["replicas"], "×", True
        )
    )
    print(verdict("follow_delay_median", follow["p50_s"], REPLICA_GOALS["follow_s"], " s", False))
    print(
        verdict("uploads_postgres_vs_sqlite", pg_vs_sqlite, REPLICA_GOALS["ingest_pg"], "×", True)
    )
    for name, hits in log_problems.items():
        print(f"log of {name}: {len(hits)} error lines, e.g. {hits[0].strip()[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
