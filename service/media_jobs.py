"""What the service asks of a media file, for ingestion and for search by example:
its MediaInfo (ffprobe, off the event loop) and the MediaJob a worker process runs on
it (decode, speech recognition, embedding with the active model)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from model.media import MediaError, MediaInfo, MediaLimits, read_media_info
from service.embedder import Embedder
from service.media_errors import api_error
from service.media_worker import MediaJob
from service.prometheus import Metrics
from service.settings import Settings


def media_limits(settings: Settings) -> MediaLimits:
    return MediaLimits(max_duration_s=settings.max_duration_s, max_pixels=settings.max_pixels)


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


def media_job(
    path: Path,
    info: MediaInfo,
    embedder: Embedder,
    settings: Settings,
    *,
    want_asr: bool = False,
    modalities: tuple[str, ...] = (),
) -> MediaJob:
    """The job for `path` with the embedder's model version (its files in models_dir)."""
    return MediaJob(
        path=str(path),
        info=info,
        model_dir=str(settings.models_dir / embedder.version),
        version=embedder.version,
        # An image is one window; else MMV_EMBED_WINDOWS, or (0) enough to cover the file.
        n_windows=1 if info.kind == "image" else settings.embed_windows or None,
        limits=media_limits(settings),
        want_asr=want_asr,
        modalities=modalities,
    )
