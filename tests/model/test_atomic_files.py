"""Writes a crash never leaves half-done: whole old content or whole new, no leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.atomic_files import atomic_path, move_durably, publish_dir, write_atomic


def test_write_atomic_replaces_the_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "metrics.json"
    write_atomic(path, "first")
    write_atomic(path, b"second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_a_writer_that_fails_keeps_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    write_atomic(path, b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_publish_dir_shows_a_folder_only_when_whole(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "entry"

    def fail(tmp: Path) -> None:
        (tmp / "video.npy").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish_dir(folder, fail)
    assert not folder.exists() and list(folder.parent.iterdir()) == []

    assert publish_dir(folder, lambda tmp: (tmp / "a").write_text("mine"), durable=True)
    # Another process publishing the same entry later loses the race, and says so.
    assert not publish_dir(folder, lambda tmp: (tmp / "a").write_text("theirs"))
    assert (folder / "a").read_text() == "mine"
    assert [p.name for p in folder.parent.iterdir()] == ["entry"]


def test_move_durably_puts_a_written_file_in_place(tmp_path: Path) -> None:
    upload = tmp_path / "upload.part"
    upload.write_bytes(b"clip")
    move_durably(upload, tmp_path / "media")
    assert (tmp_path / "media").read_bytes() == b"clip" and not upload.exists()


def test_a_file_written_atomically_has_the_mode_open_would_give(tmp_path: Path) -> None:
    """mkstemp's 0600 stayed on the file: a model's metrics.json, copied into the image,
    could not be read by the container's user, and the API stopped at its first start."""
    write_atomic(tmp_path / "metrics.json", "{}")
    (tmp_path / "plain.json").write_text("{}")
    mode = (tmp_path / "metrics.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.json").stat().st_mode & 0o777
