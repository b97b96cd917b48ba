"""Uploaded media on disk: DATA_DIR/media/<sha256>, content-addressed.

The name is the service's own hex digest of the bytes, never user text, so no upload
can choose a path; the same bytes uploaded twice are one file.
"""

from __future__ import annotations

from pathlib import Path

from model.atomic_files import move_durably


class MediaFiles:
    def __init__(self, media_dir: Path) -> None:
        self.media_dir = media_dir

    def path(self, content_hash: str) -> Path:
        return self.media_dir / content_hash

    def store(self, tmp: Path, content_hash: str) -> None:
        """Move a received upload into place durably (fsync file, rename, fsync folder)."""
        move_durably(tmp, self.path(content_hash))

    def remove(self, content_hash: str) -> None:
        self.path(content_hash).unlink(missing_ok=True)
