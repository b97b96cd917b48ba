"""service/http_protocol.py fed bytes directly: what it keeps of an over-long head (the
memory bound), and the time bound on dropping a body after an answer. The behaviour
through a real server is tested in tests/e2e/test_e2e_http_limits.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from service import http_protocol
from service.http_protocol import MAX_HEADER_BYTES, MAX_URL_BYTES, ContractHttpProtocol

CHUNK = 64 * 1024


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("no request should reach the app")


@pytest.fixture
def connection() -> Iterator[tuple[ContractHttpProtocol, FakeTransport, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    config = Config(app=_app, http=ContractHttpProtocol, log_config=None)
    protocol = ContractHttpProtocol(config, ServerState(), {}, _loop=loop)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    yield protocol, transport, loop
    loop.close()


def feed(protocol: ContractHttpProtocol, data: bytes) -> None:
    for start in range(0, len(data), CHUNK):
        protocol.data_received(data[start : start + CHUNK])


def answer(transport: FakeTransport) -> tuple[bytes, dict[str, Any]]:
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


def test_a_1_mb_url_is_kept_only_up_to_the_bound(connection: Any) -> None:
    protocol, transport, _ = connection
    feed(protocol, b"GET /v1/search?q=" + b"a" * (1024 * 1024) + b" HTTP/1.1\r\n\r\n")
    assert len(protocol.url) <= MAX_URL_BYTES
    status, body = answer(transport)
    assert status.startswith(b"HTTP/1.1 414 ")
    assert body["error"]["code"] == "uri_too_long"
    assert transport.eof and not transport.closed  # what the client still sends is read


def test_a_1_mb_header_is_refused_after_at_most_a_chunk_past_the_bound(connection: Any) -> None:
    protocol, transport, _ = connection
    fed = 0
    data = b"GET / HTTP/1.1\r\nX-Big: " + b"b" * (1024 * 1024)
    for start in range(0, len(data), CHUNK):
        if transport.written:
            break
        protocol.data_received(data[start : start + CHUNK])
        fed += CHUNK
    assert fed <= MAX_HEADER_BYTES + 2 * CHUNK  # the rest was never parsed (or held)
    status, body = answer(transport)
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert body["error"]["code"] == "headers_too_large"
    written = len(transport.written)
    feed(protocol, b"b" * (1024 * 1024))  # dropped, answered once
    assert len(transport.written) == written


def test_dropping_input_after_an_answer_is_bounded_in_bytes_and_time(
    connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    protocol, transport, loop = connection
    monkeypatch.setattr(http_protocol, "DRAIN_MAX_S", 0.05)
    feed(protocol, b"NOT HTTP\r\n\r\n")
    assert answer(transport)[0] == b"HTTP/1.1 400 Bad Request"
    assert not transport.closed
    loop.run_until_complete(asyncio.sleep(0.2))  # a client that sends nothing more
    assert transport.closed

    protocol.connection_made(transport)  # type: ignore[arg-type]
    transport.closed = False
    feed(protocol, b"NOT HTTP\r\n\r\n")
    feed(protocol, b"x" * (http_protocol.DRAIN_MAX_BYTES + CHUNK))  # a client that goes on
    assert transport.closed


def test_a_head_that_trickles_in_is_answered_408_and_closed(
    connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris: a client sending its headers a byte at a time would hold the connection
    forever (uvicorn's keep-alive timer stops at the head's first byte)."""
    protocol, transport, loop = connection
    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT_S", 0.1)
    feed(protocol, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for _ in range(4):
        feed(protocol, b"X")  # a byte now and then: never a whole head
        loop.run_until_complete(asyncio.sleep(0.04))
    status, body = answer(transport)
    assert status.startswith(b"HTTP/1.1 408 ")
    assert body["error"]["code"] == "request_timeout"
    assert transport.closed
