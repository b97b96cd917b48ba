"""Uploaded media on disk: DATA_DIR/media/<sha256>, content-addressed.

The name is the service's own hex digest of the bytes, never user text, so no upload
can choose a path; the same bytes uploaded twice are one file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Container
from pathlib import Path

from model.atomic_files import move_durably

DIGEST = re.compile(r"[0-9a-f]{64}")
# A file younger than this may be an upload another process is committing right now
# (the file is moved into place before its row commits).
ORPHAN_GRACE_S = 3600.0


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

    def exists(self, content_hash: str) -> bool:
        return self.path(content_hash).is_file()

    def missing(self, content_hash: str) -> bool:
        return not self.exists(content_hash)

    def names(self) -> set[str]:
        """The content hashes of the media files present (other names are not ours)."""
        return {p.name for p in self.media_dir.iterdir() if DIGEST.fullmatch(p.name)}

    def remove_orphans(
        self, in_use: Container[str], older_than_s: float = ORPHAN_GRACE_S
    ) -> list[str]:
        """Remove media files no item names (a crash between moving an upload into
        place and committing its row, or between deleting a row and its file); returns
        their names. Files younger than `older_than_s` are left for a later sweep."""
        removed = []
        cutoff = time.time() - older_than_s
        for path in self.media_dir.iterdir():
            if not DIGEST.fullmatch(path.name) or path.name in in_use:
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path.name)
            except FileNotFoundError:
                continue
        return removed
