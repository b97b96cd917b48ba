"""Durability: a restart keeps items and results; a graceful stop finishes uploads in
flight; a hard kill loses nothing that was acknowledged.

One data directory goes through the three tests in order (each continues with the
server the previous one left running): four server starts instead of six.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_server import Server, make_clip, make_speech, start_server, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def life(tmp_path_factory: pytest.TempPathFactory, e2e_database: str) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("restart")
    state: dict[str, Any] = {"data": d / "data", "log": d / "server.log", "server": None}
    yield state
    if state["server"] is not None:
        state["server"].stop()


def snapshot(url: str, ids: dict[str, str]) -> dict[str, Any]:
    """Everything a user can see: the listing and a few searches (ids and scores)."""
    with httpx.Client(base_url=url, timeout=60.0) as c:
        listing = c.get("/v1/items", params={"limit": 1000}).json()["items"]
        searches = {}
        for name, body in {
            "text->audio": {"query": {"text": "red ball"}, "target": "audio"},
            "text->video": {"query": {"text": "wooden drum"}, "target": "video"},
            "video->audio": {"query": {"item_id": ids["clip"]}, "target": "audio"},
            "audio->video": {"query": {"item_id": ids["tone"]}, "target": "video"},
        }.items():
            r = c.post("/v1/search", json=body)
            assert r.status_code == 200, r.text
            searches[name] = [
                (hit["item"]["id"], round(hit["score"], 5)) for hit in r.json()["results"]
            ]
    return {"items": listing, "searches": searches}


def assert_clean_stop(server: Server) -> None:
    """SIGTERM, then a graceful shutdown to the end. uvicorn re-raises the signal once it
    has shut down, so the exit status is that of SIGTERM."""
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert '"msg": "stopped"' in server.log()


def in_flight(metrics: str) -> float:
    return float(re.search(r"^mmv_uploads_in_flight (\S+)$", metrics, re.M)[1])


def upload(url: str, path: Path, transcript: str | None = None, **params: str) -> httpx.Response:
    data = {"transcript": transcript} if transcript else {}
    with httpx.Client(base_url=url, timeout=120.0) as c:
        return c.post("/v1/items", params=params, data=data,
                      files={"file": (path.name, path.read_bytes())})  # fmt: skip


def test_restart_keeps_items_and_results(
    life: dict[str, Any], random_model: Path, media: dict[str, Path]
) -> None:
    data, log = life["data"], life["log"]
    server = start_server(data, random_model, log)
    try:
        ids = {}
        for name in ("clip", "clip2", "silent", "tone", "picture"):
            r = upload(server.url, media[name], transcript=f"the {name}")
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
        with httpx.Client(base_url=server.url, timeout=120.0) as c:
            assert c.post("/v1/items/text", json={"text": "red ball"}).status_code == 201
            gone = c.post("/v1/items/text", json={"text": "wooden drum"}).json()["id"]
            assert c.delete(f"/v1/items/{gone}").status_code == 204
        before = snapshot(server.url, ids)
    finally:
        assert_clean_stop(server)

    server = life["server"] = start_server(data, random_model, log)
    after = snapshot(server.url, ids)
    assert after == before
    assert gone not in {i["id"] for i in after["items"]}
    assert "loaded" in server.log()  # indexes came back from their files


def test_graceful_stop_finishes_uploads_in_flight(
    life: dict[str, Any], random_model: Path, tmp_path: Path
) -> None:
    speech = make_speech(tmp_path / "long-speech.wav", "one two three four five " * 3)
    background = make_clip(tmp_path / "bg.mp4", "testsrc2", 523)
    server = life["server"]
    answers: dict[str, httpx.Response] = {}

    def send() -> None:  # wait=true with speech recognition: takes a few seconds
        answers["sync"] = upload(server.url, speech)

    sender = threading.Thread(target=send)
    sender.start()
    queued = upload(server.url, background, wait="false")
    assert queued.status_code == 202, queued.text
    with httpx.Client(base_url=server.url) as c:
        deadline = time.monotonic() + 30
        while in_flight(c.get("/metrics").text) < 1:
            assert time.monotonic() < deadline, "the upload never arrived"
            time.sleep(0.05)
    assert_clean_stop(server)
    sender.join(timeout=60)
    assert answers["sync"].status_code == 201, answers["sync"].text
    synced = answers["sync"].json()
    assert synced["status"] == "ready"

    life["server"] = None
    server = life["server"] = start_server(life["data"], random_model, life["log"])
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        for item_id in (synced["id"], queued.json()["id"]):
            deadline = time.monotonic() + 60
            while (item := c.get(f"/v1/items/{item_id}").json())["status"] == "processing":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert item["status"] == "ready", item


def test_hard_kill_loses_nothing_acknowledged(
    life: dict[str, Any], random_model: Path, media: dict[str, Path]
) -> None:
    server = life["server"]
    r = upload(server.url, media["noise"], transcript="static")
    assert r.status_code == 201, r.text
    item = r.json()
    server.stop(signal.SIGKILL)  # no shutdown: the indexes were not saved since
    life["server"] = None

    server = life["server"] = start_server(life["data"], random_model, life["log"])
    assert "patched" in server.log() or "rebuilt" in server.log()
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        assert c.get(f"/v1/items/{item['id']}").json()["status"] == "ready"
        found = c.post("/v1/search", json={"query": {"item_id": item["id"]}, "target": "audio"})
        assert found.status_code == 200
        # The index was patched from the database: the item is found as a target too.
        hits = c.post("/v1/search/upload", data={"target": "audio"},
                      files={"file": ("n.wav", media["noise"].read_bytes())}).json()  # fmt: skip
        assert hits["results"][0]["item"]["id"] == item["id"]


def test_media_no_item_names_is_swept_at_start(tmp_path: Path, random_model: Path) -> None:
    # A crash between moving an upload into place and committing its row (or between
    # deleting a row and its file) left the file in DATA_DIR/media forever.
    data = tmp_path / "data"
    server = start_server(data, random_model, tmp_path / "a.log")
    try:
        clip = make_speech(tmp_path / "kept.wav", "a file that an item names")
        r = httpx.post(f"{server.url}/v1/items", files={"file": ("kept.wav", clip.read_bytes())},
                       timeout=120)  # fmt: skip
        assert r.status_code == 201, r.text
    finally:
        server.stop()
    media = data / "media"
    kept = {p.name for p in media.iterdir()}
    assert len(kept) == 1
    old, young = media / ("a" * 64), media / ("b" * 64)
    old.write_bytes(b"left by a crash")
    young.write_bytes(b"maybe an upload another process is committing")
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    server = start_server(data, random_model, tmp_path / "b.log")
    try:
        # A young one too: each removal holds the content hash's lock, which an upload
        # holds from moving its file into place to committing its row (service/reconcile.py).
        assert not old.exists() and not young.exists()
        assert {p.name for p in media.iterdir()} == kept
        item = httpx.get(f"{server.url}/v1/items/{r.json()['id']}/media", timeout=30)
        assert item.status_code == 200 and item.content == clip.read_bytes()
        assert re.search(r"removed \d media files no item names", server.log())
    finally:
        server.stop()


def test_an_empty_database_beside_old_media_leaves_them_alone(
    tmp_path: Path, random_model: Path
) -> None:
    # MMV_DATABASE_URL pointed at a new database, the data directory still full of the
    # old deployment's media: they are not leftovers of a crash, and must survive.
    media = tmp_path / "data" / "media"
    media.mkdir(parents=True)
    old = media / ("c" * 64)
    old.write_bytes(b"an upload of the deployment before")
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    server = start_server(tmp_path / "data", random_model, tmp_path / "a.log")
    try:
        assert old.exists()
        assert "has no items but" in server.log()
    finally:
        server.stop()


def test_items_left_processing_by_a_crash_are_finished_at_the_next_start(
    tmp_path: Path, random_model: Path, media: dict[str, Path]
) -> None:
    # A crash while uploads accepted with wait=false were being processed: the next
    # start takes them up. (It used to fail to start at all: the resumed items were
    # handed to the event loop from a thread that has none.)
    import e2e_server

    from service.storage import Storage

    data = tmp_path / "data"
    server = start_server(data, random_model, tmp_path / "a.log")
    try:
        with media["clip"].open("rb") as f:
            r = httpx.post(f"{server.url}/v1/items", files={"file": ("clip.mp4", f)}, timeout=120)
        assert r.status_code == 201, r.text
    finally:
        server.stop()
    db = e2e_server.database_for(data) if e2e_server.database_for else data / "db.sqlite"
    storage = Storage(db)
    with storage.db.transaction() as conn:  # as a SIGKILL mid-processing leaves it
        conn.execute("UPDATE items SET status = 'processing', processing_by = 'gone-1'")
    storage.close()
    server = start_server(data, random_model, tmp_path / "b.log")
    try:
        item = r.json()["id"]
        with httpx.Client(base_url=server.url, timeout=30) as c:
            ready = wait_until(lambda: c.get(f"/v1/items/{item}").json()["status"] == "ready",
                               60, "the item left processing is finished")  # fmt: skip
        assert ready
        # At start, not after the dead owner's heartbeat lapsed.
        assert "processing 1 uploads left unfinished by an earlier run" in server.log()
    finally:
        server.stop()


def seed_text_items(data_dir: Path, model_dir: Path, n: int) -> None:
    """`n` ready text items with random vectors, straight into the database the server
    will open, and no index files: its start-up builds the indexes from them."""
    import numpy as np
    from e2e_server import database_for

    from service.embedder import Embedder
    from service.model_versions import active_model_version
    from service.settings import Settings
    from service.storage import Embedding, NewItem, Storage

    data_dir.mkdir(parents=True)
    location = database_for(data_dir) if database_for else Settings(data_dir=data_dir).db_path
    storage = Storage(location)
    try:
        handle = active_model_version(str(model_dir), data_dir / "models", storage)
        assert handle is not None
        dim = Embedder.load(handle, "cpu").dim("vat")
        vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for start in range(0, n, 5000):
            storage.items.create_ready(
                [
                    (
                        NewItem(kind="text", modalities=["text"], text=f"seeded {i}"),
                        [Embedding("vat", "text", vectors[i])],
                    )
                    for i in range(start, min(n, start + 5000))
                ],
                handle.version,
            )
    finally:
        storage.close()


@pytest.mark.postgres_in_soak  # start-up order is engine-independent; seeding PG is slow
def test_liveness_answers_while_indexes_are_built_at_start(
    tmp_path: Path, random_model: Path
) -> None:
    """Start-up builds indexes from stored embeddings (a new replica, lost index files):
    minutes on a large collection. /healthz answers all along, so a liveness probe does
    not restart the server forever; /readyz and the model routes say it is starting."""
    import subprocess
    import sys

    from e2e_server import REPO, START_TIMEOUT_S, assert_error, free_port, server_env

    n = 5000
    data_dir = tmp_path / "data"
    seed_text_items(data_dir, random_model, n)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env=server_env(data_dir, random_model, port),
        )  # fmt: skip
    server = Server(url, process, log_path, data_dir)
    try:
        seen_starting = 0
        with httpx.Client(base_url=url, timeout=10.0) as c:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                assert process.poll() is None, server.log()[-3000:]
                assert time.monotonic() < deadline, server.log()[-3000:]
                try:
                    health = c.get("/healthz")
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                assert health.status_code == 200
                ready = c.get("/readyz")
                if ready.status_code == 200:
                    break
                assert ready.json()["error"]["message"].startswith("starting"), ready.text
                search = c.post("/v1/search", json={"query": {"text": "red"}, "target": "text"})
                if c.get("/readyz").status_code == 503:  # still starting after the search
                    error = assert_error(search, 503, "no_model")
                    assert "starting" in error["message"] and search.headers["retry-after"]
                    seen_starting += 1
                time.sleep(0.05)
            assert seen_starting > 0, "the server answered only once it was ready"
            assert ready.json()["indexes"]["vat/text"] == n
            r = c.post("/v1/search", json={"query": {"text": "red"}, "target": "text"})
            assert r.status_code == 200 and len(r.json()["results"]) == 10
    finally:
        server.stop()
