"""FastAPI dependencies: what routes take from the running service, and API-key auth.

The running service (service/runtime.py) is the app's `state.runtime`; this module is
the one place that reaches into it, so a route names what it needs (`IngestorDep`,
`SearcherDep`, `StorageDep`, ...) and nothing more.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.active_model import ActiveModel
from service.errors import Forbidden, Unauthorized
from service.example_search import ExampleEmbedder
from service.ingest import Ingestor
from service.media_files import MediaFiles
from service.media_links import link_problem
from service.prometheus import Metrics
from service.runtime import Runtime
from service.searcher import Searcher
from service.settings import Settings
from service.storage import Storage
from service.version_switch import VersionSwitch

# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in its
# thread pool, a thread hop per request that costs more than the check itself.


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_settings(request: Request) -> Settings:
    return _runtime(request).settings


async def get_storage(request: Request) -> Storage:
    return _runtime(request).storage


async def get_metrics(request: Request) -> Metrics:
    return _runtime(request).metrics


async def get_active_model(request: Request) -> ActiveModel:
    return _runtime(request).model


async def get_ingestor(request: Request) -> Ingestor:
    return _runtime(request).ingestor


async def get_searcher(request: Request) -> Searcher:
    return _runtime(request).searcher


async def get_example_embedder(request: Request) -> ExampleEmbedder:
    return _runtime(request).examples


async def get_media_files(request: Request) -> MediaFiles:
    return _runtime(request).media_files


async def get_media_link_secret(request: Request) -> bytes:
    return _runtime(request).media_link_secret


async def get_version_switch(request: Request) -> VersionSwitch:
    return _runtime(request).switch


def _scope_of(settings: Settings, presented: str) -> str | None:
    """The scope of the presented key, comparing against every key in constant time."""
    found: str | None = None
    given = presented.encode()
    for key, scope in settings.keys.items():
        # No early exit: the time does not tell which key (or how much of one) matched.
        if hmac.compare_digest(given, key.encode()):
            found = scope
    return found


def authorize(settings: Settings, authorization: str, need: str) -> None:
    """Check the `Authorization` header's value for a key with scope `need` (read|write)."""
    if not settings.keys:
        return  # no keys configured: only possible on loopback (Settings.check)
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized("this server needs an API key: send 'Authorization: Bearer KEY'")
    scope = _scope_of(settings, credentials.strip())
    if scope is None:
        raise Unauthorized("the API key is not valid")
    if need == "write" and scope != "write":
        raise Forbidden("this API key may only read; this route needs a key with write scope")


async def require_read(request: Request) -> None:
    authorize(_runtime(request).settings, request.headers.get("authorization", ""), "read")


async def require_write(request: Request) -> None:
    authorize(_runtime(request).settings, request.headers.get("authorization", ""), "write")


async def require_media_read(request: Request) -> None:
    """An item's media: a read key in the header, or a signed link to this item's media
    (service/media_links.py: what a browser's media element can carry)."""
    settings = _runtime(request).settings
    params = request.query_params
    if not settings.keys or request.headers.get("authorization") or "signature" not in params:
        authorize(settings, request.headers.get("authorization", ""), "read")
        return
    item_id = request.path_params.get("item_id", "")
    secret = _runtime(request).media_link_secret
    problem = link_problem(secret, item_id, params.get("expires", ""), params["signature"])
    if problem:
        raise Unauthorized(problem)


def check_route_key(request: Request) -> None:
    """The key check of the route `request` matched, run on its own: FastAPI reads a
    JSON body before a route's dependencies, so a malformed one was answered 422 before
    a request without a key could be told 401 (service/errors.py asks this first)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    found: list[object] = []
    stack = [dependant] if dependant is not None else []
    while stack:
        current = stack.pop()
        found.append(current.call)
        stack.extend(current.dependencies)
    if require_write in found:
        authorize(_runtime(request).settings, request.headers.get("authorization", ""), "write")
    elif require_read in found:  # (media routes take no body; a signed link is their key)
        authorize(_runtime(request).settings, request.headers.get("authorization", ""), "read")


ReadAccess = Annotated[None, Depends(require_read)]
MediaReadAccess = Annotated[None, Depends(require_media_read)]
WriteAccess = Annotated[None, Depends(require_write)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ActiveModelDep = Annotated[ActiveModel, Depends(get_active_model)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
ExampleEmbedderDep = Annotated[ExampleEmbedder, Depends(get_example_embedder)]
MediaFilesDep = Annotated[MediaFiles, Depends(get_media_files)]
VersionSwitchDep = Annotated[VersionSwitch, Depends(get_version_switch)]
MediaLinkSecretDep = Annotated[bytes, Depends(get_media_link_secret)]
