"""Moments (search inside long media) through a real `python -m service` with the
trained default model, beside the whole-file vectors of the same files in the same run.

1. Moment retrieval: long narrated recordings of distinct generated scenes (20 s each,
   one after another; tests/e2e/long_recording.py) are uploaded with their transcripts
   beside short distractor clips. For every scene its description is the query (text ->
   video, text -> audio): right when the first result is the scene's recording at a
   segment within one hop of the scene (the right stretch within ±1 segment). Baseline:
   a server with segments off (MMV_SEGMENT_S=0), where the recording can only be found
   as a whole: how often it comes first at all.
2. Ingestion speed: each recording's upload (wait=true, one at a time) in seconds of
   media per second of wall time (× real time), segmented against whole-file.
3. Search latency at the segment count of 100 hours of media (72,000 segments per
   space and modality at a 5 s hop): segment vectors are inserted into the database of
   a server (jittered copies of the recordings' real segment vectors, a synthetic
   "collection" of 1-hour items), the server builds its indexes from them at start, and
   sequential text -> audio searches are timed (p50, p99), beside the same server
   before the segments were added.

    .venv/bin/python bench/moments.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch and faiss load
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

import httpx
import numpy as np
from e2e_server import Server, running_server
from long_recording import Recording, covers, distinct_scenes, make_recording

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "default"
SCENE_S, SEGMENT_S, HOP_S = 20.0, 10.0, 5.0
HOURS = 100
GOALS = {"accuracy": 0.8, "realtime": 10.0, "p50_ms": 50.0}


def upload(c: httpx.Client, path: Path, transcript: Path | None) -> tuple[dict[str, Any], float]:
    data = {"transcript": transcript.read_text()} if transcript else {}
    t = time.perf_counter()
    r = c.post("/v1/items", params={"asr": "false"}, data=data,
               files={"file": (path.name, path.read_bytes())})  # fmt: skip
    r.raise_for_status()
    return r.json(), time.perf_counter() - t


def load(server: Server, recordings: list[Recording], corpus: Path, distractors: list) -> tuple:
    ids, seconds = [], []
    with httpx.Client(base_url=server.url, timeout=900.0) as c:
        for rec in recordings:
            item, took = upload(c, rec.path, rec.transcript)
            ids.append(item["id"])
            seconds.append(took)
        for row in distractors:
            transcript = corpus / row["transcript"] if row.get("transcript") else None
            upload(c, corpus / row["path"], transcript)
    return ids, seconds


def retrieval(
    server: Server, recordings: list[Recording], ids: list[str], hop_s: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"video": [0, 0], "audio": [0, 0]}  # [right stretch, first at all]
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        for rec, item_id in zip(recordings, ids, strict=True):
            for scene in rec.scenes:
                for target in ("video", "audio"):
                    body = {"query": {"text": scene.description}, "target": target, "k": 5}
                    top = c.post("/v1/search", json=body).json()["results"][0]
                    first = top["item"]["id"] == item_id
                    out[target][1] += first
                    out[target][0] += bool(
                        first and top["segment"] and covers(top["segment"], scene, hop_s)
                    )
    return out


def add_hours(data_dir: Path, hours: int, pool: dict[tuple[str, str], np.ndarray]) -> int:
    """A synthetic collection of 1-hour items with their segments, written straight into
    the database (the server is stopped): `hours` items, 720 segments each."""
    per_item = int(3600 / HOP_S)
    rng = np.random.default_rng(0)
    conn = sqlite3.connect(data_dir / "db.sqlite")
    version = conn.execute("SELECT version FROM models WHERE active = 1").fetchone()[0]
    with conn:
        for h in range(hours):
            cur = conn.execute(
                "INSERT INTO items (id, kind, status, content_hash, modalities, duration_s,"
                " metadata, created_at) VALUES (?, 'video', 'ready', ?, ?, 3600, '{}',"
                " '2026-12-06T00:00:00Z')",
                (f"it_hour{h:04d}", f"hour{h:04d}", json.dumps(["video", "audio"])),
            )
            item = cur.lastrowid
            for (space, modality), vectors in pool.items():
                whole = vectors[rng.integers(len(vectors))]
                conn.execute(
                    "INSERT INTO embeddings VALUES (?,?,?,?,?)",
                    (version, space, modality, item, whole.astype(np.float32).tobytes()),
                )
            first = None
            for k in range(per_item):
                seq = conn.execute(
                    "INSERT INTO segments (item_seq, start_s, end_s) VALUES (?,?,?)",
                    (item, k * HOP_S, k * HOP_S + SEGMENT_S),
                ).lastrowid
                first = first or seq
            for (space, modality), vectors in pool.items():
                picked = vectors[rng.integers(len(vectors), size=per_item)]
                picked = picked + rng.normal(0, 0.05, picked.shape)
                picked /= np.linalg.norm(picked, axis=1, keepdims=True)
                conn.executemany(
                    "INSERT INTO segment_embeddings VALUES (?,?,?,?,?)",
                    [(version, space, modality, first + k, picked[k].astype(np.float32).tobytes())
                     for k in range(per_item)],
                )  # fmt: skip
    conn.close()
    return hours * per_item


def real_segment_vectors(data_dir: Path) -> dict[tuple[str, str], np.ndarray]:
    conn = sqlite3.connect(data_dir / "db.sqlite")
    pool: dict[tuple[str, str], list[np.ndarray]] = {}
    for space, modality, blob in conn.execute(
        "SELECT space, modality, vector FROM segment_embeddings"
    ):
        pool.setdefault((space, modality), []).append(np.frombuffer(blob, dtype=np.float32))
    conn.close()
    return {key: np.stack(v) for key, v in pool.items()}


def latency(server: Server, queries: list[str], rounds: int) -> tuple[float, float]:
    times = []
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        for q in queries[:5]:  # warm-up
            c.get("/v1/search", params={"q": q, "target": "audio"})
        for n in range(rounds):
            q = queries[n % len(queries)]
            t = time.perf_counter()
            c.get("/v1/search", params={"q": q, "target": "audio"}).raise_for_status()
            times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 recording, 10 hours of segments")
    parser.add_argument(
        "--settings",
        default="10/5,5/2.5,20/10",
        help="segment/hop seconds to compare (the first is the one timed at scale)",
    )
    args = parser.parse_args()
    compared = [tuple(float(x) for x in pair.split("/")) for pair in args.settings.split(",")]
    n_recordings = 1 if args.quick else 3
    hours = 10 if args.quick else HOURS
    if not (MODEL / "weights.safetensors").is_file():
        print("models/default is not trained: run `make model` first")
        return 1
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; segment/hop s compared: "
        f"{args.settings}; scenes {SCENE_S:g} s"
    )
    from model.corpus import make_corpus, read_manifest

    with tempfile.TemporaryDirectory(prefix="bench-moments-") as scratch:
        root = Path(scratch)
        make_corpus(root / "corpus", 40 * n_recordings, seed=20261207, workers=2,
                    progress=False, n_audio=0, n_stills=0)  # fmt: skip
        rows = read_manifest(root / "corpus")
        scenes = distinct_scenes(rows, 8 * n_recordings)
        recordings = [
            make_recording(root / "corpus", scenes[8 * i : 8 * i + 8], root / f"rec{i}.mp4",
                           SCENE_S)
            for i in range(n_recordings)
        ]  # fmt: skip
        used = {r["id"] for r in scenes}
        distractors = [r for r in rows if r["id"] not in used][:12]
        media_s = sum(r.duration_s for r in recordings)
        print(f"{n_recordings} recordings of 8 scenes, {media_s:.0f} s of media; "
              f"{len(distractors)} distractor clips")  # fmt: skip

        results = {}
        runs = [
            (f"segments {seg:g} s / {hop:g} s", {"MMV_SEGMENT_S": str(seg),
                                                  "MMV_SEGMENT_HOP_S": str(hop)})
            for seg, hop in compared
        ] + [("whole file", {"MMV_SEGMENT_S": "0"})]  # fmt: skip
        for name, settings in runs:
            data = root / f"run{len(results)}"
            data.mkdir()
            with running_server(data / "data", MODEL, data / "server.log", MMV_WORKERS="2",
                                **settings) as server:  # fmt: skip
                ids, seconds = load(server, recordings, root / "corpus", distractors)
                hop = float(settings.get("MMV_SEGMENT_HOP_S", HOP_S))
                found = retrieval(server, recordings, ids, hop)
                queries = [s.description for r in recordings for s in r.scenes]
                base = latency(server, queries, 200)
                counts = httpx.get(f"{server.url}/readyz").json()["indexes"]
            results[name] = {"found": found, "seconds": seconds, "latency": base,
                             "counts": counts, "data": data}  # fmt: skip

        # Search at the segment count of `hours` hours of media.
        default = runs[0][0]
        data = results[default]["data"]
        pool = real_segment_vectors(data / "data")
        t = time.perf_counter()
        added = add_hours(data / "data", hours, pool)
        print(f"inserted {added:,} segments ({hours} h at a {HOP_S:g} s hop) per space and "
              f"modality in {time.perf_counter() - t:.0f} s")  # fmt: skip
        t = time.perf_counter()
        with running_server(data / "data", MODEL, data / "server2.log", MMV_WORKERS="2") as server:
            start_s = time.perf_counter() - t
            big = latency(server, queries, 300)
            counts = httpx.get(f"{server.url}/readyz").json()["indexes"]

    n_scenes = 8 * n_recordings
    print(
        "\n| server | text→video right stretch | text→audio right stretch | recording first "
        "(video / audio) | ingest × real time | search p50 / p99 ms |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        f = r["found"]
        speed = media_s / sum(r["seconds"])
        stretch_v = f"{f['video'][0]}/{n_scenes}" if name != "whole file" else "-"
        stretch_a = f"{f['audio'][0]}/{n_scenes}" if name != "whole file" else "-"
        print(f"| {name} | {stretch_v} | {stretch_a} | {f['video'][1]}/{n_scenes} / "
              f"{f['audio'][1]}/{n_scenes} | {speed:.1f} | {r['latency'][0]:.1f} / "
              f"{r['latency'][1]:.1f} |")  # fmt: skip
    print(f"| {default} + {hours} h ({counts.get('vat/audio_segments', 0):,} audio segments in "
          f"S_vat) | | | | | {big[0]:.1f} / {big[1]:.1f} |")  # fmt: skip
    print(f"\nthe server with {hours} h of segments opened (indexes built) in {start_s:.0f} s; "
          f"index sizes: {counts}")  # fmt: skip

    seg = results[default]
    accuracy = (seg["found"]["video"][0] + seg["found"]["audio"][0]) / (2 * n_scenes)
    realtime = media_s / sum(seg["seconds"])
    figures = {"accuracy": accuracy, "realtime": realtime, "p50_ms": big[0]}
    for name, goal in GOALS.items():
        holds = figures[name] <= goal if name == "p50_ms" else figures[name] >= goal
        op = "<=" if name == "p50_ms" else ">="
        print(f"target {name}: {figures[name]:.2f} (goal {op} {goal:g}) "
              f"{'HOLDS' if holds else 'MISSES'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
