"""Signed media links (service/media_links.py): made and checked with the same secret,
for one item, until they expire; a new secret or new keys revoke them; without keys,
the plain path."""

from __future__ import annotations

from pathlib import Path

from service.media_links import (
    MEDIA_LINK_TTL_S,
    SECRET_KEY,
    link_problem,
    link_secret,
    media_link,
    new_random_secret,
)
from service.settings import Settings
from service.storage import Storage

KEYS = "reader-key-0123456789:read,writer-key-9876543210:write"


def query_of(url: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in url.partition("?")[2].split("&"))


def test_a_link_opens_its_item_until_it_expires_and_under_the_same_secret_only() -> None:
    settings, stored = Settings(api_keys=KEYS), new_random_secret()
    secret = link_secret(settings, stored)
    url, expires = media_link(settings, secret, "abc", now=1_000_000.0)
    assert expires == 1_000_000 + MEDIA_LINK_TTL_S
    q = query_of(url)
    assert url.startswith("/v1/items/abc/media?") and q["expires"] == str(expires)
    assert link_problem(secret, "abc", q["expires"], q["signature"], now=expires - 1) is None
    expired = link_problem(secret, "abc", q["expires"], q["signature"], now=expires + 1)
    assert expired is not None and "expired" in expired
    problem = link_problem(secret, "abd", q["expires"], q["signature"], now=expires - 1)
    assert problem is not None and "not valid" in problem
    # New keys, or another random value, revoke every link; the keys alone do not make
    # the secret (a link seen tells nothing to guess them by).
    rotated = link_secret(Settings(api_keys="another-key-0123456789:read"), stored)
    other = link_secret(settings, new_random_secret())
    for wrong in (rotated, other):
        assert link_problem(wrong, "abc", q["expires"], q["signature"], now=expires - 1)
    malformed = link_problem(secret, "abc", "soon", q["signature"])
    assert malformed is not None and "malformed" in malformed


def test_replicas_share_the_first_random_value_stored(tmp_path: Path) -> None:
    one, two = Storage(tmp_path / "db.sqlite"), Storage(tmp_path / "db.sqlite")
    try:
        first = one.state.get_or_set(SECRET_KEY, new_random_secret())
        assert two.state.get_or_set(SECRET_KEY, new_random_secret()) == first
    finally:
        one.close()
        two.close()


def test_without_keys_the_link_is_the_plain_path() -> None:
    url, _ = media_link(Settings(), b"x" * 32, "a b/c")
    assert url == "/v1/items/a%20b%2Fc/media"
