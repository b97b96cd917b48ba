"""Only the local user's own pages may talk to a server that has no API keys.

Without keys the server listens on loopback only (settings.py), but a web page from any
site the local user opens can still send it requests: a cross-site form or `fetch`
with a "simple" content type needs no CORS preflight (uploads, deletes of what it can
guess), and DNS rebinding (a host name of the attacker's that turns into 127.0.0.1)
makes the page same-origin with the server, so it can read answers too. So, while no
keys are set:

- the Host header must name the server as the local user reaches it: 127.0.0.1,
  localhost or ::1 (or MMV_HOST), on any port; a rebound name is refused;
- a request that changes something (anything but GET, HEAD, OPTIONS) that carries an
  Origin must come from one of those hosts, or from a MMV_CORS_ORIGINS entry.

Both answer 403 `forbidden`, saying why. With keys set, the key is the guard: a page
from elsewhere cannot send it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_response

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def host_name(value: str) -> str:
    """The host of a Host header or an origin's netloc, without port or brackets."""
    try:
        return (urlsplit(f"//{value}").hostname or "").lower()
    except ValueError:  # e.g. an unclosed bracket
        return ""


def origin_host(origin: str) -> str:
    """The host of an Origin header; "" when it is no URL (a foreign one, then)."""
    try:
        return host_name(urlsplit(origin).netloc)
    except ValueError:  # e.g. "http://[": urlsplit raises "Invalid IPv6 URL"
        return ""


class OriginGuard:
    def __init__(self, app: ASGIApp, bound_host: str, cors_origins: list[str]) -> None:
        self.app = app
        self.hosts = LOCAL_HOSTS | {bound_host.lower().strip("[]")}
        self.origins = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        problem = None
        if host is not None and host_name(host) not in self.hosts:
            problem = (
                f"this server answers requests addressed to 127.0.0.1 or localhost, not "
                f"{host[:100]!r} (it has no API keys, so it serves this machine's user only)"
            )
        elif origin is not None and scope["method"] not in SAFE_METHODS:
            allowed = origin.rstrip("/").lower() in self.origins
            if not allowed and origin_host(origin) not in self.hosts:
                problem = (
                    f"a page from {origin[:100]!r} cannot change anything here: without API "
                    "keys only this server's own page may (or add the origin to "
                    "MMV_CORS_ORIGINS)"
                )
        if problem is not None:
            await error_response(403, "forbidden", problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)
