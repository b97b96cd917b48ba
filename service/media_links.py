"""Signed links to an item's media, for clients that cannot send a header.

A browser's <video>, <audio> and <img> fetch their `src` themselves and send no
`Authorization` header. With API keys the web page had to download a whole file with
the header and hand the element a blob: URL: an hour of video downloaded into memory
before a second of it played, and every seek inside the file. A signed link lets the
element stream with Range requests like any URL: `GET /v1/items/{id}/media-link`
(read scope) answers `/v1/items/{id}/media?expires=T&signature=S`, which
`GET /v1/items/{id}/media` accepts without a header until T.

The signature is an HMAC-SHA256 of the item id and T under a secret made of a random
value kept in the database (every replica shares it; a link, seen, tells nothing about
the API keys) and the configured API keys (changing the keys revokes every link). A
link opens that one item's media, read only, for MEDIA_LINK_TTL_S at most; like any
presigned URL it is a bearer credential for that long wherever it is seen (an access
log, a shared screen).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import quote

from service.settings import Settings

MEDIA_LINK_TTL_S = 6 * 3600  # a film watched in one sitting; the page asks again after
SIGNATURE_HEX = 32  # 128 bits of the HMAC


SECRET_KEY = "media_link_secret"  # the state table's row


def new_random_secret() -> str:
    return secrets.token_hex(32)


def link_secret(settings: Settings, stored: str) -> bytes:
    """The signing secret: the stored random value, bound to the configured keys."""
    keys = "\n".join(sorted(settings.keys)).encode()
    return hmac.new(bytes.fromhex(stored), b"mmv media links\n" + keys, hashlib.sha256).digest()


def signature(secret: bytes, item_id: str, expires: int) -> str:
    message = f"{item_id}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:SIGNATURE_HEX]


def media_link(
    settings: Settings, secret: bytes, item_id: str, now: float | None = None
) -> tuple[str, int]:
    """(the link, when it expires in Unix seconds). Without keys the media route needs
    no credential: the plain path, good for as long as the link would have been."""
    expires = int(now if now is not None else time.time()) + MEDIA_LINK_TTL_S
    path = f"/v1/items/{quote(item_id, safe='')}/media"
    if not settings.keys:
        return path, expires
    return f"{path}?expires={expires}&signature={signature(secret, item_id, expires)}", expires


def link_problem(
    secret: bytes, item_id: str, expires: str, given: str, now: float | None = None
) -> str | None:
    """Why a link does not open this item's media now, or None when it does."""
    try:
        until = int(expires)
    except ValueError:
        return "the media link is malformed (expires is not a number)"
    expected = signature(secret, item_id, until)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return "the media link is not valid (made for another item, or under other API keys)"
    if until < (now if now is not None else time.time()):
        return "the media link has expired: ask GET /v1/items/{id}/media-link for a new one"
    return None
