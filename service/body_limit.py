"""A cap on the size of request bodies that are not uploads.

FastAPI reads a JSON body whole, and before the dependencies that check the API key
run, so without a cap anyone who can reach the port could make the server hold any
amount of memory. The two upload routes stream their multipart bodies to disk under
their own, larger cap (uploads.py); every other body is JSON of a few kilobytes, the
largest allowed being a vector query of 65,536 numbers (≈ 1.5 MB). Which body is an
upload is decided by the route, never by the Content-Type the client chose: a JSON
route sent "multipart/form-data" is capped like any other.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

JSON_BODY_MAX_BYTES = 4 * 1024 * 1024
# The routes whose bodies are uploads, streamed to disk under MMV_MAX_UPLOAD_MB.
UPLOAD_ROUTES = {("POST", "/v1/items"), ("POST", "/v1/search/upload")}


class JsonBodyLimit:
    """Answers 413 `too_large` to a non-multipart body over `max_bytes`: at once when its
    Content-Length says so, else as soon as the bytes read pass the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int = JSON_BODY_MAX_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if (scope.get("method"), scope.get("path", "").rstrip("/")) in UPLOAD_ROUTES:
            await self.app(scope, receive, send)
            return
        message = f"the request body is larger than the limit of {self.max_bytes} bytes"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            detail = {"max_bytes": self.max_bytes, "content_length": int(length)}
            await error_response(413, "too_large", message, detail)(scope, receive, send)
            return
        received = 0

        async def receive_capped() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read: the error handlers answer it.
                    raise HTTPException(413, message)
            return event

        await self.app(scope, receive_capped, send)
