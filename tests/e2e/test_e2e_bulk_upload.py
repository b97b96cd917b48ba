"""`python -m service.bulk_upload`: a folder of media imported into a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from e2e_server import REPO, Server, make_picture, make_tone

VTT = "WEBVTT\n\n00:00.000 --> 00:02.000\na bell rings twice\n"


@pytest.fixture
def library(tmp_path: Path, media: dict[str, Path]) -> Path:
    root = tmp_path / "library"
    (root / "interviews" / "2024").mkdir(parents=True)
    (root / ".trash").mkdir()
    make_tone(root / "bell.wav", 1733)
    (root / "Bell.VTT").write_text(VTT)  # paired in any case, as cameras name them
    shutil.copy(media["clip2"], root / "interviews" / "2024" / "ana take 3.mp4")
    make_picture(root / "poster.png", source="smptehdbars")
    # Refused, under a name that is not UTF-8: it is shown, not a crash of the import.
    (root / os.fsdecode(b"broken \xe9.mp4")).write_bytes(b"this is no video" * 100)
    (root / "notes.txt").write_text("not media, not beside a media file")
    make_tone(root / ".trash" / "old.wav", 1801)  # hidden: left alone
    (root / "gone.wav").symlink_to(root / "nowhere.wav")  # a broken link: refused alone
    # A name from an archive written in Latin-1 (not UTF-8): sent with the byte replaced.
    make_tone(root / "latin.wav", 1907).rename(root / os.fsdecode(b"caf\xe9.wav"))
    # A folder on another disk, linked in: followed; a link back up the tree: once only.
    (tmp_path / "disk2").mkdir()
    make_tone(tmp_path / "disk2" / "gong.wav", 2113)
    (root / "disk2").symlink_to(tmp_path / "disk2", target_is_directory=True)
    (root / "interviews" / "all").symlink_to(root, target_is_directory=True)
    return root


def bulk_upload(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.bulk_upload", str(root), "--quiet", "--no-asr", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        # Strict, as a UTF-8 terminal's locale makes it (C.UTF-8 would escape instead).
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8:strict"},
    )  # fmt: skip


# A client of the API: the same on either engine (storage on PostgreSQL is covered by
# the rest); its PostgreSQL run is in make soak.
@pytest.mark.postgres_in_soak
def test_a_folder_is_imported_with_names_folders_and_transcripts_and_resumes(
    server: Server, library: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    args = ("--url", server.url, "--report", str(report), "--metadata", '{"source": "archive"}')
    done = bulk_upload(library, *args)
    # One file refused, named as it is in the folder, with the server's reason.
    assert done.returncode == 1, done.stderr
    assert "7 files: 5 added, 0 already stored, 0 skipped (stored by an earlier run), 2 refused" \
        in done.stdout, done.stdout  # fmt: skip
    assert "  broken \ufffd.mp4: 'broken \ufffd.mp4' is not a media file ffmpeg can read" \
        in done.stdout, done.stdout  # fmt: skip
    assert "  gone.wav: cannot be read: No such file or directory" in done.stdout

    listed = httpx.get(f"{server.url}/v1/items", params={"limit": 1000}, timeout=10).json()
    ours = {i["filename"]: i for i in listed["items"] if i["metadata"].get("source") == "archive"}
    assert sorted(ours) == ["ana take 3.mp4", "bell.wav", "caf\ufffd.wav", "gong.wav", "poster.png"]
    assert ours["gong.wav"]["metadata"]["folder"] == "disk2"
    assert ours["ana take 3.mp4"]["metadata"] == {"source": "archive", "folder": "interviews/2024"}
    assert ours["bell.wav"]["metadata"]["folder"] == ""
    assert (ours["bell.wav"]["transcript"], ours["bell.wav"]["transcript_source"]) == (
        "a bell rings twice", "upload",
    )  # fmt: skip
    # The collection listed by folder, as the import recorded it.
    folder = httpx.get(f"{server.url}/v1/items", timeout=10,
                       params={"filter": '{"folder": "interviews/2024"}'}).json()  # fmt: skip
    assert [i["filename"] for i in folder["items"]] == ["ana take 3.mp4"]
    bad = httpx.get(f"{server.url}/v1/items", params={"filter": '{"folder": ["a"]}'}, timeout=10)
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("filter.folder: must be a string, a number")
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted((r["path"], r["status"]) for r in lines) == [
        ("bell.wav", "added"), (os.fsdecode(b"broken \xe9.mp4"), "refused"),
        (os.fsdecode(b"caf\xe9.wav"), "added"), ("disk2/gong.wav", "added"),
        ("gone.wav", "refused"), ("interviews/2024/ana take 3.mp4", "added"),
        ("poster.png", "added"),
    ]  # fmt: skip

    # Again with the same report: what it stored is not sent again; a file changed since
    # (its modification time) is, and its bytes are the stored item's.
    os.utime(library / "poster.png")
    again = bulk_upload(library, *args)
    assert again.returncode == 1
    assert "7 files: 0 added, 1 already stored, 4 skipped (stored by an earlier run), 2 refused" \
        in again.stdout, again.stdout  # fmt: skip
    after = httpx.get(f"{server.url}/v1/items", params={"limit": 1000}, timeout=10).json()
    assert len(after["items"]) == len(listed["items"])

    # Files changed since: sent again, and the item of their earlier bytes deleted, unless
    # another file is those bytes (a copy kept beside).
    make_tone(library / "bell.wav", 1999)
    shutil.copy(library / "disk2" / "gong.wav", library / "disk2" / "gong copy.wav")
    make_tone(library / "disk2" / "gong.wav", 2221)
    third = bulk_upload(library, *args)
    assert third.returncode == 1, third.stderr
    assert "8 files: 2 added, 1 already stored, 3 skipped (stored by an earlier run), 2 refused" \
        in third.stdout, third.stdout  # fmt: skip
    assert "1 item of changed files' earlier bytes deleted" in third.stdout, third.stdout
    gone = httpx.get(f"{server.url}/v1/items/{ours['bell.wav']['id']}", timeout=10)
    kept = httpx.get(f"{server.url}/v1/items/{ours['gong.wav']['id']}", timeout=10)
    assert (gone.status_code, kept.status_code) == (404, 200)
    now = httpx.get(f"{server.url}/v1/items", params={"limit": 1000}, timeout=10).json()
    assert len(now["items"]) == len(listed["items"]) + 1  # new bell, new gong; old bell gone
    last = {r["path"]: r for r in map(json.loads, report.read_text().splitlines())}
    assert last["bell.wav"]["deleted"] == [ours["bell.wav"]["id"]]
    assert last["bell.wav"]["replaces"] == [] and last["disk2/gong.wav"]["replaces"] == []


@pytest.mark.postgres_in_soak
def test_a_server_that_cannot_be_reached_stops_the_run_at_once(library: Path) -> None:
    done = bulk_upload(library, "--url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "stopped: the service cannot be used: http://127.0.0.1:9" in done.stderr, done.stderr
    bad = bulk_upload(library, "--metadata", '{"a": {"b": 1}}')
    assert bad.returncode == 2 and "--metadata: metadata must be flat" in bad.stderr, bad.stderr
