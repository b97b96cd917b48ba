"""Admission control and free disk, through a real `python -m service` on 127.0.0.1:
503 `overloaded` past MMV_MAX_UPLOADS_IN_FLIGHT / MMV_MAX_EXAMPLE_SEARCHES_IN_FLIGHT
(before the body is read), and 507 `insufficient_storage` when an upload cannot fit
(declared) or the disk fills while it streams (a real ENOSPC, from a small tmpfs as the
data directory where this machine lets the tests mount one). Nothing half-written is
left, and the server keeps serving.

SQLite only: every refusal here comes before storage is touched (no row is written
before the whole file is on disk), and on SQLite the database lives on the full disk
itself, the harder case; on PostgreSQL it would start another server for the same path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_server import Server, assert_error, running_server, wait_until

MB = 1024 * 1024
TMPFS_MB = 16  # the model version copied in takes ~7 MB of it


@pytest.fixture(scope="module", autouse=True)
def _sqlite_only(e2e_database: str) -> None:
    if e2e_database != "sqlite":
        pytest.skip("refused before storage is touched: tested on SQLite (see docstring)")


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """A TMPFS_MB tmpfs for the data directory, or None where mounting is not allowed."""
    folder = tmp_path_factory.mktemp("small-disk") / "data"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def busy_server(
    tmp_path_factory: pytest.TempPathFactory, random_model: Path, small_disk: Path | None
) -> Iterator[Server]:
    """One slot per kind of work; no reserve of free disk (so a full disk fails at the
    write, ENOSPC) and no upload cap (so only the disk bounds an upload)."""
    d = tmp_path_factory.mktemp("admission")
    with running_server(
        small_disk or d / "data",
        random_model,
        d / "server.log",
        MMV_MAX_UPLOADS_IN_FLIGHT="1",
        MMV_MAX_EXAMPLE_SEARCHES_IN_FLIGHT="1",
        MMV_MIN_FREE_DISK_MB="0",
        MMV_MAX_UPLOAD_MB=str(10**9),
        MMV_ASR="false",
    ) as s:
        yield s


def host_port(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def start_request(server: Server, route: str, length: int, expect: bool = False) -> socket.socket:
    """A multipart POST's head, its body held back. With `expect` (Expect: 100-continue)
    this waits for the server's "100 Continue": the app has started reading the body, so
    the request holds its slot."""
    s = socket.create_connection(host_port(server), timeout=30)
    head = (
        f"POST {route} HTTP/1.1\r\nHost: {server.url[7:]}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        + ("Expect: 100-continue\r\n" if expect else "")
        + f"Content-Length: {length}\r\n\r\n"
    )
    s.sendall(head.encode())
    if expect:
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
    return s


def answer_of(s: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body of the answer on `s` (read to its end)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    while len(body) < int(headers["content-length"]):
        body += s.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


def leftovers(server: Server) -> list[str]:
    folders = [server.data_dir / "tmp", server.data_dir / "media"]
    return [str(p) for folder in folders for p in folder.rglob("*") if p.is_file()]


def item_count(client: httpx.Client) -> int:
    r = client.get("/v1/items", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


@pytest.mark.parametrize(
    "route", ["/v1/items", "/v1/search/upload"], ids=["uploads", "example-searches"]
)
def test_work_past_the_bound_is_503_before_its_body(busy_server: Server, route: str) -> None:
    holder = start_request(busy_server, route, MB, expect=True)  # takes the one slot
    try:
        # The head alone: the answer comes before any of the body is read.
        with start_request(busy_server, route, MB) as s:
            status, headers, body = answer_of(s)
        assert status == 503, body
        assert body["error"]["code"] == "overloaded", body
        assert int(headers["retry-after"]) > 0
        with httpx.Client(base_url=busy_server.url, timeout=30) as client:
            r = client.get("/v1/search", params={"q": "red", "target": "text"})
            assert r.status_code == 200, r.text  # other work goes on
    finally:
        holder.close()  # the client goes away: its slot and temporary file go too
    with httpx.Client(base_url=busy_server.url, timeout=30) as client:

        def slot_free() -> bool:
            r = client.post(route, files={"file": ("x.bin", os.urandom(2000))})
            return r.status_code != 503

        wait_until(slot_free, 30, "the slot is given back when its client goes away")
        wait_until(lambda: not leftovers(busy_server), 30, "no temporary file left")


def test_an_upload_that_cannot_fit_is_507_before_its_body(busy_server: Server) -> None:
    """A Content-Length larger than the free disk: refused at once (the free-disk check
    before the body, the path a threshold of MMV_MIN_FREE_DISK_MB also takes)."""
    with httpx.Client(base_url=busy_server.url, timeout=30) as client:
        before = item_count(client)
        with start_request(busy_server, "/v1/items", 10**15) as s:
            status, _, body = answer_of(s)
        assert status == 507 and body["error"]["code"] == "insufficient_storage", body
        assert item_count(client) == before
    assert not leftovers(busy_server)


def test_a_disk_that_fills_during_an_upload_is_507_and_nothing_is_left(
    busy_server: Server, small_disk: Path | None, media: dict[str, Path]
) -> None:
    """A real ENOSPC at the write: the upload streams (chunked, no Content-Length) into a
    data directory on a TMPFS_MB tmpfs until the disk is full."""
    if small_disk is None:
        pytest.skip("mounting a tmpfs is not allowed here (needs root); the 507 before "
                    "the body is tested above")  # fmt: skip
    bigger_than_the_disk = os.urandom(TMPFS_MB * MB)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        + bigger_than_the_disk
        + b"\r\n--b--\r\n"
    )

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    with httpx.Client(base_url=busy_server.url, timeout=60) as client:
        before = item_count(client)
        for route in ("/v1/items", "/v1/search/upload"):
            r = client.post(route, content=chunks(), headers=headers)
            assert_error(r, 507, "insufficient_storage")
            assert not leftovers(busy_server), "the partial upload was left on disk"
            assert item_count(client) == before
        assert "disk is full" in busy_server.log()
        # Still serving, the database on the same disk included: a real upload.
        with media["picture"].open("rb") as f:
            r = client.post("/v1/items", files={"file": ("p.png", f, "image/png")})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "ready"
        assert item_count(client) == before + 1
    assert len(leftovers(busy_server)) == 1, "one media file: the picture's"
