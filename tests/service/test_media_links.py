"""Signed media links (service/media_links.py): made and checked by the same keys, for
one item, until they expire; without keys, the plain path."""

from __future__ import annotations

from service.media_links import MEDIA_LINK_TTL_S, link_problem, media_link
from service.settings import Settings

KEYS = "reader-key-0123456789:read,writer-key-9876543210:write"


def query_of(url: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in url.partition("?")[2].split("&"))


def test_a_link_opens_its_item_until_it_expires_and_under_the_same_keys_only() -> None:
    settings = Settings(api_keys=KEYS)
    url, expires = media_link(settings, "abc", now=1_000_000.0)
    assert expires == 1_000_000 + MEDIA_LINK_TTL_S
    q = query_of(url)
    assert url.startswith("/v1/items/abc/media?") and q["expires"] == str(expires)
    assert link_problem(settings, "abc", q["expires"], q["signature"], now=expires - 1) is None
    expired = link_problem(settings, "abc", q["expires"], q["signature"], now=expires + 1)
    assert expired is not None and "expired" in expired
    problem = link_problem(settings, "abd", q["expires"], q["signature"], now=expires - 1)
    assert problem is not None and "not valid" in problem
    rotated = Settings(api_keys="another-key-0123456789:read")  # new keys revoke links
    assert link_problem(rotated, "abc", q["expires"], q["signature"], now=expires - 1)
    malformed = link_problem(settings, "abc", "soon", q["signature"])
    assert malformed is not None and "malformed" in malformed


def test_without_keys_the_link_is_the_plain_path() -> None:
    url, _ = media_link(Settings(), "a b/c")
    assert url == "/v1/items/a%20b%2Fc/media"
