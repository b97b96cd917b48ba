"""Streamed multipart uploads: to disk under a random name, hashed, capped."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from service.errors import install_error_handlers
from service.uploads import receive_upload

CAP = 64 * 1024


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path / "tmp"


@pytest.fixture
def client(tmp_dir: Path) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/up")
    async def up(request: Request) -> dict:
        upload = await receive_upload(request, tmp_dir, CAP, 1024)
        try:
            assert upload.path is not None and upload.path.parent == tmp_dir
            return {
                "size": upload.size,
                "sha256": upload.sha256,
                "on_disk": hashlib.sha256(upload.path.read_bytes()).hexdigest(),
                "name": upload.path.name,
                "filename": upload.filename,
                "fields": upload.fields,
            }
        finally:
            upload.discard()

    return TestClient(app)


def test_file_is_streamed_to_a_random_name_and_hashed(client: TestClient, tmp_dir: Path) -> None:
    data = bytes(range(256)) * 200  # 51 200 bytes: several chunks
    r = client.post(
        "/up",
        files={"file": ("../../etc/passwd", data, "video/mp4")},
        data={"transcript": "héllo", "metadata": '{"a": 1}'},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == len(data)
    assert body["sha256"] == body["on_disk"] == hashlib.sha256(data).hexdigest()
    assert body["name"].startswith("upload-") and "passwd" not in body["name"]
    assert body["filename"] == "../../etc/passwd"  # kept as text only
    assert body["fields"] == {"transcript": "héllo", "metadata": '{"a": 1}'}
    assert list(tmp_dir.iterdir()) == []  # discarded


def test_over_the_byte_cap_is_413_and_leaves_nothing(client: TestClient, tmp_dir: Path) -> None:
    r = client.post("/up", files={"file": ("big.bin", b"x" * (CAP + 1))})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    assert r.json()["error"]["detail"]["max_bytes"] == CAP
    assert list(tmp_dir.iterdir()) == []


def test_a_declared_length_over_the_cap_is_refused_before_reading(client: TestClient) -> None:
    body = b"--b\r\n" + b"x" * 10
    r = client.post(
        "/up",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b",
                 "content-length": str(CAP * 100)},
    )  # fmt: skip
    assert r.status_code == 413


def test_big_text_fields_are_413(client: TestClient) -> None:
    r = client.post("/up", files={"file": ("a", b"abc")}, data={"transcript": "w" * 2000})
    assert r.status_code == 413 and r.json()["error"]["detail"]["field"] == "transcript"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"abc", "headers": {"content-type": "video/mp4"}}, 415, "unsupported_media"),
        ({"data": {"transcript": "x"}}, 415, "unsupported_media"),  # urlencoded, not multipart
        ({"files": {"transcript": (None, "x")}}, 422, "invalid_request"),  # no file part
        ({"files": {"file": ("a", b"")}}, 422, "invalid_request"),  # empty file
        (
            {"content": b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
             "headers": {"content-type": "multipart/form-data; boundary=b"}},
            422, "invalid_request",
        ),  # the body ends inside the file part
    ],
)  # fmt: skip
def test_bad_bodies_are_4xx(client: TestClient, kwargs: dict, status: int, code: str) -> None:
    r = client.post("/up", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
