"""The FastAPI application: `create_app(settings)` wires routers, errors, middleware."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.answered_errors import AnsweredErrorsEndHere
from service.body_limit import JsonBodyLimit
from service.deps import check_route_key
from service.errors import install_error_handlers
from service.fast_path import TextSearchFastPath
from service.logs import RequestContextMiddleware
from service.origin_guard import OriginGuard
from service.prometheus import Metrics
from service.routes import items, models, ops, search, training
from service.routes.ops import STATIC_DIR, PageFiles
from service.runtime import Runtime
from service.schemas import ErrorOut
from service.settings import Settings

log = logging.getLogger("service")

API_VERSION = "1.0.0"
DESCRIPTION = (
    "Cross-modal search over videos, sounds, pictures and texts with MMV (fine and coarse "
    "spaces). The contract is docs/api.md; every error answers "
    '`{"error": {"code", "message", "detail"}}`.'
)


class SearchServiceApp(FastAPI):
    """FastAPI behind plain ASGI layers: the request context (id, latency histogram,
    access log), which so covers every request and every error; the end of an error
    whose 500 was sent (service/answered_errors.py), so the connection outlives it; and
    the fast path for text search (service/fast_path.py), which answers before the
    framework's own per-request work (telemetry checks, middleware stack, routing)
    starts."""

    def __init__(
        self, metrics: Metrics, log_access: bool, settings: Settings, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics
        self._log_access = log_access
        self._settings = settings
        self._outer: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self._outer is None:
            route = next(
                r
                for r in search.router.routes
                if isinstance(r, APIRoute) and r.endpoint is search.search_get
            )
            inner: ASGIApp = TextSearchFastPath(super().__call__, route)
            if not self._settings.keys:  # no key to guard it: only local pages may talk
                inner = OriginGuard(inner, self._settings.host, self._settings.cors_origin_list)
            self._outer = RequestContextMiddleware(
                AnsweredErrorsEndHere(inner), metrics=self._metrics, log_access=self._log_access
            )
        scope["app"] = self  # the fast path finds the runtime here, as routes do
        await self._outer(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.check()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, metrics)
        app.state.runtime = runtime
        if hasattr(app.state, "stop_server"):  # set by `python -m service`
            runtime.stop_server = app.state.stop_server
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        url = f"http://{host}:{settings.port}/"

        def ready() -> None:
            # Everything loaded so far (model, libraries, indexes) lives as long as the
            # server: keep it out of the cyclic collector, whose full passes over it
            # stalled every request in flight for 60-130 ms under load (search p99).
            gc.collect()
            gc.freeze()
            log.info("serving", extra={"url": url})
            print(f"\n  mmv-search is ready: open {url} in a browser\n", flush=True)

        await runtime.start(on_ready=ready)  # the model and indexes load in the background
        log.info("answering on %s while the model and indexes load", url)
        try:
            yield
        finally:
            log.info("shutting down: finishing uploads in progress")
            await runtime.stop()

    app = SearchServiceApp(
        metrics,
        settings.access_log,
        settings,
        title="mmv-search",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app, check_route_key)
    app.add_middleware(JsonBodyLimit)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Range", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Content-Range", "Accept-Ranges"],
        )
    # Hot routes first: FastAPI tries routers in order (search is what runs at load).
    for router in (search.router, ops.router, items.router, training.router, models.router):
        app.include_router(router)
    app.mount("/static", PageFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.openapi = lambda: contract_openapi(app)  # type: ignore[method-assign]
    return app


def contract_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error response in the contract's shape (FastAPI
    would describe its own validation-error body for 422)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
                      .pop("$defs", {}))  # fmt: skip
    components["ErrorOut"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components["ErrorOut"].pop("$defs", None)
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("422", {"description": "invalid_request"})
            if path.startswith(("/v1/", "/metrics")):
                responses.setdefault("401", {"description": "unauthorized: no or wrong key"})
                responses.setdefault("403", {"description": "forbidden: the key's scope"})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and path != "/readyz":
                    response["content"] = error_content
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema
