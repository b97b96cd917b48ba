"""A whole file as the paper evaluates it: N uniformly spaced windows of the model's
clip length, whose embeddings the caller averages.

Two ways to get them, picked by cost: a short file (windows covering a good part of
it) is decoded once at the model's frame rate and size and the windows are sliced
out; a long file is read by seeking to each window (`-ss` before `-i`), a few
processes at a time, so an hour of video costs N short decodes rather than an hour
of decoding.

Speech recognition wants the whole sound track at its own rate (16 kHz mono): asked
for with `speech_rate`, it comes from the same decode when the file is read in one
pass at that rate, and from one more ffmpeg process otherwise.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from model.config import ModelConfig
from model.media.decode import (
    Clip,
    decode_audio,
    decode_clip,
    decode_full,
    decode_image,
    pad_audio,
    pad_frames,
)
from model.media.errors import MediaLimits
from model.media.media_info import MediaInfo, read_media_info
from model.usable_cpus import usable_cpus

# One pass is cheaper than seeking while the windows cover at least a third of the
# file: each seek costs a process start (≈ 65 ms here) plus decoding from the
# previous keyframe. Files up to this long are always decoded in one pass.
SINGLE_PASS_COVERAGE = 1 / 3
SINGLE_PASS_MAX_S = 20.0
MAX_WINDOWS = 10  # the paper averages 10 windows (UCF101/HMDB51 protocol)


@dataclass
class Windows:
    """N windows of one file. video uint8 [N, T, H, W, 3] (None without pictures),
    audio float32 [N, S] (None without sound), starts_s float [N]; speech float32 [L]:
    the whole sound track at the asked speech rate (None unless asked and there is
    sound)."""

    video: np.ndarray | None
    audio: np.ndarray | None
    starts_s: np.ndarray
    info: MediaInfo
    speech: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.starts_s)


def default_window_count(
    duration_s: float | None, clip_s: float, max_windows: int = MAX_WINDOWS
) -> int:
    """Enough windows to cover the file once, at most `max_windows`."""
    if not duration_s or duration_s <= clip_s:
        return 1
    return max(1, min(max_windows, math.ceil(duration_s / clip_s)))


def window_starts(duration_s: float | None, clip_s: float, n_windows: int) -> np.ndarray:
    """Uniformly spaced starts from 0 to the last full window; one window is the
    middle one. A file no longer than one window, or of unknown length, has one
    window at 0."""
    if not duration_s or duration_s <= clip_s:
        return np.zeros(1)
    if n_windows <= 1:
        return np.array([(duration_s - clip_s) / 2])
    return np.linspace(0.0, duration_s - clip_s, n_windows)


def load_windows(
    path: str | Path,
    config: ModelConfig,
    n_windows: int | None = None,
    info: MediaInfo | None = None,
    *,
    limits: MediaLimits | None = None,
    parallel: int | None = None,
    strategy: Literal["auto", "single", "seek"] = "auto",
    speech_rate: int | None = None,
) -> Windows:
    """Decode `n_windows` (default: enough to cover the file, ≤ 10) uniformly spaced
    windows of `config.clip_seconds` at the model's fps, frame count, crop size and
    sample rate. A file shorter than one window gives one window, padded (last frame
    held, silence after the sound ends); an image gives one static clip.
    `parallel`: seek-decodes run at once (default: min(2, CPUs)). `strategy`: "auto"
    picks one pass or seeking by cost; "single"/"seek" force one (tests, benchmarks).
    `speech_rate`: also return the whole sound track at this rate (`Windows.speech`)."""
    info = info or read_media_info(path, limits)
    v = config.video
    sample_rate = config.audio.sample_rate
    clip_s = config.clip_seconds
    if info.kind == "image":
        picture = decode_image(path, size=v.crop_size, limits=limits, info=info)
        video = np.repeat(picture[None, None], v.frames, axis=1)
        return Windows(video=video, audio=None, starts_s=np.zeros(1), info=info)
    if n_windows is None:
        n_windows = default_window_count(info.duration_s, clip_s)
    starts = window_starts(info.duration_s, clip_s, n_windows)
    duration = info.duration_s
    if strategy == "auto":
        single_pass = (
            duration is None
            or duration <= SINGLE_PASS_MAX_S
            or len(starts) * clip_s >= SINGLE_PASS_COVERAGE * duration
        )
    else:
        single_pass = strategy == "single"
    if single_pass:
        clip = decode_full(
            path,
            fps=v.fps if info.has_video else None,
            size=v.crop_size if info.has_video else None,
            sample_rate=sample_rate if info.has_audio else None,
            limits=limits,
            info=info,
        )
        windows = _slice_windows(clip, starts, config, info)
        if speech_rate is not None and info.has_audio and speech_rate == sample_rate:
            windows.speech = clip.audio  # the track this pass decoded is the one wanted
            return windows
        return _with_speech(windows, path, speech_rate, limits)
    workers = parallel or min(2, usable_cpus())

    def one(start: float) -> Clip:
        return decode_clip(
            path,
            fps=v.fps,
            frames=v.frames,
            size=v.crop_size,
            sample_rate=sample_rate if info.has_audio else None,
            start_s=float(start),
            limits=limits,
            info=info,
        )

    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            clips = list(pool.map(one, starts))
    else:
        clips = [one(s) for s in starts]
    video = np.stack([c.video for c in clips]) if info.has_video else None
    audio = np.stack([c.audio for c in clips]) if info.has_audio else None
    windows = Windows(video=video, audio=audio, starts_s=starts, info=info)
    return _with_speech(windows, path, speech_rate, limits)


def _with_speech(
    windows: Windows, path: str | Path, speech_rate: int | None, limits: MediaLimits | None
) -> Windows:
    if speech_rate is not None and windows.info.has_audio:
        windows.speech = decode_audio(
            path, sample_rate=speech_rate, limits=limits, info=windows.info
        )
    return windows


def _slice_windows(clip: Clip, starts: np.ndarray, config: ModelConfig, info: MediaInfo) -> Windows:
    v = config.video
    sample_rate = config.audio.sample_rate
    video = audio = None
    if clip.video is not None:
        frames = clip.video
        video = np.stack(
            [
                # A window past the decoded end (a truncated file whose header promised
                # more) holds the last frame that could be decoded.
                pad_frames(frames[min(round(s * v.fps), len(frames) - 1) :], v.frames)
                for s in starts
            ]
        )
    if clip.audio is not None:
        samples = config.audio_samples
        audio = np.stack([pad_audio(clip.audio[round(s * sample_rate) :], samples) for s in starts])
    return Windows(video=video, audio=audio, starts_s=starts, info=info)
