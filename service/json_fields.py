"""JSON carried in a query parameter or a form field (an item's metadata, a metadata
filter), read with the errors a user understands. Light: the bulk importer uses it on
machines without the server's stack."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from pydantic import TypeAdapter, ValidationError

from service.errors import InvalidRequest, validation_message
from service.schemas import Metadata, metadata_too_long, unstorable
from service.storage.items import MAX_LIST_FILTER_KEYS


def json_problem(exc: ValueError) -> str:
    """What json.loads said, briefly: a syntax error, or a number past Python's limit on
    integer digits (a plain ValueError, which answered 500)."""
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    return f"it holds an integer too long to read (over {sys.get_int_max_str_digits():,} digits)"


_FILTER = TypeAdapter(Metadata)


def parse_filter(raw: str | None) -> dict[str, Any] | None:
    """A `filter` query parameter or form field (a listing's, a search's), by the rules
    of a search body's filter."""
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidRequest("filter is nested too deeply to read", {"field": "filter"}) from None
    except ValueError as exc:
        problem = json_problem(exc)
        raise InvalidRequest(f"filter is not valid JSON: {problem}", {"field": "filter"}) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            'filter must be a JSON object like {"folder": "interviews"}', {"field": "filter"}
        )
    if len(value) > MAX_LIST_FILTER_KEYS:
        raise InvalidRequest(
            f"filter has {len(value)} keys; a listing filters by at most {MAX_LIST_FILTER_KEYS}",
            {"field": "filter"},
        )
    try:
        return _FILTER.validate_python(value) or None
    except ValidationError as exc:
        problems = [{**e, "loc": ("filter", *e["loc"])} for e in exc.errors()]
        raise InvalidRequest(validation_message(problems), {"field": "filter"}) from None


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidRequest("metadata is nested too deeply to read") from None
    except ValueError as exc:
        raise InvalidRequest(f"metadata is not valid JSON: {json_problem(exc)}") from None
    return check_metadata(value)


def check_metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest('metadata must be a JSON object like {"key": "value"}')
    for key, item in value.items():
        for text in (key, item) if isinstance(item, str) else (key,):
            if problem := unstorable(text):
                # ascii(): the key itself may be what cannot be written back as UTF-8.
                raise InvalidRequest(f"metadata {ascii(key)[:80]} cannot be stored: {problem}")
        if not isinstance(item, str | int | float | bool) and item is not None:
            raise InvalidRequest(
                f"metadata must be flat: the value of {key!r} is a nested object or list",
                {"key": key},
            )
        if isinstance(item, float) and not math.isfinite(item):
            # JSON has no NaN or Infinity: stored, they would break every answer showing it.
            raise InvalidRequest(
                f"metadata values must be finite numbers: the value of {key!r} is {item}",
                {"key": key},
            )
    if problem := metadata_too_long(value):
        raise InvalidRequest(problem)
    return value
