"""Following the change log: this replica's indexes take in what other processes did.

Several API replicas share one PostgreSQL database (docs/scaling.md); each holds its own
FAISS indexes, derived from the embeddings tables. An upload stored by another replica,
a delete, or vectors a switch of versions added elsewhere appear as rows of the change
log (service/storage/changes.py); every MMV_FOLLOW_POLL_S this replica reads the rows
after the last it applied and brings its indexes in line: vectors of the serving version
that the database now holds are added (ids already there are left alone), and deleted
items and segments are removed. Its own changes come back too and change nothing.

Sequence numbers are handed out when a transaction inserts its row, not when it
commits, so a row can appear below one already read. A gap below the newest row read is
therefore waited for (GAP_WAIT_S) before it is passed over; anything passed over that
commits even later is caught by the full reconcile of the indexes with the database in
the periodic upkeep (service/runtime.py). With SQLite (one API process) the log holds
only this process's changes and following it costs one query per poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np

from service.active_model import ActiveModel, Serving
from service.indexes import SEGMENTED, segment_ids, segment_index
from service.settings import Settings
from service.storage import ChangeRow, Storage
from service.storage.changes import DELETED

log = logging.getLogger("service.follow")

GAP_WAIT_S = 5.0  # how long a missing sequence number may still commit


class ChangeFollower:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        model: ActiveModel,
        index_lock: threading.Lock,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.model = model
        self.index_lock = index_lock  # the ingestor's: a delete and an add never interleave
        self.applied_upto = 0  # every change up to here is applied (none missing below)
        self._applied_above: set[int] = set()
        self._gap_seen_at: dict[int, float] = {}
        self.applied = 0  # changes applied since start (for logs and tests)

    def start_at_now(self) -> None:
        """Skip what the log holds now: call before the indexes are opened from the
        database, which already reflects it (a change in between is applied twice)."""
        self.applied_upto = self.storage.changes.last_seq()

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.follow_poll_s)
            try:
                await asyncio.to_thread(self.poll)
            except Exception:  # a database hiccup: the next poll goes on from the same place
                log.exception("following the change log failed")

    def poll(self) -> int:
        """Apply the changes not applied yet; returns how many."""
        serving = self.model.serving
        if serving is None:
            return 0
        rows = self.storage.changes.after(self.applied_upto)
        new = [r for r in rows if r.seq not in self._applied_above]
        if new and not self._apply(serving, new):
            return 0  # a switch swapped versions meanwhile: read again with the new one
        if new:
            self._applied_above.update(r.seq for r in new)
            self.applied += len(new)
        self._advance()
        return len(new)

    def _advance(self) -> None:
        now = time.monotonic()
        while self._applied_above:
            following = self.applied_upto + 1
            if following in self._applied_above:
                self._applied_above.discard(following)
                self._gap_seen_at.pop(following, None)
                self.applied_upto = following
                continue
            if following not in self._gap_seen_at:
                # Every number missing below the newest applied is waited for from now,
                # together: one after another, a run of K (a rolled-back bulk write, a
                # PostgreSQL sequence skipping after a crash) took K waits.
                top = max(self._applied_above)
                for missing in range(following, top):
                    if missing not in self._applied_above:
                        self._gap_seen_at.setdefault(missing, now)
            if now - self._gap_seen_at[following] < GAP_WAIT_S:
                return
            # Rolled back (its number is never used) or still uncommitted after long:
            # passed over; the upkeep's reconcile catches the latter.
            self._gap_seen_at.pop(following)
            self.applied_upto = following

    def _apply(self, serving: Serving, rows: list[ChangeRow]) -> bool:
        """False, with nothing applied, when `serving` no longer serves."""
        removed: list[int] = []
        indexed: set[int] = set()
        for row in rows:
            removed += segment_ids(row.segments).tolist()
            if row.kind == DELETED:
                removed.append(row.item_seq)
                indexed.discard(row.item_seq)
            elif row.version is None or row.version == serving.version:
                indexed.add(row.item_seq)
        # Another replica's delete: this one's cache of ready rows would still join a
        # hit on the item to its row (until the index removal below, a search can).
        self.storage.items.forget(r.item_seq for r in rows if r.kind == DELETED)
        with self.index_lock:  # which a swap holds: serving cannot change inside
            if self.model.serving is not serving:
                return False
            if removed:
                serving.indexes.remove(removed)
            if indexed:
                self._add(serving, np.array(sorted(indexed), dtype=np.int64))
        return True

    def _add(self, serving: Serving, item_seqs: np.ndarray) -> None:
        """The serving version's vectors of these items (and their segments) that the
        database holds now: one deleted since has none, so nothing comes back."""
        version = serving.version
        keys = set(serving.index_set.keys)
        segment_seqs = None
        for space, modality in sorted(keys):
            if modality.endswith("_segments"):
                continue
            ids, vectors = self.storage.embeddings.present(version, space, modality, item_seqs)
            if len(ids):
                serving.indexes.add(version, space, modality, ids, vectors)
            if modality in SEGMENTED and (space, segment_index(modality)) in keys:
                if segment_seqs is None:
                    segment_seqs = self.storage.segments.seqs_of_items(item_seqs)
                if not len(segment_seqs):
                    continue
                seqs, vectors = self.storage.segments.present(
                    version, space, modality, segment_seqs
                )
                if len(seqs):
                    index = segment_index(modality)
                    serving.indexes.add(version, space, index, segment_ids(seqs), vectors)
