"""Start-up reconcile (service/reconcile.py), on SQLite and PostgreSQL: media files,
item rows, vectors and index entries agree again after a crash or a hand edit."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from service.indexes import open_indexes
from service.media_files import MediaFiles
from service.reconcile import MEDIA_GONE, Reconciled, reconcile_at_start
from service.storage import Embedding, NewItem, NewSegment, Storage

VERSION = "v1"
DIM = 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def media(tmp_path: Path) -> MediaFiles:
    folder = tmp_path / "media"
    folder.mkdir()
    return MediaFiles(folder)


def put(media: MediaFiles, data: bytes) -> str:
    """A media file as an upload leaves it; returns its content hash."""
    digest = hashlib.sha256(data).hexdigest()
    media.path(digest).write_bytes(data)
    return digest


def ready_sound(storage: Storage, digest: str, seed: int, segments: int = 0) -> int:
    """A ready sound item with its vector (and `segments` segments with theirs)."""
    row = storage.items.create(
        NewItem(kind="audio", modalities=["audio"], content_hash=digest, media_type="audio/wav")
    )
    cut = [
        NewSegment(5.0 * i, 5.0 * i + 10, [Embedding("vat", "audio", unit(seed * 100 + i))], None)
        for i in range(segments)
    ]
    stored = storage.items.mark_ready(
        row.seq, VERSION, [Embedding("vat", "audio", unit(seed))], ["audio"], None, None, 3.0,
        segments=cut,
    )  # fmt: skip
    assert stored is not None
    return row.seq


def count(storage: Storage, sql: str) -> int:
    return int(storage.db.connection().execute(sql).fetchone()[0])


def test_orphan_media_goes_at_any_age_named_and_foreign_files_stay(
    storage: Storage, media: MediaFiles
) -> None:
    kept = put(media, b"an item names this")
    ready_sound(storage, kept, 1)
    orphan = put(media, b"moved into place, then the process was killed before the commit")
    (media.media_dir / "README").write_text("not a content hash: not ours to remove")

    done = reconcile_at_start(storage, media)

    assert done == Reconciled(orphan_media=1)
    assert media.names() == {kept} and not media.path(orphan).exists()
    assert (media.media_dir / "README").exists()
    assert reconcile_at_start(storage, media).total == 0  # idempotent


def test_an_empty_database_beside_old_media_leaves_them_alone(
    storage: Storage, media: MediaFiles, caplog: pytest.LogCaptureFixture
) -> None:
    old = put(media, b"the deployment before's upload")
    with caplog.at_level(logging.WARNING):
        assert reconcile_at_start(storage, media).total == 0
    assert media.path(old).exists() and "has no items but" in caplog.text


def test_an_orphan_being_committed_by_another_upload_is_not_removed(
    storage: Storage, media: MediaFiles
) -> None:
    # Listed as an orphan, but by the time its removal holds the content hash's lock
    # the upload that put it there has committed its row: the file stays.
    ready_sound(storage, put(media, b"one item"), 1)
    late = put(media, b"committed between the listing and the removal")
    storage.items.create(NewItem(kind="audio", modalities=["audio"], content_hash=late))
    assert not storage.items.remove_media_if_unused(late, media.remove)
    assert media.path(late).exists()


def test_an_item_whose_media_is_gone_is_failed_and_its_vectors_dropped(
    storage: Storage, media: MediaFiles
) -> None:
    lost = put(media, b"deleted by an operator")
    seq_lost = ready_sound(storage, lost, 1, segments=2)
    waiting = put(media, b"processing, file gone too")
    row_waiting = storage.items.create(
        NewItem(kind="audio", modalities=["audio"], content_hash=waiting)
    )
    kept = put(media, b"still here")
    seq_kept = ready_sound(storage, kept, 2)
    text = storage.items.create(
        NewItem(kind="text", modalities=["text"], status="ready", text="no media at all"),
        VERSION, [Embedding("vat", "text", unit(3))],
    )  # fmt: skip
    already = put(media, b"failed before")
    row_failed = storage.items.create(
        NewItem(kind="audio", modalities=["audio"], content_hash=already)
    )
    storage.items.mark_failed(row_failed.seq, "could not decode")
    changes_before = storage.changes.last_seq()
    for digest in (lost, waiting, already):
        media.path(digest).unlink()

    done = reconcile_at_start(storage, media)

    assert done == Reconciled(media_gone=2)
    for seq in (seq_lost, row_waiting.seq):
        item = storage.items.get_by_seq(seq)
        assert item is not None and item.status == "failed" and item.error == MEDIA_GONE
    assert storage.items.get_by_seq(row_failed.seq).error == "could not decode"  # as it was
    assert storage.items.get_by_seq(seq_kept).status == "ready"
    assert storage.items.get(text.id).status == "ready"
    assert storage.embeddings.seqs(VERSION, "vat", "audio").tolist() == [seq_kept]
    assert storage.embeddings.seqs(VERSION, "vat", "text").tolist() == [text.seq]
    assert storage.segments.of_item(seq_lost) == []
    assert count(storage, "SELECT COUNT(*) FROM segment_embeddings") == 0
    # Other replicas drop it from their indexes through the change log.
    kinds = {(c.item_seq, c.kind) for c in storage.changes.after(changes_before)}
    assert (seq_lost, "deleted") in kinds


def test_a_file_back_in_place_under_the_lock_keeps_its_item(
    storage: Storage, media: MediaFiles
) -> None:
    digest = put(media, b"uploaded again meanwhile")
    seq = ready_sound(storage, digest, 1)
    assert not storage.items.fail_if_media_missing(seq, digest, media.missing, MEDIA_GONE)
    assert storage.items.get_by_seq(seq).status == "ready"


def test_no_media_file_at_all_is_a_missing_volume_not_a_crash(
    storage: Storage, media: MediaFiles, caplog: pytest.LogCaptureFixture
) -> None:
    seqs = [ready_sound(storage, put(media, f"clip {i}".encode()), i) for i in range(3)]
    for path in list(media.media_dir.iterdir()):
        path.unlink()
    with caplog.at_level(logging.ERROR):
        assert reconcile_at_start(storage, media).total == 0
    assert "not mounted" in caplog.text
    assert all(storage.items.get_by_seq(s).status == "ready" for s in seqs)


def test_vectors_of_a_failed_item_are_dropped(storage: Storage, media: MediaFiles) -> None:
    # Before failing dropped them, a failed item kept its vectors (and was found).
    seq = ready_sound(storage, put(media, b"failed with vectors"), 1, segments=2)
    with storage.db.transaction() as conn:
        conn.execute("UPDATE items SET status = 'failed', error = 'x' WHERE seq = ?", (seq,))
    done = reconcile_at_start(storage, media)
    assert done == Reconciled(orphan_vectors=3, orphan_segments=2)
    assert len(storage.embeddings.seqs(VERSION, "vat", "audio")) == 0
    assert count(storage, "SELECT COUNT(*) FROM segments") == 0


def test_vectors_of_rows_deleted_with_foreign_keys_off_are_dropped(
    tmp_path: Path, media: MediaFiles
) -> None:
    # The sqlite3 shell has foreign keys off: deleting an item there leaves its vectors
    # and segments, which the indexes would then hold for an item that is gone.
    path = tmp_path / "db.sqlite"
    storage = Storage(path)
    try:
        gone = ready_sound(storage, put(media, b"deleted by hand"), 1, segments=2)
        kept = ready_sound(storage, put(media, b"kept"), 2)
        shell = sqlite3.connect(path)
        shell.execute("DELETE FROM items WHERE seq = ?", (gone,))
        shell.commit()
        shell.close()
        assert storage.embeddings.seqs(VERSION, "vat", "audio").tolist() == [gone, kept]
        media.remove(hashlib.sha256(b"deleted by hand").hexdigest())

        done = reconcile_at_start(storage, media)

        assert done == Reconciled(orphan_vectors=3, orphan_segments=2)
        assert storage.embeddings.seqs(VERSION, "vat", "audio").tolist() == [kept]
        assert count(storage, "SELECT COUNT(*) FROM segments") == 0
    finally:
        storage.close()


def test_indexes_opened_after_reconcile_hold_exactly_the_ready_items(
    storage: Storage, media: MediaFiles, tmp_path: Path
) -> None:
    # An index file saved while three items were ready; then one's media went and one
    # failed with its vectors kept. Opened after the reconcile, the index drops both.
    seqs = [ready_sound(storage, put(media, f"clip {i}".encode()), i) for i in range(3)]
    root, pairs = tmp_path / "indexes", [("vat", "audio")]
    registry = open_indexes(root, storage, VERSION, pairs, {"vat": DIM}, 1 << 26)
    registry.save()
    assert registry.active.counts() == {"vat/audio": 3}
    media.remove(hashlib.sha256(b"clip 0").hexdigest())
    with storage.db.transaction() as conn:
        conn.execute("UPDATE items SET status = 'failed' WHERE seq = ?", (seqs[1],))

    reconcile_at_start(storage, media)
    reopened = open_indexes(root, storage, VERSION, pairs, {"vat": DIM}, 1 << 26)

    assert reopened.active.counts() == {"vat/audio": 1}
    found = reopened.search("vat", "audio", unit(2)[None, :], 3)
    assert [i for i in found.ids[0].tolist() if i >= 0] == [seqs[2]]
