"""Items: upload (streamed), text items, get, list, delete, media download with Range."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from service.deps import (
    IngestorDep,
    MediaFilesDep,
    ReadAccess,
    SettingsDep,
    StorageDep,
    WriteAccess,
)
from service.errors import InvalidRequest, NotFound, RangeNotSatisfiable
from service.schemas import Item, ItemList, Kind, TextItemIn, item_payload
from service.uploads import received_upload

router = APIRouter(prefix="/v1/items", tags=["items"])

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "any video, audio or image file ffmpeg reads",
                        },
                        "transcript": {
                            "type": "string",
                            "description": "plain text or WebVTT; when absent and the file "
                            "has sound, speech recognition fills it",
                        },
                        "metadata": {
                            "type": "string",
                            "description": 'a flat JSON object as a string, e.g. {"tag": "x"}',
                        },
                    },
                }
            }
        },
    }
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key"},
    403: {"description": "the key lacks write scope"},
}


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            "the cursor is not one this server gave out", {"cursor": cursor[:64]}
        ) from None


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"metadata is not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise InvalidRequest("metadata is nested too deeply to read") from None
    return check_metadata(value)


def check_metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest('metadata must be a JSON object like {"key": "value"}')
    for key, item in value.items():
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
    return value


@router.post(
    "",
    status_code=201,
    response_model=Item,
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"model": Item, "description": "the same bytes were stored before"},
        202: {"model": Item, "description": "accepted; processing in the background"},
        413: {"description": "too_large (bytes or pixels) or too_long (duration)"},
        415: {"description": "unsupported_media: not a video, audio or image file"},
        422: {"description": "unreadable_media or invalid_request"},
        **_ERRORS,
    },
)
async def upload_item(
    request: Request,
    _: WriteAccess,
    settings: SettingsDep,
    ingestor: IngestorDep,
    wait: Annotated[bool, Query(description="false: answer 202 at once")] = True,
    asr: Annotated[
        bool, Query(description="false: no speech recognition (e.g. sound effects)")
    ] = True,
) -> JSONResponse:
    ingestor.require_model()  # before the upload is received, rather than after
    async with received_upload(request, settings) as upload:
        metadata = parse_metadata(upload.fields.get("metadata"))
        transcript = upload.fields.get("transcript")
        row, status = await ingestor.ingest_upload(upload, transcript, metadata, wait, asr=asr)
    return JSONResponse(item_payload(row), status_code=status)


@router.post("/text", status_code=201, response_model=Item, responses=_ERRORS)
async def create_text_item(body: TextItemIn, _: WriteAccess, ingestor: IngestorDep) -> JSONResponse:
    row = await ingestor.ingest_text(body.text, body.metadata)
    return JSONResponse(item_payload(row), status_code=201)


@router.get("/{item_id}", response_model=Item)
def get_item(item_id: str, _: ReadAccess, storage: StorageDep) -> JSONResponse:
    row = storage.items.get(item_id)
    if row is None:
        raise NotFound(f"no item {item_id!r}")
    return JSONResponse(item_payload(row))


@router.get("", response_model=ItemList)
def list_items(
    _: ReadAccess,
    storage: StorageDep,
    kind: Kind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> JSONResponse:
    before = decode_cursor(cursor) if cursor else None
    rows = storage.items.page(kind, limit + 1, before)
    page, more = rows[:limit], len(rows) > limit
    return JSONResponse(
        {
            "items": [item_payload(r) for r in page],
            "next_cursor": encode_cursor(page[-1].seq) if more and page else None,
        }
    )


@router.delete("/{item_id}", status_code=204, response_class=Response)
def delete_item(
    item_id: str, _: WriteAccess, storage: StorageDep, ingestor: IngestorDep
) -> Response:
    row = storage.items.get(item_id)
    if row is None:
        raise NotFound(f"no item {item_id!r}")
    ingestor.delete(row)
    return Response(status_code=204)


@router.get(
    "/{item_id}/media",
    response_class=FileResponse,
    responses={
        200: {"description": "the original bytes", "content": {"application/octet-stream": {}}},
        206: {"description": "the requested byte range"},
        416: {"description": "range_not_satisfiable"},
    },
)
def get_media(
    item_id: str, request: Request, _: ReadAccess, storage: StorageDep, media: MediaFilesDep
) -> FileResponse:
    row = storage.items.get(item_id)
    if row is None:
        raise NotFound(f"no item {item_id!r}")
    if row.content_hash is None:
        raise NotFound(f"item {item_id!r} is a text item: it has no media")
    path = media.path(row.content_hash)
    if not path.is_file():
        raise NotFound(f"the media of item {item_id!r} is missing from the data directory")
    size = path.stat().st_size
    check_range(request.headers.get("range"), size)
    media_type = row.media_type or "application/octet-stream"
    extension = media_type.partition("/")[2].partition(";")[0].strip() or "bin"
    return FileResponse(
        path,
        media_type=media_type,
        headers={
            # The bytes are anyone's upload: a browser must take them for what the
            # server says they are, and show them rather than run them as a page.
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'inline; filename="{row.id}.{extension}"',
        },
    )


MAX_RANGES = 8


def check_range(header: str | None, size: int) -> None:
    """Reject what Starlette's FileResponse would answer in plain text (so errors keep the
    contract's shape); well-formed ranges are then served by FileResponse itself."""
    if header is None:
        return
    units, _, spec = header.partition("=")
    problem = None
    if units.strip().lower() != "bytes" or not spec.strip():
        problem = "only 'bytes=START-END' ranges are supported"
    elif spec.count(",") >= MAX_RANGES:
        # Each range is a part of a multipart answer: hundreds make a big answer of tiny
        # reads out of one request. Players ask for one.
        problem = f"at most {MAX_RANGES} ranges may be asked for at once"
    else:
        for part in spec.split(","):
            first, dash, last = part.strip().partition("-")
            sides_ok = all(side == "" or side.isdigit() for side in (first, last))
            if not dash or not sides_ok or not (first or last):
                problem = f"the range {part.strip()!r} is malformed"
                break
            if first.isdigit() and last.isdigit() and int(last) < int(first):
                problem = f"the range {part.strip()!r} ends before it starts"
                break
            if first.isdigit() and int(first) >= size:
                problem = f"the range {part.strip()!r} starts past the end ({size} bytes)"
                break
            if not first and last.isdigit() and int(last) == 0:
                problem = "a suffix range of zero bytes selects nothing"
                break
    if problem:
        raise RangeNotSatisfiable(problem, {"size": size}, {"Content-Range": f"bytes */{size}"})
