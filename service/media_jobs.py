"""What the service asks of a media file, for ingestion and for search by example:
its MediaInfo (ffprobe, off the event loop) and the MediaJob a worker process runs on
it (decode, speech recognition, embedding with the active model)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from model.asr.recognizer import ASRLimits
from model.media import MediaError, MediaInfo, MediaLimits, read_media_info
from model.media.segments import Span, segment_spans, tiling_window_count
from service.embedder import Embedder
from service.media_errors import api_error
from service.media_worker import MediaJob
from service.prometheus import Metrics
from service.settings import Settings


def media_limits(settings: Settings) -> MediaLimits:
    """The caps of every probe and decode for the service, from its settings. They travel
    inside each MediaJob/ReembedJob to the worker processes that run ffmpeg."""
    return MediaLimits(
        max_duration_s=settings.max_duration_s,
        max_pixels=settings.max_pixels,
        cpu_s=settings.ffmpeg_cpu_s,
        memory_mb=settings.ffmpeg_memory_mb or None,
    )


def asr_limits(settings: Settings) -> ASRLimits:
    """The bounds of speech recognition of one upload: a CPU budget proportional to its
    sound (with a floor), and the transcript cap an uploaded transcript has."""
    return ASRLimits(
        min_cpu_s=settings.asr_timeout_s,
        cpu_per_audio_s=settings.asr_cpu_per_audio_s,
        max_text_bytes=settings.max_transcript_kb * 1024,
    )


async def read_info(path: Path, limits: MediaLimits, metrics: Metrics) -> MediaInfo:
    """The file's MediaInfo checked against the limits; API errors (415, 413, 422) for
    files that are not media or are too big. Timed as the `probe` ingestion stage."""
    started = time.perf_counter()
    try:
        info = await asyncio.to_thread(read_media_info, path, limits)
    except MediaError as exc:
        raise api_error(exc) from None
    metrics.ingest_stage.labels("probe").observe(time.perf_counter() - started)
    return info


def window_plan(
    kind: str, duration_s: float | None, settings: Settings, clip_s: float, segmented: bool
) -> tuple[int | None, list[Span]]:
    """How a stored item's file is decoded: (windows, segment spans).

    An image is one window. A sound or video longer than MMV_SEGMENT_S is cut into
    segments (`segmented`), decoded as windows that tile it so each segment has its own;
    the file's vector is then the mean of them all. Anything else: MMV_EMBED_WINDOWS, or
    (0) enough uniformly spaced windows to cover the file once, at most 10. Ingestion and
    re-indexing both ask here, so they find the same decode-cache entry."""
    if kind == "image":
        return 1, []
    if segmented and settings.segment_s and kind in ("video", "audio"):
        spans = segment_spans(duration_s, settings.segment_s, settings.segment_hop_s)
        if spans:
            return tiling_window_count(duration_s, clip_s), spans
    return settings.embed_windows or None, []


def media_job(
    path: Path,
    info: MediaInfo,
    embedder: Embedder,
    settings: Settings,
    *,
    want_asr: bool = False,
    modalities: tuple[str, ...] = (),
    segmented: bool = False,
) -> MediaJob:
    """The job for `path` with the embedder's model version (its files in models_dir);
    `segmented`: a stored item, cut into segments when long (an example is not)."""
    n_windows, spans = window_plan(
        info.kind, info.duration_s, settings, embedder.config.clip_seconds, segmented
    )
    return MediaJob(
        path=str(path),
        info=info,
        model_dir=str(settings.models_dir / embedder.version),
        version=embedder.version,
        n_windows=n_windows,
        limits=media_limits(settings),
        want_asr=want_asr,
        asr_limits=asr_limits(settings),
        modalities=modalities,
        segments=spans,
    )
