"""The content type a stored file is served with, from what ffprobe finds in real files.

An animated GIF or APNG is a video item; its container was mapped for image items only,
so GET /v1/items/{id}/media served it as application/octet-stream (with nosniff: the
browser downloaded it instead of showing it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from model.media import read_media_info
from service.content_types import content_type_of

TESTSRC = ["-f", "lavfi", "-i", "testsrc=size=80x60:rate=10"]


@pytest.mark.parametrize(
    ("name", "args", "kind", "content_type"),
    [
        ("anim.gif", [*TESTSRC, "-t", "1"], "video", "image/gif"),
        ("anim.apng", [*TESTSRC, "-t", "1", "-plays", "0"], "video", "image/apng"),
        ("still.gif", [*TESTSRC, "-frames:v", "1"], "image", "image/gif"),
        ("still.png", [*TESTSRC, "-frames:v", "1"], "image", "image/png"),
        ("clip.mp4", [*TESTSRC, "-t", "1", "-pix_fmt", "yuv420p"], "video", "video/mp4"),
        ("tone.m4a", ["-f", "lavfi", "-i", "sine=d=1"], "audio", "audio/mp4"),
    ],
)
def test_each_kind_is_served_with_its_containers_type(
    tmp_path: Path, name: str, args: list[str], kind: str, content_type: str
) -> None:
    path = tmp_path / name
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args, str(path)], check=True, timeout=60)
    info = read_media_info(path)
    assert info.kind == kind
    assert content_type_of(info) == content_type
