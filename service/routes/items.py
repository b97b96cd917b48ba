"""Items: upload (streamed), text items, get, list, delete, media download with Range."""

from __future__ import annotations

import base64
import binascii
import os
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from service.deps import (
    IngestorDep,
    MediaFilesDep,
    MediaLinkSecretDep,
    MediaReadAccess,
    ReadAccess,
    SettingsDep,
    StorageDep,
    WriteAccess,
)
from service.errors import InvalidRequest, NotFound, RangeNotSatisfiable
from service.json_fields import parse_filter, parse_metadata
from service.media_links import media_link
from service.media_response import OpenedFileResponse
from service.schemas import (
    ID_PATTERN,
    Item,
    ItemList,
    Kind,
    MediaLink,
    TextItemIn,
    item_payload,
    unstorable,
)
from service.storage.rows import ItemRow, rfc3339
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
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "not_found: no such item"}}
# FastAPI answers a body it cannot decode as text (e.g. bytes that are not UTF-8) with 400.
_UNREADABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid_request: the body is not JSON text"},
    413: {"description": "too_large: the body, or the text, is over its limit"},
    503: {"description": "no_model: nothing can embed it"},
}

ItemId = Annotated[str, Path(pattern=ID_PATTERN, description="an id this server gave out")]


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


# The largest seq a database integer holds (SQLite's and PostgreSQL's BIGINT).
MAX_SEQ = 2**63 - 1


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(raw)
        seq = int(raw[1:])
        # Past a 64-bit integer the database driver raises (OverflowError): a 500.
        if not 0 <= seq <= MAX_SEQ:
            raise ValueError(raw)
        return seq
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            "the cursor is not one this server gave out", {"cursor": cursor[:64]}
        ) from None


@router.post(
    "",
    status_code=201,
    response_model=Item,
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"model": Item, "description": "the same bytes were stored before"},
        202: {"model": Item, "description": "accepted; processing in the background"},
        404: {"description": "not_found: deleted (DELETE) while it was processed (wait=true)"},
        409: {"description": "conflict: the same bytes kept being deleted meanwhile"},
        413: {"description": "too_large (bytes or pixels) or too_long (duration)"},
        415: {"description": "unsupported_media: not a video, audio or image file"},
        422: {"description": "unreadable_media or invalid_request"},
        503: {"description": "no_model: nothing can embed it; overloaded: too many uploads"},
        507: {"description": "insufficient_storage: the server's disk is (nearly) full"},
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
    async with received_upload(request, settings, ingestor.admission) as upload:
        metadata = parse_metadata(upload.fields.get("metadata"))
        transcript = upload.fields.get("transcript")
        if transcript is not None and (problem := unstorable(transcript)):
            raise InvalidRequest(f"the transcript cannot be stored: {problem}")
        row, status = await ingestor.ingest_upload(upload, transcript, metadata, wait, asr=asr)
    return JSONResponse(item_payload(row), status_code=status)


@router.post(
    "/text", status_code=201, response_model=Item, responses={**_ERRORS, **_UNREADABLE_BODY}
)
async def create_text_item(body: TextItemIn, _: WriteAccess, ingestor: IngestorDep) -> JSONResponse:
    row = await ingestor.ingest_text(body.text, body.metadata)
    return JSONResponse(item_payload(row), status_code=201)


@router.get("/{item_id}", response_model=Item, responses=_NOT_FOUND)
def get_item(item_id: ItemId, _: ReadAccess, storage: StorageDep) -> JSONResponse:
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
    filter: Annotated[
        str | None,
        Query(
            description='a flat JSON object, e.g. {"folder": "interviews/2024"}: only items '
            "whose metadata has every key with exactly that value (as a search's filter)",
        ),
    ] = None,
) -> JSONResponse:
    before = decode_cursor(cursor) if cursor else None
    filters = parse_filter(filter)
    rows = storage.items.page(kind, limit + 1, before, filters)
    page, more = rows[:limit], len(rows) > limit
    return JSONResponse(
        {
            "items": [item_payload(r) for r in page],
            "next_cursor": encode_cursor(page[-1].seq) if more and page else None,
        }
    )


@router.delete("/{item_id}", status_code=204, response_class=Response, responses=_NOT_FOUND)
def delete_item(
    item_id: ItemId, _: WriteAccess, storage: StorageDep, ingestor: IngestorDep
) -> Response:
    row = storage.items.get(item_id)
    if row is None:
        raise NotFound(f"no item {item_id!r}")
    ingestor.delete(row)
    return Response(status_code=204)


# The stored probe's type; several ranges come as multipart/byteranges.
MEDIA_CONTENT: dict[str, Any] = {
    t: {} for t in ("video/*", "audio/*", "image/*", "application/octet-stream", "multipart/*")
}


# HEAD: a player or a downloader asking the size and type first (405 before).
@router.head("/{item_id}/media", response_class=FileResponse, include_in_schema=False)
@router.get(
    "/{item_id}/media",
    response_class=FileResponse,
    responses={
        200: {"description": "the original bytes", "content": MEDIA_CONTENT},
        206: {"description": "the requested byte range", "content": MEDIA_CONTENT},
        416: {"description": "range_not_satisfiable"},
        **_NOT_FOUND,
    },
)
def get_media(
    item_id: ItemId,
    request: Request,
    _: MediaReadAccess,
    storage: StorageDep,
    media: MediaFilesDep,
) -> FileResponse:
    """The original bytes; with API keys, a read key in the header or a signed link
    (`GET /v1/items/{id}/media-link`, whose `expires` and `signature` ride along)."""
    row = storage.items.get(item_id)
    if row is None:
        raise NotFound(f"no item {item_id!r}")
    if row.content_hash is None:
        raise NotFound(f"item {item_id!r} is a text item: it has no media")
    try:  # opened now: a delete that removes the file meanwhile cannot cut the answer
        opened = media.path(row.content_hash).open("rb")
    except FileNotFoundError:  # deleted since the row was read, or lost from the disk
        raise NotFound(
            f"the media of item {item_id!r} is missing from the data directory"
        ) from None
    try:
        check_range(request.headers.get("range"), os.fstat(opened.fileno()).st_size)
    except BaseException:
        opened.close()
        raise
    media_type = row.media_type or "application/octet-stream"
    extension = media_type.partition("/")[2].partition(";")[0].strip() or "bin"
    return OpenedFileResponse(
        opened,
        media_type=media_type,
        headers={
            # The bytes are anyone's upload: a browser must take them for what the
            # server says they are, and show them rather than run them as a page.
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": content_disposition(row, extension),
            # Opened with a key or a signed link, never for a shared cache (a proxy
            # would go on serving it after the link expired or the keys changed).
            "Cache-Control": "private",
        },
    )


@router.get("/{item_id}/media-link", response_model=MediaLink, responses=_NOT_FOUND)
def get_media_link(
    item_id: ItemId,
    _: ReadAccess,
    storage: StorageDep,
    settings: SettingsDep,
    secret: MediaLinkSecretDep,
) -> JSONResponse:
    """A link to the item's media that opens it without a header for a few hours, for
    a browser's media elements (service/media_links.py)."""
    row = storage.items.get(item_id)
    if row is None:
        raise NotFound(f"no item {item_id!r}")
    if row.content_hash is None:
        raise NotFound(f"item {item_id!r} is a text item: it has no media")
    url, expires = media_link(settings, secret, row.id)
    return JSONResponse({"url": url, "expires_at": rfc3339(expires)})


def content_disposition(row: ItemRow, extension: str) -> str:
    """`inline`, named by the item's id (plain ASCII, for any client) and, where the
    sender named the file, by that name (RFC 6266's filename*, which browsers prefer
    when saving: holiday.mp4 rather than an id)."""
    header = f'inline; filename="{row.id}.{extension}"'
    if row.filename:
        header += f"; filename*=UTF-8''{quote(row.filename, safe='')}"
    return header


MAX_RANGES = 8
MAX_START_DIGITS = 18  # 10^18 bytes: past any file
MAX_END_DIGITS = 1000


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
            # ASCII only: str.isdigit() also takes '²' '³' '¹' (Latin-1 header bytes),
            # which int() refuses.
            sides_ok = all(
                side == "" or (side.isascii() and side.isdigit()) for side in (first, last)
            )
            if not dash or not sides_ok or not (first or last):
                problem = f"the range {part.strip()!r} is malformed"
                break
            # int() refuses past 4,300 digits (a 500 then). A start that long is past any
            # file's end; an end or a suffix that long means "to the end", as any
            # shorter too-large one does, but no client writes thousands of digits.
            if len(first) > MAX_START_DIGITS:
                problem = f"the range starts past the end ({size} bytes)"
                break
            if len(last) > MAX_END_DIGITS:
                problem = f"a range bound of {len(last)} digits is refused"
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
