"""The hottest request, `GET /v1/search?q=...`, answered beneath the framework.

Under load the service's event loop is its bottleneck: one thread parses every request
and holds the GIL while it does. Going through FastAPI's stack (five middlewares, route
matching, a Request object, dependency solving) cost about half of that thread's time
per text search. This ASGI layer sits outside the stack and answers `GET /v1/search`
itself, with the same function the declared route calls (`text_search.text_search`),
so checks, errors and results are the same; the route stays declared for the OpenAPI
schema and answers whatever this layer passes on.

It passes on (to the whole app) every other request, and text searches with an
`Origin` header, so that CORS (a user middleware, when configured) applies to them.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError, error_response, service_error_response
from service.text_search import query_params, text_search

log = logging.getLogger("service.errors")

PATH = "/v1/search"
_HEADERS = [(b"content-type", b"application/json")]


class TextSearchFastPath:
    def __init__(self, app: ASGIApp, route: Any) -> None:
        self.app = app
        self.route = route  # the declared route: its path labels metrics and logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"origin":  # a browser's cross-origin request: CORS decides
                await self.app(scope, receive, send)
                return
        scope["route"] = self.route
        try:
            params = query_params(scope["query_string"])
            runtime = scope["app"].state.runtime
            body = await text_search(runtime.settings, runtime.searcher, params, authorization)
        except ServiceError as exc:
            await service_error_response(exc)(scope, receive, send)
            return
        except Exception:  # a bug: answer as the app's own handler would, keep serving
            log.exception("unhandled error on GET %s", PATH)
            response = error_response(
                500, "internal_error", "the server failed to answer this request; see its log"
            )
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
