"""Ingestion: an upload becomes a durable, indexed item.

    receive (streamed to DATA_DIR/tmp, hashed) -> same bytes stored before? answer 200
    -> ffprobe (the real type, caps) -> store the media, content-addressed, and
    the item row (status processing) -> decode -> ASR when there is sound and no
    transcript -> embed every (space, modality) the item has (and, for a long sound or
    video, each of its segments, with what its transcript says there) -> store
    embeddings and flip to ready in one transaction -> add to the indexes -> answer 201.

With wait=false the answer (202) comes right after the item row is stored and the
rest runs in the background; the item's status says how it ended. Items still
`processing` at start-up (a crash or a stop mid-way) are picked up again: their
media is already stored.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from model.atomic_files import fsync_file
from model.errors import ModelError
from model.media import MediaError, MediaInfo
from model.media.decode_cache import DecodeCache
from model.transcripts import Transcript, TranscriptError, parse_transcript, texts_in_spans
from service import errors
from service.active_model import ActiveModel, Serving
from service.admission import InFlightLimit
from service.content_types import content_type_of
from service.indexes import segment_ids, segment_index
from service.media_errors import as_api_error, naming
from service.media_files import MediaFiles
from service.media_jobs import media_job, media_limits, read_info
from service.media_worker import MediaPool, WorkerCrashed, process_media
from service.prometheus import Metrics
from service.settings import Settings
from service.storage import DuplicateContent, Embedding, ItemRow, NewItem, NewSegment, Storage
from service.uploads import ReceivedUpload

log = logging.getLogger("service.ingest")

SWITCH_RETRIES = 3  # embeddings made just before a switch of versions are made again
SAME_BYTES_WAIT_S = 600.0  # how long an upload of bytes in processing waits for them
SAME_BYTES_TRIES = 3
# A cue longer than this many segments says nothing about where in the file it is said.
LONGEST_CUE_SEGMENTS = 3


def deleted_meanwhile(row: ItemRow) -> errors.NotFound:
    return errors.NotFound(f"item {row.id!r} was deleted while it was processed")


class Ingestor:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        metrics: Metrics,
        pool: MediaPool,
        media: MediaFiles,
        text_executor: Executor,
        model: ActiveModel,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.metrics = metrics
        self.pool = pool
        self.media = media
        self.text_executor = text_executor  # the search threads: text embeds are tiny
        self.model = model  # new items are embedded with it and join its indexes
        self.limits = media_limits(settings)
        # Held while an item's index entries change, so a delete cannot interleave
        # with the add of the same item (the add would resurrect it in the index).
        self.index_lock = threading.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        # The seqs of the items this process is processing (or about to): an item it
        # owns that is not among them lost its processing (see Runtime.take_over_uploads).
        self.in_flight: set[int] = set()
        # Uploads being received or processed, those answered 202 included (issue 21).
        self.admission = InFlightLimit(
            "uploads",
            "MMV_MAX_UPLOADS_IN_FLIGHT",
            settings.max_uploads_in_flight,
            also_running=lambda: len(self._background),
        )

    def require_model(self) -> Serving:
        """The active model and its indexes; NoModel (503) before an upload is received,
        rather than after, when there is none."""
        return self.model.require("nothing can be embedded")

    # -- helpers -------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def _stage(self, stage: str, seconds: float) -> None:
        self.metrics.ingest_stage.labels(stage).observe(seconds)

    # -- uploads -------------------------------------------------------------------------
    async def ingest_upload(
        self,
        upload: ReceivedUpload,
        transcript_text: str | None,
        metadata: dict[str, Any],
        wait: bool,
        asr: bool = True,
    ) -> tuple[ItemRow, int]:
        """(item, HTTP status): 200 stored before, 201 new, 202 accepted (wait=false).

        asr=False skips speech recognition (sound effects known to hold no speech)."""
        self.require_model()
        assert upload.path is not None
        self.metrics.uploads_in_flight.inc()
        try:
            for _ in range(SAME_BYTES_TRIES):
                answer = await self._ingest_once(upload, transcript_text, metadata, wait, asr)
                if answer is not None:
                    return answer
            raise errors.Conflict("the same file kept being deleted while it was uploaded")
        finally:
            self.metrics.uploads_in_flight.dec()

    async def _ingest_once(
        self,
        upload: ReceivedUpload,
        transcript_text: str | None,
        metadata: dict[str, Any],
        wait: bool,
        asr: bool,
    ) -> tuple[ItemRow, int] | None:
        """One try; None when the same bytes, being processed for another request, were
        deleted meanwhile (their processing failed) or finished: the caller tries again."""
        assert upload.path is not None
        existing = await self._run(self.storage.items.get_by_hash, upload.sha256)
        if (
            existing is not None
            and existing.status != "failed"
            and self.media.missing(upload.sha256)
        ):
            # The item's file is gone (deleted by hand, a volume restored without it):
            # these are its bytes, so they go back in place rather than being dropped
            # with a 200 while the item's media answers 404.
            put_back = partial(self._file_back, upload, upload.sha256)
            if not await self._run(self.storage.items.restore_media, upload.sha256, put_back):
                return None  # deleted meanwhile: the caller looks again
        if existing is not None and existing.status == "processing":
            return await self._same_bytes(existing, wait)
        if existing is not None and existing.status != "failed":
            return existing, 200
        if existing is not None:  # a failed earlier try: processed again, as the same item
            return await self._retry_failed(upload, existing, wait, asr)
        try:
            info = await read_info(upload.path, self.limits, self.metrics)
        except errors.ServiceError as exc:
            raise naming(exc, upload.path.name, upload.filename) from None
        transcript = self._parse_transcript(transcript_text, info.duration_s)
        new = NewItem(
            kind=info.kind,
            modalities=list(info.modalities),
            content_hash=upload.sha256,
            media_type=content_type_of(info),
            size_bytes=upload.size,
            duration_s=info.duration_s,
            width=info.width,
            height=info.height,
            transcript=transcript.text if transcript else None,
            transcript_source="upload" if transcript else None,
            transcript_vtt=transcript.to_vtt() if transcript else None,
            metadata=metadata,
            filename=upload.filename,
            asr=asr,
        )
        try:
            row = await self._run(self._store_item, upload.path, new)
        except DuplicateContent as dup:  # the same bytes arrived twice at once
            return await self._same_bytes(dup.existing, wait)
        if not wait:
            self.spawn(row, info, asr)
            return row, 202
        ready = await self.process(row, info, raise_errors=True, asr=asr)
        return ready, 201

    def _file_back(self, upload: ReceivedUpload, digest: str) -> None:
        """The upload's bytes become the media file of `digest` if it is missing (called
        under the hash's lock)."""
        assert upload.path is not None
        if self.media.missing(digest):
            fsync_file(upload.path)
            self.media.store(upload.path, digest)

    async def _retry_failed(
        self, upload: ReceivedUpload, failed: ItemRow, wait: bool, asr: bool
    ) -> tuple[ItemRow, int] | None:
        """The same bytes as an item that failed: that item is processed again (deleted
        and made anew, its id, answered to an earlier upload, was lost). None when it
        changed meanwhile: the caller looks again."""
        assert upload.path is not None and failed.content_hash is not None
        digest = failed.content_hash

        file_back = partial(self._file_back, upload, digest)
        # In flight before the row says `processing`: the sweep for stalled uploads reads
        # such rows, and this one's creation time is old (no grace), so it would start
        # its processing a second time beside this one. Taken back only if this upload
        # put it there: another upload of the same bytes may be processing it.
        mine = failed.seq not in self.in_flight
        self.in_flight.add(failed.seq)
        try:
            row = await self._run(
                self.storage.items.retry_failed, failed.seq, digest, self.settings.replica_name,
                file_back, asr,
            )  # fmt: skip
        except BaseException:
            if mine:
                self.in_flight.discard(failed.seq)
            raise
        if row is None:
            if mine:
                self.in_flight.discard(failed.seq)
            return None
        if not wait:
            self.spawn(row, None, asr)
            return row, 200
        return await self.process(row, None, raise_errors=True, asr=asr), 200

    async def _same_bytes(self, row: ItemRow, wait: bool) -> tuple[ItemRow, int] | None:
        """An upload of bytes another request is still processing: that item is this
        request's too. Its failure then marks it failed rather than deleting it (this
        request was told it exists); with wait=true this request waits for the outcome
        and answers as the first one does."""
        if not await self._run(self.storage.items.mark_shared, row.seq):
            return None  # finished (or gone) meanwhile: the caller looks again
        if not wait:
            return row, 200
        deadline = time.monotonic() + SAME_BYTES_WAIT_S
        self.metrics.uploads_waiting_on_same_bytes.inc()
        try:
            while row.status == "processing" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                fresh = await self._run(self.storage.items.get_by_seq, row.seq)
                if fresh is None:
                    return await self._gone(row)
                row = fresh
        finally:
            self.metrics.uploads_waiting_on_same_bytes.dec()
        if row.status == "failed":
            raise errors.UnreadableMedia(row.error or "processing this file failed")
        return row, 200  # ready, or still processing after the wait (as wait=false)

    async def _gone(self, row: ItemRow) -> None:
        """The item waited on is gone. Marked shared, a failure kept it: a user's DELETE
        removed it, which this upload answers as the first one does (rather than make
        it anew), unless another upload of the bytes replaced it, failed: then this
        one looks again (None)."""
        again = await self._run(self.storage.items.get_by_hash, row.content_hash)
        if again is None:
            raise deleted_meanwhile(row)

    def _parse_transcript(self, text: str | None, duration_s: float | None) -> Transcript | None:
        if text is None or not text.strip():
            return None
        try:
            transcript = parse_transcript(text, duration_s)
        except TranscriptError as exc:
            raise errors.InvalidRequest(f"the transcript cannot be read: {exc}") from None
        return transcript if transcript else None

    def _store_item(self, tmp: Path, new: NewItem) -> ItemRow:
        """The media file, then its row, with no delete of the same bytes in between (on
        any replica: the database's lock on the content hash covers both)."""
        assert new.content_hash is not None
        # The upload's bytes reach the disk first, outside the transaction: with SQLite
        # every writer waits while it is open, and a large file's flush takes seconds.
        fsync_file(tmp)
        try:
            return self.storage.items.create(
                new,
                processing_by=self.settings.replica_name,
                before_insert=lambda: self.media.store(tmp, new.content_hash),  # type: ignore[arg-type]
            )
        except DuplicateContent:
            raise  # the file in place is the stored item's own
        except Exception:
            # The file may be in place with no row (the insert failed after it moved):
            # it goes now, unless an item names the same bytes, rather than at the next
            # start-up's reconcile.
            try:
                self.storage.items.remove_media_if_unused(new.content_hash, self.media.remove)
            except Exception:  # the database is failing: the reconcile removes it later
                log.exception("could not remove the media file of a failed insert")
            raise

    def spawn(self, row: ItemRow, info: MediaInfo | None = None, asr: bool = True) -> None:
        self.in_flight.add(row.seq)
        task = asyncio.get_running_loop().create_task(
            self.process(row, info, raise_errors=False, asr=asr), name=f"ingest-{row.id}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def process(
        self, row: ItemRow, info: MediaInfo | None, raise_errors: bool, asr: bool = True
    ) -> ItemRow:
        """Decode, ASR, embed, store, index. With raise_errors (wait=true) a failure
        removes the item and raises the API error (naming the file as its sender did);
        otherwise the item is marked failed."""
        started = time.perf_counter()
        self.in_flight.add(row.seq)
        try:
            return await self._process(row, info, asr)
        except (MediaError, ModelError, errors.ServiceError, WorkerCrashed) as exc:
            if await self._run(self.storage.items.get_by_seq, row.seq) is None:
                # A DELETE came first (its file going may be what failed here): that
                # is the answer, rather than a complaint about a file that is gone.
                if raise_errors:
                    raise deleted_meanwhile(row) from None
                return row
            stored = self.media.path(row.content_hash).name if row.content_hash else ""
            err = naming(as_api_error(exc), stored, row.filename)
            # Removed, unless another upload (on any replica) was told it exists: kept,
            # failed, then. Neither when it is ready: a replica that took it over (this
            # one was silent a while) finished it, and that is the outcome.
            if raise_errors and await self._run(self.delete, row, True):
                self.metrics.ingested.labels(row.kind, "failed").inc()
                raise err from None
            if not await self._run(self.storage.items.mark_failed, row.seq, err.message, True):
                done = await self._run(self.storage.items.get_by_seq, row.seq)
                if done is not None and done.status == "ready":
                    return done
            self.metrics.ingested.labels(row.kind, "failed").inc()
            if raise_errors:
                raise err from None
            log.warning("item %s failed: %s", row.id, err.message)
            return await self._run(self.storage.items.get_by_seq, row.seq) or row
        except Exception as exc:  # a bug: never leave the item `processing` forever
            log.exception("processing item %s failed unexpectedly", row.id)
            self.metrics.ingested.labels(row.kind, "failed").inc()
            if raise_errors and await self._run(self.delete, row, True):
                raise
            message = f"processing failed on the server ({type(exc).__name__}); see its log"
            await self._run(self.storage.items.mark_failed, row.seq, message, True)
            if raise_errors:
                raise
            return await self._run(self.storage.items.get_by_seq, row.seq) or row
        finally:
            self.in_flight.discard(row.seq)
            self._stage("total", time.perf_counter() - started)

    async def _process(self, row: ItemRow, info: MediaInfo | None, asr: bool) -> ItemRow:
        assert row.content_hash is not None
        path = self.media.path(row.content_hash)
        if info is None:
            info = await read_info(path, self.limits, self.metrics)
        want_asr = (
            asr
            and self.settings.asr
            and info.has_audio
            and not row.transcript
            and row.kind != "image"
        )
        # Recognition that heard no words leaves the item without a transcript (null).
        transcript_text, source, vtt = row.transcript, row.transcript_source, None
        for _ in range(SWITCH_RETRIES):
            serving = self.require_model()
            job = media_job(
                path, info, serving.embedder, self.settings, want_asr=want_asr, segmented=True
            )
            job.cache_dir = str(self.settings.cache_dir)
            job.content_hash = row.content_hash
            result = await self.pool.run(process_media, job)
            for stage, seconds in result.timings.items():
                self._stage(stage, seconds)
            if want_asr and result.transcript:
                transcript_text, source = result.transcript.text, "asr"
                vtt = result.transcript.to_vtt()
            want_asr = False  # heard once is enough, whatever happens next
            t = time.perf_counter()
            segments = await asyncio.to_thread(
                self._segments, row.seq, job.segments, result.segments, vtt
            )
            stored = await asyncio.to_thread(
                self._store_ready, serving, row.seq, result.embeddings, list(info.modalities),
                transcript_text, source, info.duration_s, vtt, segments,
            )  # fmt: skip
            self._stage("store", time.perf_counter() - t)
            if stored is not None:
                break
            # The service switched model versions while this item was embedded: embed
            # it again with the version that serves now, so it is found under it.
        else:
            raise errors.ServiceError(
                "the model version kept changing while this item was processed"
            )
        if stored:
            self.metrics.ingested.labels(row.kind, "ready").inc()
        fresh = await self._run(self.storage.items.get_by_seq, row.seq)
        if fresh is None:
            raise deleted_meanwhile(row)
        return fresh

    def _store_ready(
        self,
        serving: Serving,
        seq: int,
        embeddings: list[Embedding],
        modalities: list[str],
        transcript: str | None,
        source: str | None,
        duration_s: float | None,
        vtt: str | None,
        segments: list[NewSegment],
    ) -> bool | None:
        """Store the embeddings and flip the item to ready, then index it — unless the
        serving version is no longer the one that embedded it (None: embed again). Under
        the index lock, which a switch of versions holds while it swaps: an item is
        stored under the version that serves when it is. False: deleted meanwhile."""
        with self.index_lock:
            if self.model.serving is not serving:
                return None
            segment_seqs = self.storage.items.mark_ready(
                seq, serving.version, embeddings, modalities, transcript, source, duration_s,
                vtt, segments,
            )  # fmt: skip
            if segment_seqs is None:
                return False
            self._index_add(serving, seq, embeddings, segments, segment_seqs)
            return True

    def _segments(
        self,
        seq: int,
        spans: list[tuple[float, float]],
        vectors: list[list[Embedding]],
        vtt: str | None,
    ) -> list[NewSegment]:
        """A long item's segments with what its timed transcript (recognised now, or
        uploaded) says in each; cues spanning more than a few segments are left out."""
        if not spans:
            return []
        timed = vtt or self.storage.items.transcript_vtt(seq)
        texts = texts_in_spans(timed, spans, LONGEST_CUE_SEGMENTS * self.settings.segment_s)
        return [
            NewSegment(start, end, vecs, text)
            for (start, end), vecs, text in zip(spans, vectors, texts, strict=True)
        ]

    def _index_add(
        self,
        serving: Serving,
        seq: int,
        embeddings: list[Embedding],
        segments: list[NewSegment] = (),  # type: ignore[assignment]
        segment_seqs: list[int] = (),  # type: ignore[assignment]
    ) -> None:
        """Under the index lock: a delete cannot interleave (it would be resurrected)."""
        t = time.perf_counter()
        if self.storage.items.get_by_seq(seq) is None:  # deleted meanwhile
            return
        for e in embeddings:
            serving.indexes.add(serving.version, e.space, e.modality, [seq], e.vector[None, :])
        if segments:
            ids = segment_ids(segment_seqs)
            pairs = {(e.space, e.modality) for e in segments[0].embeddings}
            for space, modality in sorted(pairs):
                vectors = np.stack([_vector(g.embeddings, space, modality) for g in segments])
                serving.indexes.add(serving.version, space, segment_index(modality), ids, vectors)
        self._stage("index", time.perf_counter() - t)

    # -- text items ----------------------------------------------------------------------
    async def ingest_text(self, text: str, metadata: dict[str, Any]) -> ItemRow:
        """Embed, then store the row with its embeddings in one transaction, then index."""
        if len(text) > self.settings.max_text_chars:
            raise errors.TooLarge(
                f"the text has {len(text)} characters; the limit is {self.settings.max_text_chars}",
                {"max_chars": self.settings.max_text_chars},
            )
        loop = asyncio.get_running_loop()
        new = NewItem(kind="text", modalities=["text"], status="ready", text=text,
                      metadata=metadata)  # fmt: skip
        for _ in range(SWITCH_RETRIES):
            serving = self.require_model()
            t = time.perf_counter()
            by_space = await loop.run_in_executor(
                self.text_executor, serving.embedder.embed_texts, [text]
            )
            self._stage("embed", time.perf_counter() - t)
            embeddings = [Embedding(space, "text", vec[0]) for space, vec in by_space.items()]
            t = time.perf_counter()
            row = await self._run(self._create_ready, serving, new, embeddings)
            self._stage("store", time.perf_counter() - t)
            if row is not None:
                self.metrics.ingested.labels("text", "ready").inc()
                return row
        raise errors.ServiceError("the model version kept changing while this text was stored")

    def _create_ready(
        self, serving: Serving, new: NewItem, embeddings: list[Embedding]
    ) -> ItemRow | None:
        """Store a text item with its embeddings and index it, unless the serving version
        changed since they were made (None)."""
        with self.index_lock:
            if self.model.serving is not serving:
                return None
            row = self.storage.items.create(new, serving.version, embeddings)
            self._index_add(serving, row.seq, embeddings)
            return row

    # -- delete and lifecycle ----------------------------------------------------------------
    def delete(self, row: ItemRow, keep_shared: bool = False) -> bool:
        """Gone from storage and search at once, then the media file goes (sync). With
        `keep_shared`, not an item another upload was told exists. True if deleted."""
        with self.index_lock:
            # The database first (the indexer's contract): a search that runs between
            # the two steps may still find the seq, but the join drops rows that are gone.
            deleted = self.storage.items.delete(row.seq, keep_shared)
            if self.model.indexes is not None and deleted is not None:
                # The item and all its segments, from every index at once.
                ids = [row.seq, *segment_ids(deleted[1]).tolist()]
                self.model.indexes.remove(ids)
        if deleted is not None and deleted[0].content_hash:
            self.storage.items.remove_media_if_unused(deleted[0].content_hash, self._remove_file)
        return deleted is not None

    def _remove_file(self, content_hash: str) -> None:
        """The media file, and what the decode cache holds of it (this host's; other
        hosts' go at their next sweep, service/runtime.py)."""
        self.media.remove(content_hash)
        DecodeCache(self.settings.cache_dir).remove(content_hash)

    async def drain(self, timeout_s: float) -> None:
        """Wait for background processing to finish (graceful shutdown)."""
        pending = [t for t in self._background if not t.done()]
        if not pending:
            return
        log.info("waiting for %d uploads in processing to finish", len(pending))
        _, still = await asyncio.wait(pending, timeout=timeout_s)
        if still:
            log.warning(
                "%d uploads still processing after %.0f s; they resume at the next start",
                len(still),
                timeout_s,
            )
            for task in still:
                task.cancel()


def _vector(embeddings: list[Embedding], space: str, modality: str) -> np.ndarray:
    return next(e.vector for e in embeddings if (e.space, e.modality) == (space, modality))
