"""Without a model the server still starts, says why it is not ready, and answers
`no_model` where a model is needed (rather than failing or hanging)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from e2e_server import REPO, START_TIMEOUT_S, assert_error, free_port, server_env

from service.healthcheck import check


def test_serves_without_a_model_and_says_so(tmp_path: Path, media: dict[str, Path]) -> None:
    port = free_port()
    env = server_env(tmp_path / "data", tmp_path / "no-such-model", port)
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the server never answered /healthz"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=30) as c:
            ready = c.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["model_version"] is None and body["indexes"] == {}
            assert body["error"]["code"] == "not_ready"
            r = c.post("/v1/items", files={"file": ("t.wav", media["tone"].read_bytes())})
            assert_error(r, 503, "no_model")
            assert_error(c.get("/v1/search", params={"q": "x", "target": "audio"}), 503, "no_model")
            assert_error(c.post("/v1/items/text", json={"text": "x"}), 503, "no_model")
            assert c.get("/v1/items").json() == {"items": [], "next_cursor": None}
            assert c.get("/v1/models").json() == {"models": []}
        # The container's health check says it cannot serve (it asked /healthz, which
        # answers as long as the process does: "healthy" with no model, for ever).
        healthy, why = check(port)
        assert not healthy and "503" in why and "no model is loaded" in why
        assert "no model" in (tmp_path / "server.log").read_text()
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
