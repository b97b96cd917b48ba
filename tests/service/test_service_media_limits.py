"""Limits of the work one upload can cause, as the service sets them: ffmpeg's CPU time
and memory and speech recognition's budget travel from the settings to the worker
processes; what trips them answers 4xx in the contract's shape, and speech recognition
that runs out leaves the item indexed without a transcript."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import subprocess
from pathlib import Path

import limit_tasks
import pytest
from pydantic import ValidationError

from model.asr.recognizer import ASRLimits
from model.media import (
    DEFAULT_LIMITS,
    CPULimitExceeded,
    DecodeTimeout,
    MemoryLimitExceeded,
    read_media_info,
)
from service.embedder import Embedder, ModelHandle
from service.errors import service_error_response
from service.media_errors import as_api_error
from service.media_jobs import media_job, media_limits
from service.media_worker import MediaPool, WorkerOutOfMemory, process_media
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SPEECH = "a small red ball bounces on a striped background"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Embedder]:
    """The data directory's models/v1 (the default checkpoint, with its own language
    model) and its embedder."""
    data = tmp_path_factory.mktemp("data")
    (data / "models").mkdir()
    (data / "models" / "v1").symlink_to(REPO / "models" / "default")
    return data, Embedder.load(ModelHandle("v1", data / "models" / "v1"), "cpu")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SPEECH], check=True, timeout=60)
    return path


def test_the_settings_reach_every_job_and_survive_the_trip_to_a_worker(
    model: tuple[Path, Embedder], speech: Path
) -> None:
    data, embedder = model
    settings = Settings(
        data_dir=data, ffmpeg_cpu_s=7, ffmpeg_memory_mb=900, asr_timeout_s=5,
        asr_cpu_per_audio_s=0.5, max_transcript_kb=2,
    )  # fmt: skip
    job = media_job(speech, read_media_info(speech), embedder, settings, want_asr=True)
    job = pickle.loads(pickle.dumps(job))  # as the pool sends it to a child
    assert (job.limits.cpu_s, job.limits.memory_mb) == (7, 900)
    assert job.limits.process_limits() == {
        "timeout_s": DEFAULT_LIMITS.timeout_s, "cpu_s": 7, "memory_bytes": 900 * 2**20,
    }  # fmt: skip
    assert job.asr_limits == ASRLimits(min_cpu_s=5, cpu_per_audio_s=0.5, max_text_bytes=2048)
    # The defaults are model.media's (measured in tests/model/test_media_limits.py).
    defaults = media_limits(Settings())
    assert (defaults.cpu_s, defaults.memory_mb) == (DEFAULT_LIMITS.cpu_s, DEFAULT_LIMITS.memory_mb)
    assert media_limits(Settings(ffmpeg_memory_mb=0)).memory_mb is None  # 0: no limit
    with pytest.raises(ValidationError, match="too small for ffmpeg to start"):
        Settings(ffmpeg_memory_mb=100)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (CPULimitExceeded("decoding 'x.mp4': ffmpeg used up its 1 s of CPU time",
                          detail={"cpu_limit_s": 1}), 422, "decode_timeout"),
        (DecodeTimeout("decoding 'x.mp4': ffmpeg did not finish within 120 s",
                       detail={"timeout_s": 120}), 422, "decode_timeout"),
        (MemoryLimitExceeded("decoding 'x.png': ffmpeg needed more than its 512 MB",
                             detail={"memory_limit_mb": 512}), 413, "too_large"),
        (WorkerOutOfMemory("processing this file needed more memory",
                           detail={"memory_limit_mb": 2048}), 413, "too_large"),
    ],
)  # fmt: skip
def test_a_limit_that_trips_answers_4xx_in_the_contract_shape(
    error: Exception, status: int, code: str
) -> None:
    arrived = pickle.loads(pickle.dumps(error))  # raised in a worker process
    response = service_error_response(as_api_error(arrived))
    assert response.status_code == status
    body = json.loads(bytes(response.body))
    assert body == {"error": {"code": code, "message": str(error), "detail": error.detail}}


def test_speech_recognition_out_of_time_leaves_the_item_without_a_transcript(
    model: tuple[Path, Embedder], speech: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, embedder = model
    info = read_media_info(speech)
    heard = process_media(media_job(speech, info, embedder, Settings(data_dir=data), want_asr=True))
    assert heard.transcript is not None and {"red", "ball"} <= set(heard.transcript.text.split())

    no_time = Settings(data_dir=data, asr_timeout_s=0, asr_cpu_per_audio_s=0)
    with caplog.at_level(logging.WARNING, logger="service.media_worker"):
        result = process_media(media_job(speech, info, embedder, no_time, want_asr=True))
    assert result.transcript is None  # best effort: the item is stored without one
    assert {(e.space, e.modality) for e in result.embeddings} == {
        (e.space, e.modality) for e in heard.embeddings
    }  # still searchable by its sound
    assert any(
        "indexed without a transcript" in r.getMessage() and "CPU time" in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_a_decode_cache_that_cannot_be_written_fails_no_upload(
    model: tuple[Path, Embedder], speech: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk (or a cache folder gone wrong) under the decode cache failed the
    upload: "processing failed on the server (OSError)". The cache only saves work."""
    data, embedder = model
    info = read_media_info(speech)
    job = media_job(speech, info, embedder, Settings(data_dir=data), want_asr=False)
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    job.cache_dir, job.content_hash = str(blocked), "ab" * 32
    with caplog.at_level(logging.WARNING, logger="service.media_worker"):
        result = process_media(job)
    assert result.embeddings  # embedded all the same
    assert any("not cached" in r.getMessage() for r in caplog.records), caplog.text


def test_a_media_worker_past_its_memory_fails_the_task_not_the_host() -> None:
    async def scenario() -> tuple[tuple[int, int], object, tuple[int, int]]:
        pool = MediaPool(1, memory_mb=2560)
        pool.start()
        try:
            before = await pool.run(limit_tasks.address_space_limit)
            try:
                failed: object = await pool.run(limit_tasks.allocate, 3 * 2**30)
            except WorkerOutOfMemory as exc:
                failed = exc
            after = await pool.run(limit_tasks.address_space_limit)
            return before, failed, after
        finally:
            pool.shutdown()

    before, failed, after = asyncio.run(scenario())
    assert before[1] == 2560 * 2**20
    assert isinstance(failed, WorkerOutOfMemory), failed
    assert failed.code == "too_large" and "2560 MB" in str(failed)
    assert after[0] == before[0]  # the same process serves on
