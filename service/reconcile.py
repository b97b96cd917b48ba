"""Start-up reconcile: media files, item rows, vectors and index entries agree again.

A crash (or an operator deleting files) can leave them apart; what each case becomes:

- a media file no item names (a crash between moving an upload into place and its
  row's commit, or between deleting a row and its file): removed. Each removal is
  checked again under the content hash's database lock, which an upload holds from
  moving its file into place to committing its row, so an upload another replica is
  committing right now is never taken for an orphan (no age grace is needed).
- an item `ready` (or `processing`) whose media file is gone: marked failed with an
  error saying so, its vectors and segments dropped (it can be neither shown nor
  embedded again; uploading the same bytes again starts it over). Text items have no
  media file and are not concerned.
- vectors or segments no live item owns (the item is gone, which foreign keys prevent
  unless a write bypassed them, or failed before failing dropped vectors): removed.
- index entries: none is touched here. The indexes open after this from the vectors
  just put right (service/indexes.py: ids the database no longer has are removed from
  a loaded index file, missing ones added), so they follow.

Two cases are left alone, with a log line, because they are not crashes: a database
with no items beside media files (a new database pointed at an old data directory),
and a media folder with no file at all while items name some (a volume not mounted):
failing every item then would throw their vectors away for nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from service.media_files import MediaFiles
from service.storage import Storage

log = logging.getLogger("service.reconcile")

MEDIA_GONE = (
    "its media file is missing from the data directory (deleted while the service was "
    "down?): it can no longer be shown or searched; upload the file again"
)


@dataclass(frozen=True)
class Reconciled:
    """What start-up put right (all zero after a clean stop)."""

    orphan_media: int = 0  # media files no item named, removed
    media_gone: int = 0  # items whose media file was gone, marked failed
    orphan_vectors: int = 0  # vectors (of items and segments) no live item owned, removed
    orphan_segments: int = 0  # segments of items gone or failed, removed

    @property
    def total(self) -> int:
        return sum(asdict(self).values())


def reconcile_at_start(storage: Storage, media: MediaFiles) -> Reconciled:
    """Bring media files, item rows and vectors in line (see the module docstring);
    to be run before the indexes are opened. Safe beside live replicas."""
    in_use = storage.items.media_in_use()  # rows first: a file committed later is present
    present = media.names()
    orphan_media = _remove_orphan_media(storage, media, set(in_use), present)
    media_gone = _fail_items_without_media(storage, media, in_use, present)
    seqs, vectors, segments = storage.items.drop_unowned_vectors()
    if seqs:
        log.warning(
            "removed %d vectors and %d segments of %d items that are gone or failed",
            vectors, segments, len(seqs),
        )  # fmt: skip
    elif vectors:
        log.warning("removed %d vectors of segments that are gone", vectors)
    done = Reconciled(orphan_media, media_gone, vectors, segments)
    log.info("start-up reconcile: %s", asdict(done))
    return done


def _remove_orphan_media(
    storage: Storage, media: MediaFiles, named: set[str], present: set[str]
) -> int:
    if not present:
        return 0
    if storage.items.count() == 0:
        log.warning(
            "the database %s has no items but %s holds media files: they are left "
            "alone (see docs/scaling.md, \"Moving from SQLite\")",
            storage.db.name, media.media_dir,
        )  # fmt: skip
        return 0
    removed = 0
    for name in sorted(present - named):
        if storage.items.remove_media_if_unused(name, media.remove):
            removed += 1
    if removed:
        log.warning("removed %d media files no item names (left by a crash)", removed)
    return removed


def _fail_items_without_media(
    storage: Storage, media: MediaFiles, in_use: dict[str, tuple[int, str]], present: set[str]
) -> int:
    gone = {
        content_hash: seq
        for content_hash, (seq, status) in in_use.items()
        if status in ("ready", "processing") and content_hash not in present
    }
    if not gone:
        return 0
    if not present:
        log.error(
            "%s holds no media file at all, yet %d items name one: is the data directory "
            "the right one, or its volume not mounted? Those items are left as they are",
            media.media_dir, len(gone),
        )  # fmt: skip
        return 0
    failed = sum(
        storage.items.fail_if_media_missing(seq, content_hash, media.missing, MEDIA_GONE)
        for content_hash, seq in sorted(gone.items(), key=lambda pair: pair[1])
    )
    if failed:
        log.warning("%d items whose media file is gone are marked failed", failed)
    return failed
