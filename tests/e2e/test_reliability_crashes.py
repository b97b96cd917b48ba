"""Crashes (issue 21, must have 3): real servers SIGKILLed mid-work, restarted on the
same data directory, and then everything acknowledged is there and nothing else is.

- Ingestion: clients upload (wait=true and wait=false, sounds, pictures and texts)
  while the API is killed at a seeded random moment, round after round. After each
  restart every upload that got a 2xx is present, becomes ready, is found first by its
  own stored vector, and its media is byte-identical; and no orphan exists: media files
  are exactly the items', no vector belongs to an item that is gone or not ready, and
  each index holds exactly the ready items of its modality.
- A switch of model versions killed at seeded moments (embedding, indexing, the swap,
  the save right after it, the shutdown's save): after a restart the service serves one
  whole version, and finishes the switch. That a SIGKILL mid-write never leaves a
  torn index file is tested at the indexer's level, deterministically, by
  tests/indexer/crash_writer.py (test_index_store.py); here it is the service's whole
  start-up path that must cope.
- The training worker killed mid-training and mid-evaluation: the active model is
  untouched, and the job says what happened once its lease lapses.

`make test` runs 3 ingestion rounds on SQLite and 1 on PostgreSQL, and the switch kills
on SQLite; MMV_TEST_SOAK=1 (`make soak`) runs 20 rounds on each, the switch kills on
both, and the worker kills (a first job decodes every clip: minutes).
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import signal
import struct
import threading
import time
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import e2e_server
import httpx
import numpy as np
import pytest
from conftest import SOAK, VOCABULARY
from e2e_server import Server, start_server, wait_until

from service.storage import Storage

pytestmark = pytest.mark.slow

INGEST_ROUNDS = {"sqlite": 20 if SOAK else 3, "postgresql": 20 if SOAK else 1}
CLIENTS = 3
KILL_AFTER_S = (0.2, 2.5)  # the seeded moment of each kill, after the clients start


# -- media made here, unique per upload (ffmpeg per file would cost more than a round) --
def wav_bytes(rng: random.Random, seconds: float = 0.6, rate: int = 16000) -> bytes:
    """A short mono 16-bit wav of a random tone under noise."""
    t = np.arange(int(seconds * rate)) / rate
    hz = rng.uniform(200, 2000)
    noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(len(t))
    samples = 0.5 * np.sin(2 * np.pi * hz * t) + 0.1 * noise
    pcm = (np.clip(samples, -1, 1) * 32000).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def png_bytes(rng: random.Random, width: int = 40, height: int = 30) -> bytes:
    """A small RGB png of random blocks."""
    gen = np.random.default_rng(rng.getrandbits(32))
    blocks = gen.integers(0, 256, (height // 10 + 1, width // 10 + 1, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((10, 10, 1), np.uint8))[:height, :width]
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# -- what the clients were told ---------------------------------------------------------
@dataclass
class Sent:
    kind: str  # audio | image | text
    payload: bytes  # the file's bytes, or the text (utf-8)
    wait: bool
    status: int = 0  # 0: no answer (killed mid-request)
    item_id: str | None = None

    @property
    def acknowledged(self) -> bool:
        return 200 <= self.status < 300 and self.item_id is not None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


@dataclass
class Ledger:
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # answers no client should get
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent: Sent) -> None:
        with self.lock:
            self.sent.append(sent)

    def acknowledged(self) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if s.acknowledged]


def client_loop(url: str, rng: random.Random, ledger: Ledger, stop: threading.Event) -> None:
    """Upload until the server dies: sounds, pictures and texts, wait true and false."""
    with httpx.Client(base_url=url, timeout=30.0) as c:
        while not stop.is_set():
            kind = rng.choice(("audio", "image", "text"))
            wait = rng.random() < 0.5
            if kind == "text":
                # Words the random model knows: other words all embed alike.
                words = rng.choices(VOCABULARY.split(), k=6)
                sent = Sent(kind, " ".join(words).encode(), True)
            else:
                data = wav_bytes(rng) if kind == "audio" else png_bytes(rng)
                sent = Sent(kind, data, wait)
            ledger.add(sent)
            try:
                if kind == "text":
                    r = c.post("/v1/items/text", json={"text": sent.payload.decode()})
                else:
                    name = "u.wav" if kind == "audio" else "u.png"
                    r = c.post("/v1/items", params={"wait": str(wait).lower(), "asr": "false"},
                               files={"file": (name, sent.payload)})  # fmt: skip
            except httpx.HTTPError:
                return  # the server is gone: this one is in doubt (no answer)
            sent.status = r.status_code
            if r.is_success:
                sent.item_id = r.json()["id"]
            elif r.status_code != 503:  # 503 while starting or stopping: a clear "retry"
                ledger.errors.append(f"{kind} upload answered {r.status_code}: {r.text}")


# -- the checks after a restart -----------------------------------------------------------
def database_of(data_dir: Path) -> str | Path:
    db = e2e_server.database_for
    return db(data_dir) if db is not None else data_dir / "db.sqlite"


def settle(storage: Storage, ledger: Ledger) -> None:
    """Once nothing is processing (uploads accepted with 202, and those killed before
    their answer, finish after the restart): every acknowledged upload is there, ready,
    with what was sent. One query for all of them; HTTP checks follow for the new ones."""
    wait_until(lambda: not storage.items.count_by_status().get("processing"), 60,
               "every item left processing is finished")  # fmt: skip
    rows = storage.db.connection().execute("SELECT id, status, content_hash, text FROM items")
    stored = {r[0]: (r[1], r[2], r[3]) for r in rows}
    for sent in ledger.acknowledged():
        assert sent.item_id in stored, f"acknowledged item {sent.item_id} is lost"
        status, content_hash, text = stored[sent.item_id]
        # None of these inputs may fail: each is a valid file (or text).
        assert status == "ready", (sent.item_id, status)
        if sent.kind == "text":
            assert text == sent.payload.decode()
        else:
            assert content_hash == sent.sha256


def check_served(c: httpx.Client, storage: Storage, sents: list[Sent]) -> None:
    """Found first by its own stored vector; its media byte-identical to what was sent."""
    version = c.get("/readyz").json()["model_version"]
    for sent in sents:
        item = c.get(f"/v1/items/{sent.item_id}").json()
        assert item["status"] == "ready", item
        space = "vat" if sent.kind == "text" else "va"
        row = storage.items.get(item["id"])
        assert row is not None
        vector = storage.embeddings.get(row.seq, version, space, sent.kind)
        assert vector is not None, f"ready item {item['id']} has no {space}/{sent.kind} vector"
        r = c.post("/v1/search", json={"query": {"vector": vector.tolist(), "space": space},
                                       "target": sent.kind, "k": 10})  # fmt: skip
        assert r.status_code == 200, r.text
        hits = r.json()["results"]
        # First (a tie with an item of the very same vector, the same text twice, aside).
        best = [h["item"]["id"] for h in hits if h["score"] >= hits[0]["score"] - 1e-5]
        assert hits[0]["score"] > 0.999 and item["id"] in best, (item, hits[:3])
        if sent.kind != "text":
            media = c.get(f"/v1/items/{item['id']}/media")
            assert media.status_code == 200
            assert hashlib.sha256(media.content).hexdigest() == sent.sha256


def orphans(c: httpx.Client, storage: Storage, data_dir: Path) -> dict[str, Any]:
    """Everything that should not exist: each value must be empty (or zero)."""
    conn = storage.db.connection()
    statuses = dict(conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall())
    ready_media = (
        "SELECT content_hash FROM items WHERE content_hash IS NOT NULL AND status = 'ready'"
    )
    hashes = {r[0] for r in conn.execute(ready_media)}
    files = {p.name for p in (data_dir / "media").iterdir()}
    unowned = conn.execute(
        "SELECT COUNT(*) FROM embeddings e WHERE NOT EXISTS (SELECT 1 FROM items i"
        " WHERE i.seq = e.item_seq AND i.status = 'ready')"
    ).fetchone()[0]
    ready = c.get("/readyz").json()
    version, counts = ready["model_version"], ready["indexes"]
    wrong_counts = {}
    for name, n in counts.items():
        space, modality = name.split("/")
        if modality.endswith("_segments"):
            expected = 0  # nothing here is long enough to have segments
        else:
            expected = conn.execute(
                "SELECT COUNT(*) FROM items i JOIN embeddings e ON e.item_seq = i.seq"
                " WHERE i.status = 'ready' AND e.version = ? AND e.space = ? AND e.modality = ?",
                (version, space, modality),
            ).fetchone()[0]
            ready_of_modality = conn.execute(
                "SELECT COUNT(*) FROM items WHERE status = 'ready' AND modalities LIKE ?",
                (f'%"{modality}"%',),
            ).fetchone()[0]
            if space == "vat" or modality != "text":
                assert expected == ready_of_modality, (name, expected, ready_of_modality)
        if n != expected:
            wrong_counts[name] = (n, expected)
    return {
        "not ready": {s: n for s, n in statuses.items() if s != "ready"},
        "media files no ready item names": sorted(files - hashes),
        "ready items without their media file": sorted(hashes - files),
        "vectors of items gone or not ready": unowned,
        "index counts (found, ready items)": wrong_counts,
    }


def assert_no_orphans(c: httpx.Client, storage: Storage, data_dir: Path) -> None:
    found = orphans(c, storage, data_dir)
    assert not any(found.values()), found


@pytest.fixture
def storage_of() -> Iterator[Any]:
    opened: list[Storage] = []

    def open_(data_dir: Path) -> Storage:
        opened.append(Storage(database_of(data_dir)))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


# 20 rounds on PostgreSQL take ~12 minutes on 2 cores (a restart there is slower).
@pytest.mark.timeout(1800 if SOAK else 300)
def test_sigkill_during_ingestion_loses_nothing_acknowledged_and_leaves_no_orphan(
    tmp_path: Path, random_model: Path, e2e_database: str, storage_of: Any
) -> None:
    rounds = INGEST_ROUNDS[e2e_database]
    rng = random.Random(21)
    data, log = tmp_path / "data", tmp_path / "server.log"
    ledger = Ledger()
    server: Server | None = None
    storage: Storage | None = None
    started = time.monotonic()
    survived = 0
    checked: list[Sent] = []
    spent = {"start": 0.0, "check": 0.0, "ingest": 0.0}  # where a round's time goes
    try:
        for n in range(rounds + 1):
            t = time.monotonic()
            server = start_server(data, random_model, log)
            storage = storage or storage_of(data)
            spent["start"] += time.monotonic() - t
            t = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=60) as c:
                settle(storage, ledger)
                acked = ledger.acknowledged()
                # Served: those acknowledged since the last check, and at the end all.
                check_served(c, storage, acked if n == rounds else acked[len(checked) :])
                checked = acked
                assert_no_orphans(c, storage, data)
            spent["check"] += time.monotonic() - t
            if n:
                survived += 1
            if n == rounds:
                break
            t = time.monotonic()
            stop = threading.Event()
            clients = [
                threading.Thread(
                    target=client_loop,
                    args=(server.url, random.Random(rng.getrandbits(32)), ledger, stop),
                    daemon=True,
                )
                for _ in range(CLIENTS)
            ]
            for client in clients:
                client.start()
            time.sleep(rng.uniform(*KILL_AFTER_S))
            server.stop(signal.SIGKILL)
            stop.set()
            for client in clients:
                client.join(30)
                assert not client.is_alive()
            spent["ingest"] += time.monotonic() - t
    finally:
        if server is not None:
            server.stop()
    acked = ledger.acknowledged()
    in_doubt = [s for s in ledger.sent if s.status == 0]
    print(
        f"\n[{e2e_database}] crash rounds {rounds}, survived {survived}; uploads sent "
        f"{len(ledger.sent)}, acknowledged {len(acked)} "
        f"({sum(1 for s in acked if s.status == 202)} with 202), lost 0, "
        f"in doubt (no answer) {len(in_doubt)}, orphans 0; "
        f"{time.monotonic() - started:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in spent.items())
        + ")"
    )
    assert not ledger.errors, ledger.errors[:5]
    assert survived == rounds and len(acked) >= rounds  # the kills did land mid-ingestion


# -- a switch of model versions killed -------------------------------------------------
SWITCH_KILLS = 8 if SOAK else 3
SEEDED_TEXTS = 3000  # enough that embedding them with the new version takes a moment


def register_version(data_dir: Path, storage: Storage, name: str) -> str:
    """A second random model, recorded inactive as a training job records its version."""
    import json
    import shutil

    from e2e_server import make_random_model

    from model.atomic_files import publish_dir
    from service.model_versions import checkpoint_hash
    from service.storage import ModelRow, now_rfc3339

    source = make_random_model(data_dir.parent / name, VOCABULARY.split())
    version = f"{name}-{checkpoint_hash(source)[:10]}"
    target = data_dir / "models" / version
    publish_dir(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True), durable=True)
    config = json.loads((target / "config.json").read_text())
    storage.models.add(ModelRow(version, now_rfc3339(), config, {}, None, False))
    return version


def seed_texts(storage: Storage, version: str, dim: int, n: int) -> None:
    from service.storage import Embedding, NewItem

    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = VOCABULARY.split()
    storage.items.create_ready(
        [
            (
                NewItem(
                    kind="text",
                    modalities=["text"],
                    status="ready",
                    text=" ".join(words[(i * 7 + j) % len(words)] for j in range(i % 5 + 1)),
                ),
                [Embedding("vat", "text", vectors[i])],
            )
            for i in range(n)
        ],
        version,
    )


def serves_one_whole_version(
    c: httpx.Client, storage: Storage, data_dir: Path, versions: set[str]
) -> str:
    ready = c.get("/readyz").json()
    assert ready["model_version"] in versions, ready
    r = c.get("/v1/search", params={"q": "red ball", "target": "text"})
    assert r.status_code == 200 and r.json()["model_version"] == ready["model_version"], r.text
    assert len(r.json()["results"]) == 10
    assert_no_orphans(c, storage, data_dir)  # index counts == the ready items, per index
    return str(ready["model_version"])


@pytest.mark.postgres_in_soak  # switches on PostgreSQL: test_e2e_training, and make soak
def test_sigkill_during_a_switch_or_an_index_save_serves_one_whole_version(
    tmp_path: Path, random_model: Path, media: dict[str, Path], storage_of: Any
) -> None:
    rng = random.Random(2121)
    data, log = tmp_path / "data", tmp_path / "server.log"
    settings = {"MMV_SWITCH_POLL_S": "0.2", "MMV_ASR": "false"}
    server = start_server(data, random_model, log, **settings)
    storage = storage_of(data)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            first = c.get("/readyz").json()["model_version"]
            for name in ("clip", "tone", "picture"):
                r = c.post("/v1/items", files={"file": (media[name].name,
                                                        media[name].read_bytes())})  # fmt: skip
                assert r.status_code == 201, r.text
            text = c.post("/v1/items/text", json={"text": "red ball"}).json()
        dim = len(storage.embeddings.get(storage.items.get(text["id"]).seq, first, "vat", "text"))
        seed_texts(storage, first, dim, SEEDED_TEXTS)
        second = register_version(data, storage, "tiny-second")
        versions = {first, second}
        server.stop(signal.SIGKILL)  # the seeded items reach the indexes at the next start
        kills: list[str] = []
        points = ["embedding", "swap", "shutdown save"]
        points += [rng.choice(("embedding", "indexing", "swap", "shutdown save"))
                   for _ in range(SWITCH_KILLS - len(points))]  # fmt: skip
        wanted: str | None = None
        for point in [*points, None]:
            # Restarted after a kill: one whole version serves, and the switch that was
            # under way is finished (from the vectors already stored); then the next kill.
            server = start_server(data, random_model, log, **settings)
            with httpx.Client(base_url=server.url, timeout=60) as c:
                serving = serves_one_whole_version(c, storage, data, versions)
                if wanted is not None:
                    wait_until(lambda w=wanted: switched(c, w), 120, f"the switch to {wanted}")
                    serving = serves_one_whole_version(c, storage, data, versions)
                if point is None:
                    break
                wanted = next(iter(versions - {serving}))
                assert c.post(f"/v1/models/{wanted}/activate").status_code == 200
                kills.append(f"{point}: {kill_at(c, server, point, wanted, rng)}")
        print(f"\nswitch kills ({len(kills)}, all survived): " + "; ".join(kills))
    finally:
        server.stop()


def switched(c: httpx.Client, version: str) -> bool:
    ready = c.get("/readyz").json()
    return bool(ready["model_version"] == version and ready["reindex"] is None)


def kill_at(c: httpx.Client, server: Server, point: str, target: str, rng: random.Random) -> str:
    """SIGKILL the server at `point` of the switch to `target`; returns what /readyz said
    last (the stage the kill landed in)."""
    seen = "?"

    def reached() -> bool:
        nonlocal seen
        ready = c.get("/readyz").json()
        reindex = ready["reindex"] or {}
        seen = f"serving {ready['model_version']}, reindex {reindex.get('stage')} " \
               f"{reindex.get('done')}/{reindex.get('total')}"  # fmt: skip
        if point == "embedding":
            return reindex.get("stage") == "embedding" and reindex.get("done", 0) > 0
        if point == "indexing":
            return reindex.get("stage") not in (None, "loading", "waiting", "embedding") or (
                ready["model_version"] == target
            )
        # swap: the moment it serves the new version, the new indexes are being saved
        done = ready["model_version"] == target
        return done and (point == "swap" or not reindex)

    wait_until(reached, 120, f"the switch reaches {point}", every_s=0.01)
    if point == "shutdown save":  # a graceful stop saves the indexes: killed mid-way
        server.process.send_signal(signal.SIGTERM)
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        time.sleep(rng.uniform(0.0, 0.05))
    server.stop(signal.SIGKILL)
    return seen


# -- the training worker killed ------------------------------------------------------------
@pytest.mark.skipif(
    not SOAK,
    reason="make soak only: the first job decodes every clip for training (280 s of a "
    "2-step job of the tiny model on 2 busy cores; 8 s once cached); make test has "
    "test_e2e_training's killed-worker test (with the trained model)",
)
@pytest.mark.timeout(1800)
def test_a_worker_killed_mid_training_and_mid_evaluation_leaves_the_model_alone(
    tmp_path: Path, random_model: Path, e2e_database: str, storage_of: Any
) -> None:
    from e2e_server import make_clip, start_worker

    clips = tmp_path / "clips"
    clips.mkdir()
    pictures = ("testsrc", "smptebars", "testsrc2", "rgbtestsrc", "yuvtestsrc")
    settings = {"MMV_ASR": "false", "MMV_JOB_LEASE_S": "3", "MMV_WORKER_POLL_S": "0.3"}
    data = tmp_path / "data"
    server = start_server(data, random_model, tmp_path / "server.log", **settings)
    workers = []
    try:
        c = httpx.Client(base_url=server.url, timeout=60)
        for i in range(20):  # training needs 20 clips with pictures and sound
            clip = make_clip(clips / f"{i}.mp4", pictures[i % 5], 300 + 37 * i, seconds=2.0,
                             size="64x48")  # fmt: skip
            r = c.post("/v1/items", data={"transcript": f"the {VOCABULARY.split()[i]} clip"},
                       files={"file": (clip.name, clip.read_bytes())})  # fmt: skip
            assert r.status_code == 201, r.text
        old = c.get("/readyz").json()["model_version"]

        def worker(n: int) -> Any:
            workers.append(start_worker(data, Path("unused"), tmp_path / f"w{n}.log", **settings))
            return workers[-1]

        def job(job_id: str) -> dict[str, Any]:
            return c.get(f"/v1/training/jobs/{job_id}").json()

        # Mid-training: a long job, killed once it trains.
        first = worker(1)
        long_job = c.post("/v1/training/jobs", json={"steps": 5000, "activate": "auto"}).json()
        wait_until(lambda: job(long_job["id"])["progress"].get("step", 0) >= 1, 180,
                   "the long job trains")  # fmt: skip
        first.stop(signal.SIGKILL)
        second = worker(2)
        requeued = wait_until(lambda: (j := job(long_job["id"]))["attempts"] == 2 and j, 60,
                              "the long job is taken up again")  # fmt: skip
        assert "stopped responding" in requeued["error"] and "queued again" in requeued["error"]
        c.post(f"/v1/training/jobs/{long_job['id']}/cancel")
        cancelled = wait_until(lambda: (j := job(long_job["id"]))["status"] == "cancelled" and j,
                               120, "the long job is cancelled")  # fmt: skip
        assert cancelled["model_version"] is None

        # Mid-evaluation: the moment its training process has ended.
        short = c.post("/v1/training/jobs", json={"steps": 2, "activate": "auto"}).json()
        wait_until(lambda: f"job {short['id']}: training ended with status 0" in second.log(),
                   600, "the short job's training ends", every_s=0.01)  # fmt: skip
        second.stop(signal.SIGKILL)
        killed = job(short["id"])
        assert killed["metrics"] == {} and killed["model_version"] is None, killed  # evaluating
        third = worker(3)
        requeued = wait_until(lambda: (j := job(short["id"]))["attempts"] == 2 and j, 60,
                              "the short job is taken up again")  # fmt: skip
        assert "stopped responding" in requeued["error"], requeued
        assert c.get("/readyz").json()["model_version"] == old  # untouched so far
        done = wait_until(lambda: (j := job(short["id"]))["status"] not in ("queued", "running")
                          and j, 900, "the short job ends")  # fmt: skip
        assert done["status"] == "succeeded", (done, third.log()[-3000:])
        models = {m["version"]: m for m in c.get("/v1/models").json()["models"]}
        assert set(models) == {old, done["model_version"]}  # one version, whole, made once
        assert not (data / "runs" / long_job["id"]).exists()
    finally:
        for w in workers:
            w.stop(signal.SIGKILL)
        server.stop()


def test_an_item_a_switch_cannot_embed_keeps_being_found_and_is_repaired(
    tmp_path: Path, random_model: Path, media: dict[str, Path], storage_of: Any
) -> None:
    """A switch that cannot embed an item now (here its media file is unreadable) leaves
    it ready with the vectors it is found by, never failed; once the file is back, the
    repair embeds it with the new version, and so too an item another replica stored
    with the old version after the switch (PostgreSQL)."""
    data, log = tmp_path / "data", tmp_path / "server.log"
    settings = {"MMV_SWITCH_POLL_S": "0.2", "MMV_ASR": "false", "MMV_REPAIR_EVERY_S": "0.5"}
    server = start_server(data, random_model, log, **settings)
    storage = storage_of(data)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            first = c.get("/readyz").json()["model_version"]
            ids = {}
            for name in ("clip", "tone"):
                r = c.post("/v1/items", files={"file": (media[name].name,
                                                        media[name].read_bytes())})  # fmt: skip
                assert r.status_code == 201, r.text
                ids[name] = r.json()["id"]
            tone = storage.items.get(ids["tone"])
            assert tone is not None and tone.content_hash is not None
            # The tone's file unreadable for now, and nothing of it in the decode cache.
            hidden = tmp_path / "hidden-tone"
            (data / "media" / tone.content_hash).rename(hidden)
            for entry in (data / "cache").glob(f"*/*/{tone.content_hash[:32]}*"):
                shutil.rmtree(entry)
            second = register_version(data, storage, "tiny-second")
            assert c.post(f"/v1/models/{second}/activate").status_code == 200
            wait_until(lambda: switched(c, second), 120, f"the switch to {second}")

            after = c.get(f"/v1/items/{ids['tone']}").json()
            assert after["status"] == "ready", after  # the old code marked it failed
            assert storage.embeddings.get(tone.seq, first, "va", "audio") is not None
            assert storage.embeddings.get(tone.seq, second, "va", "audio") is None
            assert "left to the repair" in log.read_text()

            # What a replica still serving the old version stores meanwhile.
            dim = len(storage.embeddings.get(tone.seq, first, "vat", "audio"))
            seed_texts(storage, first, dim, 1)
            text_seq = storage.items.last_seq()

            hidden.rename(data / "media" / tone.content_hash)

            def repaired() -> bool:
                return all(
                    storage.embeddings.get(seq, second, "vat", modality) is not None
                    for seq, modality in ((tone.seq, "audio"), (text_seq, "text"))
                )

            wait_until(repaired, 60, "the repair embeds both items with the new version")

            def found(target: str, item_seq: int) -> bool:
                r = c.post("/v1/search", json={"query": {"text": "red ball"},
                                               "target": target, "k": 100})  # fmt: skip
                assert r.status_code == 200 and r.json()["model_version"] == second, r.text
                item = storage.items.get_by_seq(item_seq)
                return any(x["item"]["id"] == item.id for x in r.json()["results"])

            wait_until(lambda: found("audio", tone.seq), 30, "the tone found by the new version")
            wait_until(lambda: found("text", text_seq), 30, "the text found by the new version")
            assert c.get(f"/v1/items/{ids['tone']}").json()["status"] == "ready"
    finally:
        server.stop()
