"""API keys with read and write scopes, CORS when configured, and the refusal to serve
other machines without keys — against a real `python -m service`."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_server import REPO, Server, assert_error, running_server, server_env

READ_KEY = "reader-key-0123456789"
WRITE_KEY = "writer-key-9876543210"
ORIGIN = "http://app.example.test"

# Keys and origins come from the settings, never from storage: on PostgreSQL in make soak.
pytestmark = pytest.mark.postgres_in_soak


@pytest.fixture(scope="module")
def keyed_server(
    tmp_path_factory: pytest.TempPathFactory, random_model: Path, e2e_database: str
) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("keyed")
    with running_server(
        d / "data",
        random_model,
        d / "server.log",
        MMV_API_KEYS=f"{READ_KEY}:read,{WRITE_KEY}:write",
        MMV_CORS_ORIGINS=ORIGIN,
    ) as server:
        yield server


def client_for(server: Server, key: str | None, scheme: str = "Bearer") -> httpx.Client:
    headers = {"Authorization": f"{scheme} {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60.0)


def test_missing_or_wrong_keys_get_401(keyed_server: Server) -> None:
    for key, scheme in [(None, "Bearer"), ("not-a-key", "Bearer"), (READ_KEY[:-1], "Bearer"),
                        (READ_KEY, "Basic"), (READ_KEY + "x", "Bearer")]:  # fmt: skip
        with client_for(keyed_server, key, scheme) as c:
            r = c.get("/v1/items")
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
            assert_error(c.post("/v1/search", json={"query": {"text": "x"}, "target": "audio"}),
                         401, "unauthorized")  # fmt: skip
            assert_error(c.get("/v1/search", params={"q": "x", "target": "audio"}),
                         401, "unauthorized")  # fmt: skip
            assert_error(c.get("/metrics"), 401, "unauthorized")


def test_read_key_reads_and_searches_but_cannot_write(keyed_server: Server, media: dict) -> None:
    with client_for(keyed_server, WRITE_KEY) as writer:
        item = writer.post("/v1/items/text", json={"text": "secret tone"})
        assert item.status_code == 201, item.text
    item_id = item.json()["id"]
    with client_for(keyed_server, READ_KEY) as c:
        assert c.get("/v1/items").status_code == 200
        assert c.get(f"/v1/items/{item_id}").status_code == 200
        assert c.get("/v1/search", params={"q": "secret", "target": "text"}).status_code == 200
        r = c.post("/v1/search", json={"query": {"item_id": item_id}, "target": "text"})
        assert r.status_code == 200
        r = c.post("/v1/search/upload", data={"target": "audio"},
                   files={"file": ("t.wav", media["tone"].read_bytes())})  # fmt: skip
        assert r.status_code == 200, r.text
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/training/jobs").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert_error(c.post("/v1/items/text", json={"text": "x"}), 403, "forbidden")
        assert_error(
            c.post("/v1/items", files={"file": ("t.wav", media["tone"].read_bytes())}),
            403, "forbidden",
        )  # fmt: skip
        assert_error(c.delete(f"/v1/items/{item_id}"), 403, "forbidden")
        assert_error(c.post("/v1/training/jobs", json={}), 403, "forbidden")
        assert_error(c.post("/v1/models/x/activate"), 403, "forbidden")
    with client_for(keyed_server, WRITE_KEY) as writer:
        assert writer.delete(f"/v1/items/{item_id}").status_code == 204


def test_a_signed_link_streams_one_items_media_without_a_header(
    keyed_server: Server, media: dict
) -> None:
    """What a browser's <video> can carry: the web page downloaded a whole file with the
    header into a blob: before a second of it played."""
    original = media["tone"].read_bytes()
    with client_for(keyed_server, WRITE_KEY) as writer:
        sound = writer.post("/v1/items", files={"file": ("tone.wav", original)}).json()
        other = writer.post("/v1/items", files={"file": ("clip.mp4", media["clip"].read_bytes())})
        other_id = other.json()["id"]
    with client_for(keyed_server, READ_KEY) as reader:
        link = reader.get(f"/v1/items/{sound['id']}/media-link").json()
        assert link["url"].startswith(f"/v1/items/{sound['id']}/media?expires=")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", link["expires_at"])
        assert_error(reader.get("/v1/items/nope/media-link"), 404, "not_found")
    with client_for(keyed_server, None) as anyone:
        assert_error(anyone.get(f"/v1/items/{sound['id']}/media-link"), 401, "unauthorized")
        whole = anyone.get(link["url"])
        assert whole.status_code == 200 and whole.content == original
        part = anyone.get(link["url"], headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == original[10:20]
        # One item's link opens that item only, as it was signed.
        query = link["url"].partition("?")[2]
        moved = anyone.get(f"/v1/items/{other_id}/media?{query}")
        assert "not valid" in assert_error(moved, 401, "unauthorized")["message"]
        tampered = link["url"][:-1] + ("0" if link["url"][-1] != "0" else "1")
        assert_error(anyone.get(tampered), 401, "unauthorized")
        later = link["url"].replace("expires=", "expires=9")  # a later expiry: not signed
        assert_error(anyone.get(later), 401, "unauthorized")
        assert_error(anyone.get(f"/v1/items/{sound['id']}/media"), 401, "unauthorized")
    with client_for(keyed_server, WRITE_KEY) as writer:
        for item_id in (sound["id"], other_id):
            assert writer.delete(f"/v1/items/{item_id}").status_code == 204


def test_probes_and_the_page_need_no_key(keyed_server: Server) -> None:
    with client_for(keyed_server, None) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.get("/").status_code == 200
        assert c.get("/openapi.json").status_code == 200


def test_cors_allows_only_the_configured_origin(keyed_server: Server) -> None:
    with client_for(keyed_server, None) as c:
        preflight = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
        ok = c.options("/v1/search", headers={"Origin": ORIGIN, **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        bad = c.options("/v1/search", headers={"Origin": "http://evil.test", **preflight})
        assert bad.headers.get("access-control-allow-origin") != "http://evil.test"
        simple = c.get("/healthz", headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"MMV_HOST": "0.0.0.0"}, "MMV_API_KEYS"),
        ({"MMV_HOST": "192.168.1.20"}, "MMV_API_KEYS"),
        ({"MMV_API_KEYS": "abc:admin"}, "KEY:read or KEY:write"),
        ({"MMV_PORT": "not-a-port"}, "port"),
    ],
)
def test_refuses_to_start_with_unsafe_or_bad_settings(
    settings: dict[str, str], says: str, tmp_path: Path, random_model: Path
) -> None:
    env = server_env(tmp_path / "data", random_model, 1, **settings)
    done = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything


def test_without_keys_only_local_pages_may_talk_to_the_server(server: Server) -> None:
    # No keys (loopback only): a page of another site could still POST uploads as a
    # "simple" cross-site request, and a DNS-rebound name of its own could read and delete.
    port = server.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            assert c.get("/v1/items", headers={"Host": host}).status_code == 200
        for host in (f"attacker.example:{port}", "attacker.example", "127.0.0.1.nip.io"):
            err = assert_error(c.get("/v1/items", headers={"Host": host}), 403, "forbidden")
            assert "127.0.0.1 or localhost" in err["message"]
            assert_error(
                c.get("/v1/search", params={"q": "a", "target": "audio"}, headers={"Host": host}),
                403, "forbidden",
            )  # fmt: skip
        text = {"text": "written from a page", "metadata": {}}
        evil = {"Origin": "http://attacker.example"}
        err = assert_error(c.post("/v1/items/text", json=text, headers=evil), 403, "forbidden")
        assert "attacker.example" in err["message"]
        assert_error(c.delete("/v1/items/anything", headers=evil), 403, "forbidden")
        # Reading from elsewhere is CORS's business; the server's own page may write.
        assert c.get("/v1/items", headers=evil).status_code == 200
        own = {"Origin": f"http://127.0.0.1:{port}"}
        made = c.post("/v1/items/text", json=text, headers=own)
        assert made.status_code == 201, made.text
        assert c.delete(f"/v1/items/{made.json()['id']}", headers=own).status_code == 204


# Routes anyone may call, keys or not (docs/service.md "Security").
OPEN_ROUTES = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"), ("GET", "/docs")}
# POST routes a read key may call: searching reads.
READ_POSTS = {"/v1/search", "/v1/search/upload"}
JSON_TYPE = {"Content-Type": "application/json"}


def test_every_route_of_the_schema_checks_its_key_and_scope(keyed_server: Server) -> None:
    """Every operation the live OpenAPI schema lists (so a route added later is covered
    without touching this test): no key or a wrong one is 401 before anything else
    happens; a read key is 403 on every write; nothing answers 401/403 to its scope."""
    with client_for(keyed_server, None) as c:
        paths = c.get("/openapi.json").json()["paths"]
    operations = [
        (method.upper(), path)
        for path, ops in paths.items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(operations) >= 15, operations  # the schema lists the whole API
    checked = 0
    for method, template in operations:
        if (method, template) in OPEN_ROUTES:
            continue
        path = re.sub(r"\{[^}]+\}", "no-such-id", template)
        writes = method != "GET" and template not in READ_POSTS
        for key in (None, "wrong-key-0000000000", READ_KEY + "x"):
            with client_for(keyed_server, key) as c:
                assert_error(c.request(method, path), 401, "unauthorized")
                if method == "POST":  # a malformed body was answered 422 before the key
                    bad = c.request(method, path, content=b"{", headers=JSON_TYPE)
                    assert_error(bad, 401, "unauthorized")
        with client_for(keyed_server, READ_KEY) as c:
            r = c.request(method, path)
            if writes:
                assert_error(r, 403, "forbidden")
                if method == "POST":
                    bad = c.request(method, path, content=b"{", headers=JSON_TYPE)
                    assert_error(bad, 403, "forbidden")
            else:
                assert r.status_code not in (401, 403), (method, path, r.text)
        with client_for(keyed_server, WRITE_KEY) as c:
            r = c.request(method, path)
            assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, r.text)
        checked += 1
    assert checked >= 15
