"""Access lines: the direct writer prints what the logging module would have printed."""

from __future__ import annotations

import io
import json
import logging

import pytest

from service.logs import AccessLog, JsonFormatter, access_log, request_id_var


def through_logging(formatter: logging.Formatter, msg_args: tuple, extra: dict, rid: str) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    saved = access_log.handlers[:], access_log.propagate, access_log.level
    access_log.handlers[:] = [handler]
    access_log.propagate = False
    access_log.setLevel(logging.INFO)
    token = request_id_var.set(rid)
    try:
        access_log.info("%s %s %d", *msg_args, extra=extra)
    finally:
        request_id_var.reset(token)
        access_log.handlers[:], access_log.propagate = saved[0], saved[1]
        access_log.setLevel(saved[2])
    return stream.getvalue()


def direct(formatter: logging.Formatter, as_json: bool, args: tuple) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    AccessLog(handler, as_json).write(*args)
    return stream.getvalue()


@pytest.mark.parametrize(
    "path",
    ["/v1/search", '/v1/items/ab"c\\d', "/caf\u00e9/\u4e2d"],  # quotes, backslash, non-ASCII
)
def test_json_access_line_matches_the_formatter(path: str) -> None:
    args = ("GET", path, 200, 1.23, "/v1/search", "0123456789abcdef")
    ours = json.loads(direct(JsonFormatter(), True, args))
    theirs = json.loads(
        through_logging(
            JsonFormatter(),
            ("GET", path, 200),
            {"status": 200, "ms": 1.23, "route": "/v1/search"},
            "0123456789abcdef",
        )
    )
    # Same keys in the same order with the same values; timestamps a moment apart.
    assert list(ours) == list(theirs)
    assert {k: v for k, v in ours.items() if k != "ts"} == {
        k: v for k, v in theirs.items() if k != "ts"
    }
    assert ours["ts"][:16] == theirs["ts"][:16] and ours["ts"].endswith("Z")


def test_text_access_line_uses_the_handler_format() -> None:
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    line = direct(formatter, False, ("DELETE", "/v1/items/x", 404, 0.5, "/v1/items/{id}", "r"))
    assert line == "INFO service.access DELETE /v1/items/x 404\n"


def test_access_lines_follow_the_log_level() -> None:
    handler = logging.StreamHandler(io.StringIO())
    saved = access_log.level
    try:
        access_log.setLevel(logging.WARNING)
        assert not AccessLog(handler, True).enabled()
        access_log.setLevel(logging.INFO)
        assert AccessLog(handler, True).enabled()
    finally:
        access_log.setLevel(saved)


def test_a_line_break_in_a_path_cannot_forge_an_access_line() -> None:
    """The path is percent-decoded: `/%0Afake line` wrote a second, forged line into the
    plain-text log."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from service.logs import RequestContextMiddleware
    from service.prometheus import Metrics

    app = FastAPI()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    saved = access_log.handlers[:], access_log.propagate, access_log.level
    access_log.handlers[:] = [handler]
    access_log.propagate = False
    access_log.setLevel(logging.INFO)
    try:
        client = TestClient(RequestContextMiddleware(app, Metrics()))
        client.get("/x%0AINFO service.access GET /admin 200")
    finally:
        access_log.handlers[:], access_log.propagate = saved[0], saved[1]
        access_log.setLevel(saved[2])
    lines = stream.getvalue().splitlines()
    assert lines == ["service.access GET /x\\nINFO service.access GET /admin 200 404"], lines
