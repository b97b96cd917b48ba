"""A download racing a delete of its item (found by the load test, issue 21).

GET /v1/items/{id}/media read the item's row, then answered with Starlette's
FileResponse over the file's path, which stats and opens the path only once the answer
is under way. A delete removing the file in between turned the download into a 500
(`RuntimeError: File at path ... does not exist`, logged under 32 clients), or cut its
body after the status line. The route now opens the file first: the bytes are served
whole from the descriptor, whatever happens to the path.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from starlette.requests import Request

from service.media_files import MediaFiles
from service.routes.items import get_media


def serve(response: Any, headers: dict[str, str]) -> tuple[int, bytes]:
    """Run an ASGI response; (status, body)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": "GET", "headers": raw, "asgi": {"spec_version": "2.4"},
             "extensions": {}}  # fmt: skip
    asyncio.run(response(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_download_begun_before_a_delete_gets_the_whole_file(tmp_path: Path) -> None:
    content = bytes(range(256)) * 1000
    sha = hashlib.sha256(content).hexdigest()
    (tmp_path / sha).write_bytes(content)
    media = MediaFiles(tmp_path)
    row = SimpleNamespace(id="item-1", content_hash=sha, media_type="video/mp4", filename=None)
    storage = SimpleNamespace(items=SimpleNamespace(get=lambda item_id: row))

    for headers, status, body in (
        ({}, 200, content),
        ({"Range": "bytes=10-19"}, 206, content[10:20]),
    ):
        (tmp_path / sha).write_bytes(content)
        request = Request({"type": "http", "method": "GET", "headers": [
            (k.lower().encode(), v.encode()) for k, v in headers.items()]})  # fmt: skip
        response = get_media("item-1", request, None, storage, media)
        media.remove(sha)  # the delete, between the route and the answer
        assert not (tmp_path / sha).exists()
        assert serve(response, headers) == (status, body)
