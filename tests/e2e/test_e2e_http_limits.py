"""The request path at its edges, through a real `python -m service` (uvicorn, httptools,
uvloop) on 127.0.0.1: over-long request lines and headers, parse errors, and answers
given before the body was read (413), each in the contract's error shape and each seen
by ordinary clients rather than a connection reset (service/http_protocol.py).

Everything here happens in the HTTP layer, before storage is touched, so it runs on
SQLite only: on PostgreSQL it would start a second server to test the same bytes.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_server import Server, assert_error

MB = 1024 * 1024
BOUNDARY = "edge-of-the-request-path"


@pytest.fixture(scope="module", autouse=True)
def _sqlite_only(e2e_database: str) -> None:
    """Before the module's server starts: nothing here depends on the database."""
    if e2e_database != "sqlite":
        pytest.skip("HTTP-layer behaviour, the same on either engine (tested on SQLite)")


def host_port(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def multipart(fields: dict[str, bytes], file: bytes) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + file
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def in_chunks(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends it chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_serving(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/v1/search", params={"q": "red ball", "target": "text"})
        assert r.status_code == 200, r.text


def test_an_over_long_request_line_is_414_in_the_contract_shape(server: Server) -> None:
    """httpx refuses URLs over 64 KB itself; http.client sends what it is given."""
    for size in (1 * MB, 70_000):
        conn = http.client.HTTPConnection(*host_port(server), timeout=30)
        conn.request("GET", "/v1/search?target=text&q=" + "a" * size)
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
        assert response.status == 414, body
        assert response.getheader("content-type") == "application/json"
        assert set(body) == {"error"} and body["error"]["code"] == "uri_too_long", body
        assert "POST /v1/search" in body["error"]["message"]
    # Under the bound, the app answers: a query over MMV_MAX_TEXT_CHARS is its 413.
    r = httpx.get(f"{server.url}/v1/search", params={"q": "a" * 60_000, "target": "text"})
    assert_error(r, 413, "too_large")
    assert_serving(server)
    assert "outside the versions" not in server.log()  # not uvicorn's own protocol


def test_over_large_headers_are_431_and_garbage_is_400_in_the_contract_shape(
    server: Server,
) -> None:
    r = httpx.get(f"{server.url}/healthz", headers={"X-Big": "b" * 200_000}, timeout=30)
    assert_error(r, 431, "headers_too_large")
    many = {f"X-H{i}": "v" * 100 for i in range(1000)}  # 100 KB in many small headers
    r = httpx.get(f"{server.url}/healthz", headers=many, timeout=30)
    assert_error(r, 431, "headers_too_large")
    with socket.create_connection(host_port(server), timeout=30) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert json.loads(body)["error"]["code"] == "invalid_request"
    assert_serving(server)


def _json_body(size: int) -> bytes:
    return json.dumps({"query": {"text": "x" * size}, "target": "text"}).encode()


# (name, route, body, content type, stream it chunked?, the code the answer carries).
# The server fixture caps uploads at 2 MB (its whole body at ~10 MB with the fields).
EARLY_ANSWERS: list[tuple[str, str, bytes, str, bool, str]] = [
    ("10 MB metadata field", "/v1/items",
     multipart({"metadata": b"m" * (10 * MB)}, b"x" * 1000), "multipart", False, "too_large"),
    ("8 MB JSON with Content-Length", "/v1/search", _json_body(8 * MB), "json", False,
     "too_large"),
    ("8 MB JSON chunked", "/v1/search", _json_body(8 * MB), "json", True, "too_large"),
    ("12 MB upload with Content-Length", "/v1/items", multipart({}, os.urandom(12 * MB)),
     "multipart", False, "too_large"),
    ("3 MB upload chunked", "/v1/items", multipart({}, os.urandom(3 * MB)), "multipart", True,
     "too_large"),
]  # fmt: skip
CONTENT_TYPES = {
    "multipart": f"multipart/form-data; boundary={BOUNDARY}",
    "json": "application/json",
}


def post_with_http_client(
    server: Server, route: str, content: bytes | Iterator[bytes], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """http.client (urllib's engine): unlike httpx, it does not read an answer after a
    failed write, so a reset while it sends is what its user sees."""
    conn = http.client.HTTPConnection(*host_port(server), timeout=60)
    try:
        conn.request("POST", route, body=content, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("client", ["httpx", "http.client"])
def test_answers_before_the_body_reach_the_client(server: Server, client: str) -> None:
    """The app answers 413 before it has read the body; the client, still sending, gets
    the answer, not a reset. With `Connection: close` (urllib always sends it; HTTP/1.0
    means it) the server closed at once, over unread bytes: a reset. httpx on a kept-alive
    connection, which reads the answer even after a failed write, is the other case."""
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for name, route, body, kind, chunked, code in EARLY_ANSWERS:
            headers = {"Content-Type": CONTENT_TYPES[kind]}
            content: Any = in_chunks(body) if chunked else body
            try:
                if client == "httpx":
                    r = http.post(route, content=content, headers=headers)
                    assert_error(r, 413, code)
                    continue
                headers["Connection"] = "close"
                status, answer = post_with_http_client(server, route, content, headers)
            except (httpx.TransportError, OSError) as exc:
                pytest.fail(f"{name} ({client}): {exc!r} instead of 413")
            assert status == 413 and answer["error"]["code"] == code, (name, answer)
    assert_serving(server)


def test_urllib_sees_the_413_of_a_10_mb_metadata_field(server: Server) -> None:
    """urllib always sends `Connection: close`."""
    _, route, body, kind, _, code = EARLY_ANSWERS[0]
    request = urllib.request.Request(
        server.url + route, data=body, headers={"Content-Type": CONTENT_TYPES[kind]}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["code"] == code


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
def test_a_body_sent_on_after_the_answer_is_cut_off(server: Server, connection: str) -> None:
    """A client that keeps sending after the 413 cannot hold the connection: the server
    reads and drops at most DRAIN_MAX_BYTES (32 MB) of it, then closes."""
    declared = 1024 * MB
    head = (
        f"POST /v1/search HTTP/1.1\r\nHost: {server.url[7:]}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n"
        f"Connection: {connection}\r\n\r\n"
    ).encode()
    chunk = b" " * MB
    sent = 0
    started = time.monotonic()
    with socket.create_connection(host_port(server), timeout=30) as s:
        s.sendall(head)
        answer = s.recv(65536)  # the answer comes before any of the body (Content-Length)
        assert answer.startswith(b"HTTP/1.1 413 "), answer
        with pytest.raises(OSError):  # reset or broken pipe once the server has closed
            while sent < 200 * MB:
                s.sendall(chunk)
                sent += len(chunk)
    # The kernel's socket buffers hold a few MB more than the server read.
    assert sent < 64 * MB, f"{sent / MB:.0f} MB accepted after the answer"
    assert time.monotonic() - started < 30
    assert_serving(server)


def whole_answer(s: socket.socket) -> bytes:
    """One HTTP answer: its head, then as much body as its Content-Length says (a single
    recv got the head alone when the body came in a second segment)."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := s.recv(65536)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)) and (chunk := s.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_an_upload_whose_body_stops_coming_is_cut_off_and_frees_its_slot(server: Server) -> None:
    """Only the request's head had a time limit: a client that sent a few bytes of its
    body and then nothing held an upload slot (and its temporary file) for good; a few
    dozen such made every upload 503."""
    body = multipart({}, b"x" * 4096)
    head = (
        f"POST /v1/items HTTP/1.1\r\nHost: {server.url[7:]}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(host_port(server), timeout=60) as s:
        s.sendall(head + body[:1000])  # then nothing more
        answer = whole_answer(s)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"request_timeout"' in answer and b"sent nothing for 10 s" in answer
    assert 9 < took < 40, took  # MMV_UPLOAD_IDLE_S=10 (tests/e2e/conftest.py)
    assert_serving(server)
