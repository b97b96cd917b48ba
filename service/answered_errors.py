"""An unexpected error whose 500 has been sent ends at the app, not in uvicorn.

Starlette's ServerErrorMiddleware answers an unhandled exception with the app's handler
(the contract's 500, logged by `service.errors`) and then raises it again, so that a
test client sees it. uvicorn, given an exception after a response has started, closes
the connection at once: a keep-alive client loses its connection to a bug in one
request, and a client still sending a body (an upload) can read a reset instead of the
500, because the kernel answers unread bytes with one.

This layer drops an exception raised after the whole answer was sent; the connection
then ends as after any other answer (kept alive, or a lingering close that reads the
rest of the body: service/http_protocol.py). An exception raised before the answer
began, or in the middle of its body, goes on to uvicorn, which answers 500 or cuts the
half-sent response off, as it must.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import LOGGED_NOTE

log = logging.getLogger("service.errors")


class AnsweredErrorsEndHere:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def watch(message: Message) -> None:
            nonlocal answered
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if not answered:
                raise
            # Starlette calls the app's handler for every unhandled error, which logs it
            # (an error in a background task after a 200 too); anything else is logged here.
            if LOGGED_NOTE not in getattr(exc, "__notes__", ()):
                log.exception("error after the answer to %s %s", scope["method"], scope["path"])
