"""Decode, speech recognition and embedding of media, in worker processes.

Why processes, not threads: pocketsphinx holds the GIL for the whole decode of an
utterance (measured: a 5 s clip froze the event loop for 2.2 s), and the small
model's many Python-level torch calls hold it often too. In child processes none
of that can stall the event loop, so one big upload never delays searches.

Each child loads the model of a version the first time it sees that version and
keeps it; the recognizer (with the model's own language model when the checkpoint
has one) is built once per child. Children ignore SIGINT/SIGTERM: Ctrl-C in a
terminal reaches the whole process group, and the parent decides when they stop
(after in-flight uploads are finished).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

from model.asr.errors import ASRError
from model.asr.recognizer import SAMPLE_RATE as ASR_SAMPLE_RATE
from model.asr.recognizer import ASRLimits
from model.embedding import embed_segments, embed_windows, freeze_for_inference, media_windows
from model.errors import ModelError
from model.media import MediaError, MediaInfo, MediaLimits, Windows, load_windows
from model.media.decode_cache import DecodeCache, DecodeCacheError
from model.media.segments import Span
from model.transcripts import Transcript
from service.storage import Embedding

log = logging.getLogger("service.media_worker")

T = TypeVar("T")

LM_FILE = "asr.lm"  # a checkpoint with these files carries its own ASR language model


class WorkerCrashed(RuntimeError):
    """A worker process died while processing (killed for memory, or a crash in ffmpeg
    bindings); the pool is restarted."""


class WorkerOutOfMemory(MediaError):
    """A task outgrew the address space of its worker process (MMV_MEDIA_WORKER_MEMORY_MB):
    the file is too large to process here. The process itself survives."""

    code = "too_large"


@dataclass
class MediaJob:
    path: str
    info: MediaInfo
    model_dir: str
    version: str
    n_windows: int | None  # None: enough to cover the file once (at most 10)
    limits: MediaLimits
    want_asr: bool = False
    asr_limits: ASRLimits | None = None  # None: model.asr's defaults
    modalities: tuple[str, ...] = ()  # which modalities to embed (default: all it has)
    # A stored item's windows are kept in the decode cache (DATA_DIR/cache), so that
    # re-indexing to another model version and training read them without ffmpeg.
    cache_dir: str | None = None
    content_hash: str | None = None
    # A long stored item's segments (model/media/segments.py); n_windows then tiles it.
    segments: list[Span] = field(default_factory=list)


@dataclass
class StoredItem:
    """A stored item to embed again with another model version (re-indexing)."""

    seq: int
    path: str
    content_hash: str
    modalities: tuple[str, ...]  # video, audio, image: what to embed
    n_windows: int | None  # as ingestion decoded it (the cache entry's key)
    segments: list[tuple[int, float, float]] = field(default_factory=list)  # seq, start, end


@dataclass
class ReembedJob:
    items: list[StoredItem]
    model_dir: str
    version: str
    cache_dir: str
    limits: MediaLimits


@dataclass
class ReembedResult:
    embeddings: dict[int, list[Embedding]]  # seq -> its embeddings
    failed: dict[int, str]  # seq -> why it could not be embedded
    decoded: int  # items that were not in the cache and had to be decoded
    segments: dict[int, list[Embedding]] = field(default_factory=dict)  # segment seq -> its


@dataclass
class MediaResult:
    embeddings: list[Embedding]
    transcript: Transcript | None
    timings: dict[str, float] = field(default_factory=dict)
    segments: list[list[Embedding]] = field(default_factory=list)  # as MediaJob.segments


# -- child side ---------------------------------------------------------------------------
_embedders: dict[str, Any] = {}
_recognizers: dict[str, Any] = {}


def _init_child(memory_mb: int | None, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # `parent` is the pid as the parent saw it: a parent killed while this child was still
    # starting has already handed it on (to init), and os.getppid() here would watch that.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if memory_mb:
        _limit_address_space(memory_mb)


def _limit_address_space(memory_mb: int) -> None:
    """RLIMIT_AS of this worker: an allocation past it raises MemoryError in the task
    (WorkerOutOfMemory for the caller) instead of the host running out. Only the soft
    limit: the ffmpeg processes started from here inherit it and get their own
    (MediaLimits.memory_mb), which may be larger; a hard limit set by the operator stays."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = memory_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _exit_with_parent(parent: int) -> None:
    """A child blocks on its task queue, whose pipe it holds both ends of, so it never
    notices a parent killed with SIGKILL: watch for being re-parented instead."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _embedder(model_dir: str, version: str) -> Any:
    """The model of `version`, loaded once. Two are kept: while the service switches
    versions, uploads use the serving one and re-indexing the next. A version's weights
    never change, so its towers are frozen for inference (model/embedding.py): uploads,
    searches by example and re-indexing all embed through the same frozen towers."""
    from service.embedder import Embedder, ModelHandle

    if version not in _embedders:
        while len(_embedders) >= 2:
            _embedders.pop(next(iter(_embedders)))  # the least recently loaded
        embedder = Embedder.load(ModelHandle(version, Path(model_dir)), "cpu")
        freeze_for_inference(embedder.model)
        _embedders[version] = embedder
    return _embedders[version]


def _recognizer(model_dir: str) -> Any:
    from model.asr.language_model import LanguageModel
    from model.asr.recognizer import SpeechRecognizer

    if model_dir not in _recognizers:
        lm = LanguageModel.load(model_dir) if (Path(model_dir) / LM_FILE).is_file() else None
        _recognizers.clear()
        _recognizers[model_dir] = SpeechRecognizer(lm)
    return _recognizers[model_dir]


def warm_up(model_dir: str, version: str, with_asr: bool) -> int:
    """Load the model (and the recognizer) now rather than on the first upload."""
    _embedder(model_dir, version)
    if with_asr:
        _recognizer(model_dir).warm_up()
    time.sleep(0.2)  # keep this child busy so the next warm-up task reaches another one
    return os.getpid()


def process_media(job: MediaJob) -> MediaResult:
    """Windows -> (ASR) -> embeddings per (space, modality), averaged over windows."""
    timings: dict[str, float] = {}
    embedder = _embedder(job.model_dir, job.version)
    info = job.info
    wanted = job.modalities or info.modalities

    t = time.perf_counter()
    want_speech = job.want_asr and info.has_audio
    cache = DecodeCache(job.cache_dir) if job.cache_dir and job.content_hash else None
    windows = None
    if cache is not None and not want_speech:  # embedding again (a switch of versions)
        windows = _cached(cache, job.content_hash, embedder.config, job.n_windows)  # type: ignore[arg-type]
    if windows is None:
        windows = load_windows(
            job.path,
            embedder.config,
            job.n_windows,
            info,
            limits=job.limits,
            speech_rate=ASR_SAMPLE_RATE if want_speech else None,
        )
        if cache is not None:
            _keep(cache, job.content_hash, embedder.config, job.n_windows, windows, job.path)  # type: ignore[arg-type]
    timings["decode"] = time.perf_counter() - t

    transcript = None
    if want_speech and windows.speech is not None:
        t = time.perf_counter()
        try:
            transcript = _recognizer(job.model_dir).transcribe(
                windows.speech, ASR_SAMPLE_RATE, job.asr_limits
            )
        except ASRError as exc:  # best effort: still searchable by picture and sound
            log.warning(
                "speech recognition failed for %s; it is indexed without a transcript: %s",
                Path(job.path).name,
                exc,
            )
        timings["asr"] = time.perf_counter() - t

    t = time.perf_counter()
    embeddings: list[Embedding] = []
    segments: list[list[Embedding]] = [[] for _ in job.segments]
    for modality in wanted:
        if job.segments and modality in ("video", "audio"):
            whole, parts = embed_segments(embedder.model, windows, modality, job.segments)
            embeddings += [Embedding(space, modality, vec) for space, vec in whole.items()]
            for space, vectors in parts.items():
                for k, vec in enumerate(vectors):
                    segments[k].append(Embedding(space, modality, vec))
            continue
        out = embedder.embed_media(windows, modality)
        embeddings += [Embedding(space, modality, vec) for space, vec in out.items()]
    timings["embed"] = time.perf_counter() - t
    return MediaResult(embeddings, transcript, timings, segments)


def _cached(cache: DecodeCache, digest: str, config: Any, n_windows: int | None) -> Windows | None:
    """The windows of a file decoded before, or None (not cached, or found damaged: then
    removed, so that the decode about to be made can take its place)."""
    entry = cache.windows_entry(digest, config, n_windows)
    if not cache.has(entry):
        return None
    try:
        return cache.cached_windows(Path(digest), config, n_windows, digest=digest).load()
    except (DecodeCacheError, MediaError, OSError) as exc:
        log.warning("cached windows of %s unreadable, decoding again: %s", digest[:12], exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None


def _keep(
    cache: DecodeCache,
    digest: str,
    config: Any,
    n_windows: int | None,
    windows: Windows,
    path: str | Path,
) -> None:
    """Keep decoded windows in the cache, if it can take them: the cache only saves
    decoding again later, so a full disk or an unwritable folder fails no upload and no
    embedding again (a switch of versions, moments cut afterwards)."""
    try:
        cache.store_windows(digest, config, n_windows, windows, Path(path).name)
    except (OSError, DecodeCacheError) as exc:
        log.warning("windows of %s not cached: %s", Path(path).name, exc)


def embed_stored(job: ReembedJob) -> ReembedResult:
    """Embed stored items with `job.version`, their windows read from the decode cache
    (decoded from their media, and kept, where missing). The windows of all the items
    go through the model together, per modality, in batches."""
    embedder = _embedder(job.model_dir, job.version)
    cache = DecodeCache(job.cache_dir)
    config = embedder.config
    failed: dict[int, str] = {}
    windows: dict[int, Windows] = {}
    decoded = 0
    for item in job.items:
        try:
            found = _cached(cache, item.content_hash, config, item.n_windows)
            if found is None:
                found = load_windows(item.path, config, item.n_windows, limits=job.limits)
                decoded += 1
                _keep(cache, item.content_hash, config, item.n_windows, found, item.path)
            windows[item.seq] = found
        except (MediaError, ModelError, OSError) as exc:  # the item's own media
            failed[item.seq] = str(exc)
    out: dict[int, list[Embedding]] = {seq: [] for seq in windows}
    segment_out: dict[int, list[Embedding]] = {}
    # Long items, with their segments: one pass over each one's windows.
    for item in job.items:
        if not item.segments or item.seq not in windows:
            continue
        spans = [(start, end) for _, start, end in item.segments]
        for modality in item.modalities:
            if modality not in ("video", "audio"):
                continue
            whole, parts = embed_segments(embedder.model, windows[item.seq], modality, spans)
            out[item.seq] += [Embedding(s, modality, v) for s, v in whole.items()]
            for space, vectors in parts.items():
                for (seq, _, _), vec in zip(item.segments, vectors, strict=True):
                    segment_out.setdefault(seq, []).append(Embedding(space, modality, vec))
    # The others together, per modality, in batches.
    for modality in ("video", "audio", "image"):
        members = [
            i for i in job.items if i.seq in windows and modality in i.modalities and not i.segments
        ]
        if not members:
            continue
        arrays = [media_windows(windows[i.seq], modality) for i in members]
        owner = np.concatenate([np.full(len(a), n) for n, a in enumerate(arrays)])
        vectors = embed_windows(
            embedder.model, modality, np.concatenate(arrays), owner, len(members)
        )
        for n, item in enumerate(members):
            out[item.seq] += [Embedding(s, modality, v[n]) for s, v in vectors.items()]
    return ReembedResult(out, failed, decoded, segment_out)


# -- parent side --------------------------------------------------------------------------
_DIED_ALONE = (
    "processing this file made a worker process die (too big to decode in memory, or a "
    "crash in a decoder)"
)


def _raise(exc: BaseException) -> NoReturn:
    raise exc


def _child_died(future: Future[Any]) -> bool:
    """Whether a finished task failed because its process died (exception() of a
    cancelled future raises: a stop cancels the tasks still queued)."""
    return not future.cancelled() and isinstance(future.exception(), BrokenProcessPool)


def _submit(executor: ProcessPoolExecutor, fn: Callable[..., T], *args: Any) -> Future[T]:
    """executor.submit(), then its manager thread woken once more. CPython (3.11 to 3.13)
    wakes the manager before spawning the child a submit may add; a manager that wakes in
    between goes back to waiting on the children it knew, so when the new child dies (a
    decoder crash) nothing notices until another task ends or is submitted: on a busy
    host an upload stayed `processing` (in CI, for over a minute). Woken again now that
    the child is known, it watches that child too."""
    future = executor.submit(fn, *args)
    wakeup = getattr(executor, "_executor_manager_thread_wakeup", None)
    lock = getattr(executor, "_shutdown_lock", None)
    if wakeup is not None and lock is not None:
        with lock:  # the manager closes the wake-up pipe under this lock
            wakeup.wakeup()
    return future


def _shut_down_aside(executor: ProcessPoolExecutor, cancel_futures: bool = False) -> None:
    """executor.shutdown(wait=False) from a thread of its own. It is called from tasks'
    done callbacks, which Python 3.12+ runs in the executor's manager thread while that
    holds the lock shutdown() takes: called there, a dead child hung the pool for good."""
    threading.Thread(
        target=executor.shutdown,
        kwargs={"wait": False, "cancel_futures": cancel_futures},
        name="media-pool-shutdown",
        daemon=True,
    ).start()


def _out_of_memory(exc: BaseException, memory_mb: int | None) -> WorkerOutOfMemory | None:
    """The typed error for a task that ran out of its worker's memory, else None. torch
    reports a failed allocation as a RuntimeError, not a MemoryError."""
    if not isinstance(exc, MemoryError) and not (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    ):
        return None
    limit = f" ({memory_mb} MB, MMV_MEDIA_WORKER_MEMORY_MB)" if memory_mb else ""
    return WorkerOutOfMemory(
        f"processing this file needed more memory than a media worker may use{limit}",
        detail={"memory_limit_mb": memory_mb} if memory_mb else None,
    )


class MediaPool:
    """A process pool for media work that restarts itself when a child dies.
    `memory_mb`: address space of each child (None: no limit)."""

    def __init__(self, workers: int, memory_mb: int | None = None) -> None:
        self.workers = workers
        self.memory_mb = memory_mb
        self._executor: ProcessPoolExecutor | None = None
        # Tasks submitted through run() and submit() and not yet finished; warm-ups are
        # not counted: shutdown() waits for the former and not for the latter.
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._alone: set[ProcessPoolExecutor] = set()  # running a task again, one each

    def _count(self, delta: int) -> None:
        with self._in_flight_lock:
            self._in_flight += delta

    def _new_executor(self, workers: int) -> ProcessPoolExecutor:
        # spawn, not fork: the parent has torch, sqlite and event-loop threads running.
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_child,
            initargs=(self.memory_mb, os.getpid()),
        )

    def start(self) -> None:
        self._executor = self._new_executor(self.workers)

    def warm_up(self, model_dir: Path, version: str, with_asr: bool) -> None:
        assert self._executor is not None
        for _ in range(self.workers):
            _submit(self._executor, warm_up, str(model_dir), version, with_asr)

    def _running(self) -> ProcessPoolExecutor:
        if self._executor is None:
            raise WorkerCrashed("the media pool is not running")
        return self._executor

    def _restart(self, broken: ProcessPoolExecutor) -> WorkerCrashed:
        with self._in_flight_lock:  # not once shutdown() has taken the pool away
            restart = self._executor is broken
            if restart:
                self._executor = self._new_executor(self.workers)
        if restart:
            log.error("a media worker process died; restarting the pool")
            _shut_down_aside(broken, cancel_futures=True)
        return WorkerCrashed(
            "a worker process died while processing this (too big to decode in memory, "
            "or a crash in a decoder)"
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a child. When a child dies, every task in flight fails
        with it, most of them for another task's file: each is run again alone in a
        fresh process, so a crash there is its own (WorkerCrashed), and the others
        succeed rather than fail with it."""
        executor = self._running()
        self._count(+1)
        try:
            return await self._run(executor, fn, *args)
        finally:
            self._count(-1)

    async def _run(self, executor: ProcessPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.wrap_future(_submit(executor, fn, *args))
        except BrokenProcessPool:
            self._restart(executor)
        except (MemoryError, RuntimeError) as exc:
            self._raise_if_out_of_memory(exc)
            raise
        alone = self._alone_executor()
        if alone is None:
            raise WorkerCrashed("the media pool is stopping")
        try:
            return await asyncio.wrap_future(_submit(alone, fn, *args))
        except BrokenProcessPool:
            raise WorkerCrashed(_DIED_ALONE) from None
        except (MemoryError, RuntimeError) as exc:
            self._raise_if_out_of_memory(exc)
            raise
        finally:
            self._forget_alone(alone)

    def _raise_if_out_of_memory(self, exc: BaseException) -> None:
        typed = _out_of_memory(exc, self.memory_mb)
        if typed is not None:
            raise typed from None

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """For threads other than the event loop's (re-indexing, moments cut later): a
        future to wait on. As with run(), a task that fails because a child died (most
        often for another task's file) is run again alone in a fresh process, and its
        `result()` raises WorkerCrashed only when it dies there too."""
        executor = self._running()
        self._count(+1)
        try:
            inner = _submit(executor, fn, *args)
        except BaseException:
            self._count(-1)
            raise
        outer: Future[T] = Future()

        def settle(outcome: Callable[[], T]) -> None:
            """The task is over: counted out before its waiter can wake."""
            self._count(-1)
            try:
                outer.set_result(outcome())
            except BaseException as exc:  # the function's own error, passed on as it is
                outer.set_exception(_out_of_memory(exc, self.memory_mb) or exc)

        def alone_done(future: Future[T], alone: ProcessPoolExecutor) -> None:
            self._forget_alone(alone)
            if _child_died(future):
                settle(partial(_raise, WorkerCrashed(_DIED_ALONE)))
            else:
                settle(future.result)

        def done(future: Future[T]) -> None:
            if not _child_died(future):  # its answer, its own error, or cancelled at a stop
                settle(future.result)
                return
            crashed = self._restart(executor)
            alone = self._alone_executor()
            if alone is None:  # the pool is stopping: nothing runs again
                settle(partial(_raise, crashed))
                return
            try:
                again = _submit(alone, fn, *args)
            except BaseException as exc:  # a pool that cannot start: the crash stands
                self._forget_alone(alone)
                settle(partial(_raise, exc))
                return
            again.add_done_callback(lambda f: alone_done(f, alone))

        inner.add_done_callback(done)
        return outer

    def _alone_executor(self) -> ProcessPoolExecutor | None:
        """A fresh one-process pool to run a task again in, known to shutdown(); None
        when the pool is stopping."""
        with self._in_flight_lock:
            if self._executor is None:
                return None
            alone = self._new_executor(1)
            self._alone.add(alone)
            return alone

    def _forget_alone(self, alone: ProcessPoolExecutor) -> None:
        with self._in_flight_lock:
            self._alone.discard(alone)
        _shut_down_aside(alone)

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop the children. Called after uploads in flight are finished, so what may
        still run is a warm-up (loading the model), which is stopped at once: a service
        stopped just after it started would otherwise wait seconds for a model nobody
        will use. Children still running a task get `grace_s` to finish it and are then
        terminated rather than waited for."""
        with self._in_flight_lock:  # no task is run again alone after this
            executor, self._executor = self._executor, None
            alone = list(self._alone)
        if executor is None:
            return
        children = [
            child
            for pool in (executor, *alone)
            for child in list((getattr(pool, "_processes", None) or {}).values())
        ]  # fmt: skip
        for pool in (executor, *alone):
            pool.shutdown(wait=False, cancel_futures=True)
        with self._in_flight_lock:
            busy = self._in_flight > 0
        deadline = time.monotonic() + (grace_s if busy else 0.0)
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            if child.is_alive():
                child.kill()  # children ignore SIGTERM (see the module docstring)
                child.join(5.0)
