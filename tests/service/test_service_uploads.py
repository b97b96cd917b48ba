"""Streamed multipart uploads: to disk under a random name, hashed, capped."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from service.errors import install_error_handlers
from service.uploads import PARSE_BLOCK_BYTES, receive_upload, shown_name

CAP = 64 * 1024


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path / "tmp"


def upload_app(tmp_dir: Path, cap: int) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/up")
    async def up(request: Request) -> dict:
        upload = await receive_upload(request, tmp_dir, cap, 1024)
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


@pytest.fixture
def client(tmp_dir: Path) -> TestClient:
    return upload_app(tmp_dir, CAP)


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
    assert body["filename"] == "passwd"  # a name to show: its last path component
    assert body["fields"] == {"transcript": "héllo", "metadata": '{"a": 1}'}
    assert list(tmp_dir.iterdir()) == []  # discarded


def test_a_file_larger_than_a_parse_block_arrives_whole(tmp_dir: Path) -> None:
    # Bodies are parsed a block at a time in a worker thread: the blocks' seams and the
    # tail below a block must not lose or reorder a byte.
    data = np.random.default_rng(0).integers(0, 256, 3 * PARSE_BLOCK_BYTES + 12345, np.uint8)
    data_bytes = data.tobytes()
    boundary = "seamseam"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + data_bytes
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks() -> Iterator[bytes]:  # uneven pieces, no Content-Length
        step = 65_537
        for start in range(0, len(body), step):
            yield body[start : start + step]

    r = upload_app(tmp_dir, 8 * PARSE_BLOCK_BYTES).post(
        "/up",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["size"] == len(data_bytes)
    assert r.json()["sha256"] == r.json()["on_disk"] == hashlib.sha256(data_bytes).hexdigest()


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


def test_many_text_fields_are_413(client: TestClient) -> None:
    """Each under its cap, but all kept in memory: thousands filled the server's."""
    many = {f"f{i}": "w" * 1000 for i in range(20)}  # 20 KB: past 8 fields' worth
    r = client.post("/up", files={"file": ("a", b"abc")}, data=many)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["detail"]["max_bytes"] == 8 * 1024
    small = {f"f{i}": "w" for i in range(40)}
    r = client.post("/up", files={"file": ("a", b"abc")}, data=small)
    assert r.status_code == 413 and r.json()["error"]["detail"]["max_fields"] == 32
    fine = {"transcript": "w" * 1000, "metadata": '{"a": 1}', "wait": "true", "asr": "false"}
    assert client.post("/up", files={"file": ("a", b"abc")}, data=fine).status_code == 200


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


def test_a_boundary_the_parser_refuses_is_422_not_500(client: TestClient, tmp_dir: Path) -> None:
    # python-multipart refuses boundaries over 256 bytes (RFC 2046 allows 70) with its
    # base FormParserError, not the MultipartParseError of a malformed body.
    boundary = "b" * 300
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n'
    r = client.post(
        "/up",
        content=(body + f"--{boundary}--\r\n").encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert list(tmp_dir.iterdir()) == []


def test_a_text_field_starting_with_a_byte_order_mark_is_read_without_it(
    client: TestClient,
) -> None:
    # `curl -F transcript=<notes.vtt` sends the file's bytes, BOM included (editors write
    # one at the start of UTF-8 files): it marks the encoding and is not text. Kept, an
    # otherwise empty transcript file was a transcript of one invisible character.
    r = client.post(
        "/up",
        files={
            "file": ("a", b"abc"),
            "transcript": (None, b"\xef\xbb\xbf"),
            "metadata": (None, b'\xef\xbb\xbf{"a": 1}'),
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {"transcript": "", "metadata": '{"a": 1}'}


@pytest.mark.parametrize(
    "tail",
    [
        b'--b\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{"a": 1}',
        b'--b\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{"a": 1}\r\n--b',
        b'--b\r\nContent-Disposition: form-data; name="transcript"',
    ],
)  # fmt: skip
def test_a_body_cut_off_after_the_file_part_is_422_and_leaves_nothing(
    client: TestClient, tmp_dir: Path, tail: bytes
) -> None:
    # python-multipart's finalize() does not check that the closing boundary came: a
    # body ending inside a later part dropped that part (metadata, transcript, k) and
    # the upload was taken without it.
    body = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n' + tail
    r = client.post(
        "/up", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert "closing boundary" in r.json()["error"]["message"]
    assert list(tmp_dir.iterdir()) == []  # the file part received is not kept


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("holiday 2026.mp4", "holiday 2026.mp4"),
        ("C:\\Users\\ana\\Videos\\beach.MOV", "beach.MOV"),
        ("../../etc/pass\x00wd\x1b[31m.wav", "passwd[31m.wav"),
        ("clips/", None),
        ("\x00\x01", None),
        ("é" * 300, "é" * 255),
    ],
)
def test_the_senders_file_name_is_kept_as_a_name_to_show(sent: str, shown: str | None) -> None:
    assert shown_name(sent) == shown
