"""Search by text, by stored item, by raw vector, or by an uploaded example."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.deps import ReadAccess, RuntimeDep, authorize
from service.errors import InvalidRequest
from service.runtime import Runtime
from service.schemas import (
    MODALITY_NAMES,
    ItemQuery,
    SearchRequest,
    SearchResults,
    TextQuery,
)
from service.searcher import results_json

router = APIRouter(prefix="/v1/search", tags=["search"])
JSON = "application/json"

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "not_found: the query item does not exist"},
    422: {"description": "invalid_request, or unsupported_pair when no space holds both"},
    503: {"description": "no_model: no model is loaded"},
}

EXAMPLE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "target"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "target": {"type": "string", "enum": list(MODALITY_NAMES)},
                        "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                    },
                }
            }
        },
    }
}


@router.post("", response_model=SearchResults, responses=_RESPONSES)
async def search(body: SearchRequest, runtime: RuntimeDep, _: ReadAccess) -> Response:
    started = time.perf_counter()
    searcher = runtime.require_searcher()
    q = body.query
    if isinstance(q, TextQuery):
        query = searcher.text_query(q.text, body.target, body.k, body.filter)
    elif isinstance(q, ItemQuery):
        query = searcher.item_query(q.item_id, body.target, body.k, body.filter)
    else:
        query = searcher.vector_query(q.vector, q.space, body.target, body.k, body.filter)
    answer = await searcher.search(query)
    return Response(results_json(answer, searcher.embedder.version, started), media_type=JSON)


GET_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {"name": "q", "in": "query", "required": True, "description": "the text to search for",
         "schema": {"type": "string", "minLength": 1}},
        {"name": "target", "in": "query", "required": True,
         "schema": {"type": "string", "enum": list(MODALITY_NAMES)}},
        {"name": "k", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}},
    ]
}  # fmt: skip


@router.get("", response_model=SearchResults, responses=_RESPONSES, openapi_extra=GET_PARAMETERS)
async def search_get(request: Request) -> Response:
    """Text search by query string. Under load this route is answered by
    `service.fast_path.TextSearchFastPath` before the framework sees the request; both
    call `text_search`, so they check and answer the same way."""
    body = await text_search(
        request.app.state.runtime, request.query_params, request.headers.get("authorization", "")
    )
    return Response(body, media_type=JSON)


async def text_search(runtime: Runtime, params: Mapping[str, str], authorization: str) -> bytes:
    """GET /v1/search: key, parameters, search, the Results body. Raises ServiceError.

    Its parameters and the key are read by hand: FastAPI's per-parameter and
    per-dependency machinery measured ~40% of the route's CPU."""
    started = time.perf_counter()
    authorize(runtime.settings, authorization, "read")
    q = params.get("q", "")
    target = params.get("target", "")
    if not q:
        raise InvalidRequest("query.q: the text to search for is missing or empty")
    if target not in MODALITY_NAMES:
        raise InvalidRequest(f"query.target: must be one of {', '.join(MODALITY_NAMES)}")
    k = _form_int(params.get("k"), default=10, low=1, high=1000, name="k")
    searcher = runtime.require_searcher()
    answer = await searcher.search(searcher.text_query(q, target, k, None))
    return results_json(answer, searcher.embedder.version, started)


@router.post(
    "/upload", response_model=SearchResults, openapi_extra=EXAMPLE_BODY, responses=_RESPONSES
)
async def search_by_example(request: Request, runtime: RuntimeDep, _: ReadAccess) -> Response:
    started = time.perf_counter()
    searcher = runtime.require_searcher()
    upload = await runtime.receive_upload(request)
    try:
        target = upload.fields.get("target", "")
        if target not in MODALITY_NAMES:
            raise InvalidRequest(
                f"target must be one of {', '.join(MODALITY_NAMES)}", {"field": "target"}
            )
        k = _form_int(upload.fields.get("k"), default=10, low=1, high=1000, name="k")
        kind, embeddings = await runtime.ingestor.embed_example(upload)
    finally:
        upload.discard()
    answer = await searcher.search(searcher.example_query(kind, embeddings, target, k))
    return Response(results_json(answer, searcher.embedder.version, started), media_type=JSON)


def _form_int(raw: str | None, default: int, low: int, high: int, name: str) -> int:
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number", {"field": name}) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", {"field": name})
    return value
