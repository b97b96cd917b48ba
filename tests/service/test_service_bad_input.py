"""Bad input is 4xx in the contract's shape, never 500 (docs/api.md): request parts that
passed a check and then crashed a later step (a Range side of Latin-1 superscripts, a
cursor too big for a database integer, an Origin that is not a URL)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from service.errors import InvalidRequest, RangeNotSatisfiable
from service.json_fields import parse_filter, parse_metadata
from service.origin_guard import OriginGuard
from service.routes.items import (
    check_range,
    decode_cursor,
    encode_cursor,
    list_items,
)
from service.schemas import SearchRequest, TextItemIn, TrainingJobIn
from service.storage import Storage


@pytest.mark.parametrize(
    "raw",
    # Header bytes are read as Latin-1: 0xB2, 0xB3 and 0xB9 become '²', '³' and '¹',
    # which str.isdigit() accepts and int() refuses.
    [b"bytes=0-\xb2", b"bytes=\xb2-", b"bytes=-\xb9", b"bytes=\xb3-\xb3", b"bytes=0-1,\xb9-"],
)
def test_a_range_side_of_non_ascii_digits_is_malformed_416(raw: bytes) -> None:
    request = Request({"type": "http", "method": "GET", "headers": [(b"range", raw)]})
    with pytest.raises(RangeNotSatisfiable) as caught:  # as for "bytes=5-abc"
        check_range(request.headers.get("range"), 100)
    assert "malformed" in caught.value.message
    assert caught.value.headers == {"Content-Range": "bytes */100"}


@pytest.mark.parametrize("spec", ["0-" + "1" * 5000, "-" + "9" * 5000, "1" * 5000 + "-"])
def test_a_range_bound_of_thousands_of_digits_is_416_not_500(spec: str) -> None:
    """int() refuses more than 4,300 digits: ValueError, a 500."""
    with pytest.raises(RangeNotSatisfiable) as caught:
        check_range(f"bytes={spec}", 100)
    assert "past the end" in caught.value.message or "5000 digits" in caught.value.message


@pytest.mark.parametrize("spec", ["0-" + "9" * 25, "-" + "9" * 25, "10-" + "1" * 40])
def test_a_range_ending_far_past_the_file_means_to_its_end(spec: str) -> None:
    check_range(f"bytes={spec}", 100)  # served from its start (or all of it): RFC 9110


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("seq", [2**63, 99999999999999999999, -(2**63) - 1, -(10**30)])
def test_a_cursor_beyond_a_database_integer_is_invalid_request(seq: int, tmp_path: Path) -> None:
    # Decoded as any integer, it reached SQLite, which raises OverflowError past 64 bits.
    cursor = cursor_of(f"s{seq}")
    storage = Storage(tmp_path / "db.sqlite")
    try:
        with pytest.raises(InvalidRequest) as caught:  # as a foreign cursor is
            list_items(None, storage, cursor=cursor)
    finally:
        storage.close()
    assert caught.value.detail == {"cursor": cursor}
    assert cursor_of("s99999999999999999999") == "czk5OTk5OTk5OTk5OTk5OTk5OTk5"


@pytest.mark.parametrize("seq", [1, 12345, 2**63 - 1])
def test_the_cursors_this_server_gives_out_still_decode(seq: int) -> None:
    assert decode_cursor(encode_cursor(seq)) == seq


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("done")(scope, receive, send)


@pytest.mark.parametrize("origin", ["http://[", "http://[::1", "http://]", "http://[zz]"])
def test_an_origin_that_is_not_a_url_is_a_foreign_one_403(origin: str) -> None:
    # Without keys a changing request's Origin must be local: one that cannot even be
    # parsed (urlsplit raises "Invalid IPv6 URL") is not.
    guard = OriginGuard(_ok, "127.0.0.1", [])
    client = TestClient(guard, base_url="http://127.0.0.1:8000")
    r = client.post("/v1/items/text", headers={"Origin": origin})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"
    assert client.post("/x", headers={"Origin": "http://127.0.0.1:8000"}).text == "done"


@pytest.mark.parametrize(
    "model, body",
    [
        (TrainingJobIn, {"steps": True}),  # was taken as 1 step (schemathesis found it)
        (TrainingJobIn, {"steps": "100"}),
        (TrainingJobIn, {"steps": 2.5}),
        (SearchRequest, {"query": {"text": "a"}, "target": "audio", "k": True}),
        (SearchRequest, {"query": {"text": "a"}, "target": "audio", "k": "5"}),
        (SearchRequest, {"query": {"vector": [1.0, True], "space": "va"}, "target": "audio"}),
        (SearchRequest, {"query": {"vector": ["0.5"], "space": "va"}, "target": "audio"}),
        (SearchRequest, {"query": {"item_id": "x", "start_s": "1", "end_s": 2}, "target": "audio"}),
    ],
)
def test_numbers_in_a_request_body_are_json_numbers_not_coerced(model: Any, body: dict) -> None:
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(body))


def test_json_numbers_still_pass() -> None:
    assert TrainingJobIn.model_validate_json('{"steps": 100}').steps == 100
    # One JSON number type: 4559.0 is an integer by the schema (schemathesis sent it).
    steps = TrainingJobIn.model_validate_json('{"steps": 4559.0}').steps
    assert steps == 4559 and isinstance(steps, int)
    found = SearchRequest.model_validate_json(
        '{"query": {"item_id": "x", "start_s": 1, "end_s": 2.5}, "target": "audio", "k": 7}'
    )
    assert found.k == 7 and found.query.start_s == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"item_id": "abc", "start_s": 30, "end_s": 10}, "end_s must be after start_s"),
        ({"item_id": "abc", "start_s": 5}, "a moment needs both start_s and end_s"),
        ({"text": ""}, "query.text.text: String should have at least 1 character"),
        ({"vector": [1.0], "space": "xy"}, "query.vector.space: Input should be 'va'"),
        ({"txt": "a dog"}, "query: the query needs one of text, item_id or vector"),
    ],
)
def test_a_bad_query_is_explained_as_the_kind_of_query_it_names(
    query: dict[str, Any], says: str
) -> None:
    """The query is one of three kinds; an item query whose stretch ends before it starts
    was told "query.TextQuery.text: Field required (and 9 more problems)"."""
    from fastapi import FastAPI

    from service.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/search")
    def search(body: SearchRequest) -> dict[str, str]:
        return {}

    r = TestClient(app).post("/search", json={"query": query, "target": "audio"})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert says in message and "more problems" not in message, message


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('{"text": "x", "metadata": {"a": {"b": 1}}}',
         "metadata.a: must be a string, a number, true, false or null, not an object"),
        ('{"text": "x", "metadata": {"a": [1]}}', "metadata.a: must be a string, a number, "),
        ('{"text": "x", "metadata": {"a": NaN}}', "metadata.a: must be a finite number, not nan"),
        ('{"query": {"text": "x"}, "target": "audio", "filter": {"a": {"b": 1}}}',
         "filter.a: must be a string, a number, true, false or null, not an object"),
        ('{"query": {"text": "x"}, "target": "audio", "filter": {"a": -Infinity}}',
         "filter.a: must be a finite number, not -inf"),
        ('{"query": {"text": "x"}, "target": "audio", "filter": {"a": "\\ud800"}}',
         "filter.a: text that cannot be stored: it is not valid Unicode"),
    ],
)  # fmt: skip
def test_a_nested_or_infinite_metadata_value_is_explained_in_one_sentence(
    body: str, says: str
) -> None:
    """A metadata or filter value that is an object was told "metadata.a.bool: Input
    should be a valid boolean (and 3 more problems)": one complaint per type it is not."""
    from fastapi import FastAPI

    from service.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/text")
    def text(body: TextItemIn) -> dict[str, str]:
        return {}

    @app.post("/search")
    def search(body: SearchRequest) -> dict[str, str]:
        return {}

    route = "/search" if '"query"' in body else "/text"
    r = TestClient(app).post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert message.startswith(says) and "more problems" not in message, message


@pytest.mark.parametrize("parse", [parse_filter, parse_metadata])
def test_an_integer_past_pythons_digit_limit_in_a_filter_or_metadata_is_invalid_request(
    parse: Any,
) -> None:
    """json.loads refuses an integer of over 4,300 digits with a plain ValueError, which
    the listing filter and the upload's metadata field did not catch: a 500."""
    with pytest.raises(InvalidRequest, match="an integer too long to read"):
        parse('{"a": ' + "1" * 5000 + "}")
    with pytest.raises(InvalidRequest, match="not valid JSON: Expecting value"):
        parse('{"a": }')
