"""Moments for long items that have none: stored before segments existed (or while
MMV_SEGMENT_S was 0), or whose segments lack vectors of the serving version (a switch
of versions cut short). A background task of the API finds them, cuts them into
segments as ingestion would, embeds the segments with the serving version in the media
workers (windows from the decode cache, decoded once where missing) and adds them to the
indexes. An item's own vector is left as it is.

Runs at start-up, then every BACKFILL_EVERY_S; each round takes items a few at a time,
so uploads and searches go on beside it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np

from model.media.segments import segment_spans, tiling_window_count
from model.transcripts import texts_in_spans
from service.active_model import ActiveModel, Serving
from service.indexes import segment_ids, segment_index
from service.ingest import LONGEST_CUE_SEGMENTS
from service.media_jobs import media_limits
from service.media_worker import (
    MediaPool,
    ReembedJob,
    StoredItem,
    WorkerCrashed,
    WorkerOutOfMemory,
    embed_stored,
)
from service.settings import Settings
from service.storage import Embedding, ItemRow, Storage

log = logging.getLogger("service.segments")

BACKFILL_EVERY_S = 60.0
ITEMS_PER_TASK = 4  # long items: each is many windows
# Items given up on are tried again after this, and at a switch of versions: what
# failed may have been passing (a full disk, a worker killed by the kernel).
RETRY_GIVEN_UP_S = 3600.0


class SegmentBackfill:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        model: ActiveModel,
        pool: MediaPool,
        index_lock: threading.Lock,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.model = model
        self.pool = pool
        self.index_lock = index_lock
        self.failed: dict[int, str] = {}  # seq -> why (tried again: RETRY_GIVEN_UP_S)
        self.alone: set[int] = set()  # seqs of a task that crashed: each tried alone
        self.done = 0
        self._given_up_for: tuple[str, float] | None = None  # (version, since when)

    async def watch(self) -> None:
        """The API's background task: a round now, then one every BACKFILL_EVERY_S."""
        while True:
            try:
                await asyncio.to_thread(self.run)
            except Exception:  # never let a database hiccup end the task
                log.exception("giving long items their segments failed; trying again later")
            await asyncio.sleep(BACKFILL_EVERY_S)

    def run(self) -> int:
        """Rounds until nothing is left; returns how many items got their segments."""
        if not self.settings.segment_s:
            return 0
        total = 0
        while True:
            done = self.run_once()
            if done == 0:
                return total
            total += done

    def run_once(self) -> int:
        serving = self.model.serving
        if serving is None:
            return 0
        now = time.monotonic()
        given_up = self._given_up_for
        if (
            given_up is None
            or given_up[0] != serving.version
            or now - given_up[1] > RETRY_GIVEN_UP_S
        ):
            if self.failed:
                log.info("trying again the %d long items given up on", len(self.failed))
            self.failed.clear()
            self.alone.clear()
            self._given_up_for = (serving.version, now)
        rows = [
            r
            for r in self.storage.items.lacking_segments(
                serving.version, self.settings.segment_s, ITEMS_PER_TASK + len(self.failed)
            )
            if r.seq not in self.failed and r.content_hash
        ]
        if not rows:
            return 0
        # Items of a task that crashed or ran out of memory go alone, so that only the
        # one at fault is given up on (the others of its task may be fine).
        rows = rows[:1] if rows[0].seq in self.alone else [
            r for r in rows if r.seq not in self.alone
        ][:ITEMS_PER_TASK]  # fmt: skip
        items = [item for row in rows if (item := self._stored_item(row, serving)) is not None]
        if not items:
            return 0
        lacking = self.storage.segments.without_vectors([i.seq for i in items], serving.version)
        job = ReembedJob(
            items=items,
            model_dir=str(self.settings.models_dir / serving.version),
            version=serving.version,
            cache_dir=str(self.settings.cache_dir),
            limits=media_limits(self.settings),
        )
        try:
            result = self.pool.submit(embed_stored, job).result()
        except (WorkerCrashed, WorkerOutOfMemory) as exc:
            if len(items) > 1:  # which one is at fault: each is tried alone next
                self.alone.update(i.seq for i in items)
            else:
                self.failed[items[0].seq] = str(exc)
            log.warning("segments of items %s: %s", [i.seq for i in items], exc)
            return len(items)
        for seq, why in result.failed.items():
            self.failed[seq] = why
            log.warning("item seq %d cannot be cut into segments: %s", seq, why)
        self._store(serving, {seq: es for seq, es in result.segments.items() if seq in lacking})
        done = len(items) - len(result.failed)
        self.done += done
        log.info("segments added for %d long items stored before them", done)
        return len(items)

    def _stored_item(self, row: ItemRow, serving: Serving) -> StoredItem | None:
        segments = self.storage.segments.of_item(row.seq)
        if not segments:
            spans = segment_spans(
                row.duration_s, self.settings.segment_s, self.settings.segment_hop_s
            )
            if not spans:
                self.failed[row.seq] = "no longer than one segment"
                return None
            texts = texts_in_spans(
                self.storage.items.transcript_vtt(row.seq),
                spans,
                LONGEST_CUE_SEGMENTS * self.settings.segment_s,
            )
            self.storage.segments.insert_spans(
                row.seq, [(s, e, t) for (s, e), t in zip(spans, texts, strict=True)]
            )
            segments = self.storage.segments.of_item(row.seq)
        return StoredItem(
            seq=row.seq,
            path=str(self.settings.media_dir / row.content_hash),  # type: ignore[operator]
            content_hash=row.content_hash,  # type: ignore[arg-type]
            modalities=tuple(m for m in row.modalities if m in ("video", "audio")),
            n_windows=tiling_window_count(row.duration_s, serving.embedder.config.clip_seconds),
            segments=[(g.seq, g.start_s, g.end_s) for g in segments],
        )

    def _store(self, serving: Serving, vectors: dict[int, list[Embedding]]) -> None:
        """The segments' vectors, stored and indexed under the index lock, unless the
        service switched versions meanwhile (the next round embeds them for the new
        one) or their item was deleted (its segments went with it)."""
        with self.index_lock:
            if self.model.serving is not serving:
                return
            rows = [(seq, e) for seq, es in vectors.items() for e in es]
            self.storage.segments.add_for_stored(serving.version, rows)
            alive = set(self.storage.segments.by_seqs(vectors))
            by_pair: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
            for seq, es in vectors.items():
                if seq in alive:
                    for e in es:
                        by_pair.setdefault((e.space, e.modality), []).append((seq, e.vector))
            for (space, modality), pairs in by_pair.items():
                ids = segment_ids([seq for seq, _ in pairs])
                stacked = np.stack([v for _, v in pairs])
                serving.indexes.add(serving.version, space, segment_index(modality), ids, stacked)
