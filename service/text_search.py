"""`GET /v1/search?q=&target=&k=`: text search by query string, as one function that
both the declared route (service/routes/search.py) and the fast path beneath the
framework (service/fast_path.py) answer with, so they check and answer the same way.

Its parameters and the key are read by hand: FastAPI's per-parameter and
per-dependency machinery measured ~40% of the route's CPU.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from service.deps import authorize
from service.errors import InvalidRequest
from service.json_fields import parse_filter
from service.schemas import MODALITY_NAMES
from service.searcher import Searcher, results_json
from service.settings import Settings

WHOLE_NUMBER = re.compile(r"-?[0-9]+")


async def text_search(
    settings: Settings, searcher: Searcher, params: Mapping[str, str], authorization: str
) -> bytes:
    """Key, parameters, search: the SearchResults body. Raises ServiceError."""
    started = time.perf_counter()
    authorize(settings, authorization, "read")
    q = params.get("q", "")
    target = params.get("target", "")
    if not q:
        raise InvalidRequest("query.q: the text to search for is missing or empty")
    if target not in MODALITY_NAMES:
        raise InvalidRequest(f"query.target: must be one of {', '.join(MODALITY_NAMES)}")
    k = form_int(params.get("k"), default=10, low=1, high=1000, name="k")
    group = form_bool(params.get("group"), default=True, name="group")
    filter = parse_filter(params.get("filter"))
    query = searcher.text_query(q, target, k, filter, group)
    answer = await searcher.search(query)
    return results_json(answer, started)


def query_params(query_string: bytes) -> dict[str, str]:
    """The query string's parameters as Starlette reads them (latin-1 bytes, UTF-8
    escapes, last wins), except that an escape which makes no UTF-8 text (`q=%FF`) is
    refused rather than read as U+FFFD and searched for."""
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest(
            "the query string is not UTF-8 text: a %-escape in it makes no character"
        ) from None
    return dict(pairs)


def form_int(raw: str | None, default: int, low: int, high: int, name: str) -> int:
    """A whole number from a query string or form field, within [low, high]; `default`
    when the field is absent (one given empty, or with spaces, is not a number)."""
    if raw is None:
        return default
    try:
        if not WHOLE_NUMBER.fullmatch(raw):
            raise ValueError(raw)
        value = int(raw)
    except ValueError:  # also a number of more than 4300 digits
        raise InvalidRequest(f"{name} must be a whole number", {"field": name}) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", {"field": name})
    return value


def form_bool(raw: str | None, default: bool, name: str) -> bool:
    """true/false (or 1/0) from a query string or form field; `default` when absent."""
    if raw is None:
        return default
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"{name} must be true or false", {"field": name})
    return value in ("true", "1")
