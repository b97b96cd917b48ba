"""Search by text, by stored item, by raw vector, or by an uploaded example."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.deps import ExampleEmbedderDep, ReadAccess, SearcherDep, SettingsDep
from service.errors import InvalidRequest
from service.json_fields import parse_filter
from service.schemas import MODALITY_NAMES, ItemQuery, SearchRequest, SearchResults, TextQuery
from service.searcher import VersionChanged, results_json
from service.text_search import form_bool, form_int, query_params, text_search
from service.uploads import received_upload

router = APIRouter(prefix="/v1/search", tags=["search"])
JSON = "application/json"

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "not_found: the query item does not exist"},
    409: {
        "description": "conflict: the query item is not ready (processing, failed), or "
        "its stretches are not indexed yet (a moment query)"
    },
    413: {"description": "too_large: the query text (or the body) is over its limit"},
    422: {"description": "invalid_request, or unsupported_pair when no space holds both"},
    503: {"description": "no_model: no model is loaded"},
}
# FastAPI answers a body it cannot decode as text (e.g. bytes that are not UTF-8) with 400.
_JSON_RESPONSES = {**_RESPONSES, 400: {"description": "invalid_request: the body is not JSON text"}}
_UPLOAD_RESPONSES = {
    **_RESPONSES,
    413: {"description": "too_large (bytes or pixels) or too_long (duration)"},
    415: {"description": "unsupported_media: not a video, audio or image file"},
    503: {"description": "no_model, or overloaded: too many searches by example at once"},
    507: {"description": "insufficient_storage: the server's disk is (nearly) full"},
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
                        "group": {"type": "boolean", "default": True},
                        "filter": {
                            "type": "string",
                            "description": "metadata to match exactly, a JSON object",
                        },
                    },
                }
            }
        },
    }
}


@router.post("", response_model=SearchResults, responses=_JSON_RESPONSES)
async def search(body: SearchRequest, _: ReadAccess, searcher: SearcherDep) -> Response:
    started = time.perf_counter()
    q = body.query
    if isinstance(q, TextQuery):
        query = searcher.text_query(q.text, body.target, body.k, body.filter, body.group)
    elif isinstance(q, ItemQuery):
        query = searcher.item_query(
            q.item_id, body.target, body.k, body.filter, body.group, q.start_s, q.end_s
        )
    else:
        query = searcher.vector_query(
            q.vector, q.space, body.target, body.k, body.filter, body.group
        )
    answer = await searcher.search(query)
    return Response(results_json(answer, started), media_type=JSON)


GET_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {"name": "q", "in": "query", "required": True, "description": "the text to search for",
         "schema": {"type": "string", "minLength": 1}},
        {"name": "target", "in": "query", "required": True,
         "schema": {"type": "string", "enum": list(MODALITY_NAMES)}},
        {"name": "k", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}},
        {"name": "group", "in": "query", "required": False,
         "description": "false: every matching segment of a long item is a result of its own",
         "schema": {"type": "boolean", "default": True}},
        {"name": "filter", "in": "query", "required": False,
         "description": 'metadata to match exactly, a JSON object: {"folder": "interviews"}',
         "schema": {"type": "string"}},
    ]
}  # fmt: skip


@router.get("", response_model=SearchResults, responses=_RESPONSES, openapi_extra=GET_PARAMETERS)
async def search_get(request: Request, settings: SettingsDep, searcher: SearcherDep) -> Response:
    """Text search by query string. Under load this route is answered by
    `service.fast_path.TextSearchFastPath` before the framework sees the request; both
    call `text_search`, so they check and answer the same way."""
    authorization = request.headers.get("authorization", "")
    params = query_params(request.scope["query_string"])  # strict UTF-8, as the fast path
    body = await text_search(settings, searcher, params, authorization)
    return Response(body, media_type=JSON)


@router.post(
    "/upload", response_model=SearchResults, openapi_extra=EXAMPLE_BODY, responses=_UPLOAD_RESPONSES
)
async def search_by_example(
    request: Request,
    _: ReadAccess,
    settings: SettingsDep,
    searcher: SearcherDep,
    examples: ExampleEmbedderDep,
) -> Response:
    started = time.perf_counter()
    searcher.require_model()  # before the upload is received, rather than after
    async with received_upload(request, settings, examples.admission) as upload:
        target = upload.fields.get("target", "")
        if target not in MODALITY_NAMES:
            raise InvalidRequest(
                f"target must be one of {', '.join(MODALITY_NAMES)}", {"field": "target"}
            )
        k = form_int(upload.fields.get("k"), default=10, low=1, high=1000, name="k")
        group = form_bool(upload.fields.get("group"), default=True, name="group")
        filter = parse_filter(upload.fields.get("filter"))
        assert upload.path is not None
        for attempt in range(3):
            example = await examples.embed(upload.path, upload.filename)
            try:
                query = searcher.example_query(
                    example.kind, example.vectors, target, k, example.version, group, filter
                )
                answer = await searcher.search(query)
                break
            except VersionChanged:  # a switch of model versions came between: again
                if attempt == 2:
                    raise
    return Response(results_json(answer, started), media_type=JSON)
