"""The HTTP/1.1 edge: uvicorn's httptools protocol with bounded request heads, errors in
the contract's shape, and a lingering close.

Stock uvicorn (httptools) has three gaps at the edge of the API:
- What its parser refuses gets a plain-text 400 before the app runs, outside the
  contract's `{"error": {...}}` shape; a URL over 64 KB is one of them (httptools' URL
  parser keeps offsets in 16 bits), so a long query string read "Invalid HTTP request".
- A request's head is buffered without limit: a 1 GB URL or header is kept in memory
  (and the URL copied once per received chunk).
- A response that closes the connection (the client sent `Connection: close`, or spoke
  HTTP/1.0) closes it at once, even when the app answered before reading the body (413,
  401, 503, 507): the kernel answers the unread bytes with a reset, and a client still
  sending never reads the answer. On keep-alive connections the unread rest is read and
  dropped, but without a bound: an endless chunked body holds the connection forever.

Here a URL over MAX_URL_BYTES answers 414 `uri_too_long` and a head whose headers pass
MAX_HEADER_BYTES 431 `headers_too_large`, any other parse error 400 `invalid_request`,
each as JSON; and a request body the app did not read is read and dropped after the
answer, up to DRAIN_MAX_BYTES or DRAIN_MAX_S, then the connection closes.

Read against uvicorn 0.29.0 and 0.55.0 (uvicorn/protocols/http/httptools_impl.py, with
httptools 0.6-0.9). What is relied on: the parser callbacks `on_url`,
`on_headers_complete` (which creates `self.cycle`), `on_body`, `on_message_complete`;
`data_received` calling `send_400_response(msg)` on any `HttpParserError` (an exception
raised in a callback arrives as one); `on_response_complete`, which a cycle calls after
its last body message; a cycle's `transport` (write, close, is_closing) and
`response_complete`. `protocol_class()` uses this class only on uvicorn versions in
READ_AGAINST and otherwise falls back to uvicorn's own with a warning;
tests/e2e/test_e2e_http_limits.py checks the behaviour through a real server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.errors import HeadersTooLarge, InvalidRequest, UriTooLong, error_body

log = logging.getLogger("service.http")

# The longest URL (path and query string) parsed: httptools' URL parser cannot take one
# over 65,535 bytes anyway. Long text queries belong in the body of POST /v1/search.
MAX_URL_BYTES = 65_535
# The most bytes of header lines in one request head (browsers send a few KB).
MAX_HEADER_BYTES = 64 * 1024
# After an answer given before the body was read: how much more of that body is read
# and dropped, and for how long, so the client gets to read the answer.
DRAIN_MAX_BYTES = 32 * 1024 * 1024
DRAIN_MAX_S = 10.0
# How long a request's head (request line and headers) may take to arrive once it has
# begun: uvicorn's keep-alive timer stops at its first byte, so without this a client
# trickling one header byte at a time holds a connection forever (slowloris).
HEAD_TIMEOUT_S = 30.0

# uvicorn versions whose httptools protocol this was read against: [first, last].
READ_AGAINST = ((0, 29), (0, 55))


class _Refused(Exception):
    """Raised in a parser callback: parsing stops, send_400_response answers."""


class _LingeringTransport:
    """The transport a request's response cycle writes to. Its close() (a response that
    ends the connection) waits, bounded, for the rest of a request body the app did not
    read: see ContractHttpProtocol.close_after_body."""

    def __init__(self, protocol: ContractHttpProtocol, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._protocol.close_after_body()

    def __getattr__(self, name: str) -> Any:  # anything else a later uvicorn asks for
        return getattr(self._transport, name)


class ContractHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, JSON errors and lingering close."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True  # between requests or inside a head: bytes count as head
        self._head_bytes = 0
        self._url_bytes = 0
        self._header_bytes = 0
        self._refusal: tuple[int, str, str] | None = None
        self._discarding = False  # after a refused head: input is read and dropped
        self._body_done = True  # the body of the request being parsed has all arrived
        self._close_when_body_done = False
        self._drained = 0
        self._drain_timer: asyncio.TimerHandle | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_drain_timer()
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            self._discard(len(data))
            return
        if self._in_head:
            # This chunk may also end the previous request's body: at most one chunk
            # too many is counted, and the bound on memory holds either way.
            self._head_bytes += len(data)
        super().data_received(data)  # a parse error or a refusal ends in send_400_response
        if (
            self._in_head
            and not self._discarding
            and self._head_bytes - self._url_bytes > MAX_HEADER_BYTES
        ):
            # A header still arriving (httptools holds it until its line ends).
            self._answer_and_discard(*self._headers_too_large())

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        self._header_bytes = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > MAX_URL_BYTES:
            self._refusal = (
                UriTooLong.status,
                UriTooLong.code,
                f"the request's URL is longer than {MAX_URL_BYTES} bytes; send a long "
                "text query in the body of POST /v1/search",
            )
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_bytes > MAX_HEADER_BYTES:  # many headers, in one chunk or not
            self._refusal = self._headers_too_large()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._in_head = False
        self._head_bytes = 0
        self._body_done = False
        self._close_when_body_done = False
        self._drained = 0
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _LingeringTransport):
            cycle.transport = _LingeringTransport(self, self.transport)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and self.cycle.response_complete:
            self._discard(len(body))  # answered already: the rest is dropped, bounded
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done = True
        self._in_head = True
        self._head_bytes = 0
        self._cancel_drain_timer()
        super().on_message_complete()
        if self._close_when_body_done and not self.transport.is_closing():
            self.transport.close()

    # -- answers ---------------------------------------------------------------------------
    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self._body_done:
            self._start_drain()  # answered before the body arrived: bound how long it may
        super().on_response_complete()

    def close_after_body(self) -> None:
        """A response cycle closes the connection. When its answer is whole but the
        request's body is still arriving, the close waits for the body's end (read and
        dropped), DRAIN_MAX_BYTES or DRAIN_MAX_S, whichever comes first: closing a socket
        with unread bytes sends a reset, and the client would lose the answer."""
        cycle = self.cycle
        if self._body_done or cycle is None or not cycle.response_complete:
            self.transport.close()
            return
        self._close_when_body_done = True
        self._end_output()
        self._start_drain()

    def send_400_response(self, msg: str) -> None:
        """Every answer uvicorn gives for a request its parser refused: in the contract's
        shape, after which the connection's input is dropped (bounded) until it closes."""
        status, code, message = self._refusal or (
            400,
            InvalidRequest.code,
            "the request is not valid HTTP/1.1 (the server could not parse it)",
        )
        self._answer_and_discard(status, code, message)

    @staticmethod
    def _headers_too_large() -> tuple[int, str, str]:
        return (
            HeadersTooLarge.status,
            HeadersTooLarge.code,
            f"the request's headers are larger than {MAX_HEADER_BYTES // 1024} KB",
        )

    def _answer_and_discard(self, status: int, code: str, message: str) -> None:
        log.info("refused a request before the app: %d %s: %s", status, code, message)
        body = json.dumps(error_body(code, message), separators=(",", ":")).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(content))
        self._end_output()
        self._discarding = True
        self._drained = 0
        self._start_drain()  # the client closes once it has read this; else the bounds do

    def _end_output(self) -> None:
        """Half-close: a client reading to the end of the stream sees it end now, while
        what it still sends is read (a lingering close)."""
        if self.transport.can_write_eof() and not self.transport.is_closing():
            self.transport.write_eof()

    # -- dropping what is not read -----------------------------------------------------------
    def _start_drain(self) -> None:
        if self._drain_timer is None:
            self._drain_timer = self.loop.call_later(DRAIN_MAX_S, self._stop_draining, "time")
        self.flow.resume_reading()

    def _discard(self, size: int) -> None:
        self._drained += size
        if self._drained > DRAIN_MAX_BYTES:
            self._stop_draining("bytes")

    def _stop_draining(self, why: str) -> None:
        self._cancel_drain_timer()
        if not self.transport.is_closing():
            log.info(
                "closed a connection whose request went on after its answer "
                "(%d bytes dropped; limit reached: %s)",
                self._drained,
                why,
            )
            self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self._discarding and not self.transport.is_closing():
            self._answer_and_discard(
                408,
                "request_timeout",
                f"the request's head did not arrive within {HEAD_TIMEOUT_S:g} s",
            )
            self.transport.close()  # a client this slow gets no lingering close

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _cancel_drain_timer(self) -> None:
        timer = getattr(self, "_drain_timer", None)
        if timer is not None:
            timer.cancel()
            self._drain_timer = None


def uvicorn_version() -> tuple[int, int]:
    try:
        parts = version("uvicorn").split(".")
        return int(parts[0]), int(parts[1])
    except (PackageNotFoundError, ValueError, IndexError):
        return (0, 0)


def protocol_class() -> type[asyncio.Protocol] | str:
    """ContractHttpProtocol on the uvicorn versions it was read against; uvicorn's own
    httptools protocol elsewhere, with a warning (answers at the HTTP edge then lose
    the contract's shape and bounds until this module is read against that version)."""
    first, last = READ_AGAINST
    found = uvicorn_version()
    if first <= found <= last:
        return ContractHttpProtocol
    log.warning(
        "uvicorn %d.%d is outside the versions service/http_protocol.py was read against "
        "(%d.%d to %d.%d): using uvicorn's own httptools protocol, so over-long request "
        "lines get a plain-text 400 and early answers may reach clients as resets",
        *found,
        *first,
        *last,
    )
    return "httptools"
