"""FastAPI dependencies: the runtime, settings, storage and API-key auth with scopes."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.errors import Forbidden, Unauthorized
from service.runtime import Runtime
from service.settings import Settings
from service.storage import Storage

# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in its
# thread pool, a thread hop per request that costs more than the check itself.


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


async def get_storage(request: Request) -> Storage:
    return request.app.state.runtime.storage


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


def _authorize(request: Request, need: str) -> None:
    authorize(request.app.state.runtime.settings, request.headers.get("authorization", ""), need)


async def require_read(request: Request) -> None:
    _authorize(request, "read")


async def require_write(request: Request) -> None:
    _authorize(request, "write")


ReadAccess = Annotated[None, Depends(require_read)]
WriteAccess = Annotated[None, Depends(require_write)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
