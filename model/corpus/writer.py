"""Files on disk: mp4 through ffmpeg, wav, png and text, each written atomically.

Every file is written under a temporary name in the same folder and renamed into
place, so a crashed run never leaves a half-written clip under its final name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model.atomic_files import atomic_path, write_atomic
from model.corpus.errors import ToolError

AUDIO_BITRATE = "96k"


def require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        raise ToolError(
            "ffmpeg is not installed: clips are encoded with it "
            "(install the Debian package 'ffmpeg', or run `make system-deps`)"
        )


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _scratch(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.stem}.{suffix}")


def _to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


@dataclass(frozen=True)
class ClipMedia:
    """One clip to encode: uint8 RGB frames [T, H, W, 3] and mono float audio."""

    path: Path
    frames: np.ndarray
    audio: np.ndarray


def write_mp4s(clips: list[ClipMedia], fps: int, sample_rate: int, file_rate: int) -> None:
    """Encode several clips to h264 + aac mp4 files with one ffmpeg process.

    Starting ffmpeg costs about as much CPU as encoding a whole clip (it loads ~100
    shared libraries), so a batch shares one start. Frames and sound go through raw
    files beside the outputs (removed afterwards); the sound is resampled from
    `sample_rate` to `file_rate`. One thread per encoder: the generator already runs
    one process per core.
    """
    if not clips:
        return
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    outputs: list[str] = []
    scratch: list[Path] = []
    try:
        for clip in clips:
            _, height, width, _ = clip.frames.shape
            video, sound = _scratch(clip.path, "rgb"), _scratch(clip.path, "pcm")
            scratch += [video, sound]
            video.write_bytes(np.ascontiguousarray(clip.frames, dtype=np.uint8).tobytes())
            sound.write_bytes(_to_pcm16(clip.audio))
            command += [
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                "-r", str(fps), "-i", str(video),
                "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", str(sound),
            ]  # fmt: skip
        for i, clip in enumerate(clips):
            command += [
                "-map", f"{2 * i}:v", "-map", f"{2 * i + 1}:a", "-threads", "1",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                "-x264-params", "threads=1",
                "-c:a", "aac", "-aac_coder", "fast", "-b:a", AUDIO_BITRATE,
                "-ar", str(file_rate), "-movflags", "+faststart", "-f", "mp4",
                str(_partial(clip.path)),
            ]  # fmt: skip
            outputs.append(clip.path.name)
        try:
            done = subprocess.run(command, capture_output=True, timeout=60 + 30 * len(clips))
        except (OSError, subprocess.SubprocessError) as exc:
            raise ToolError(f"ffmpeg did not run for {', '.join(outputs)}: {exc}") from exc
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-400:]
            raise ToolError(
                f"ffmpeg could not encode {', '.join(outputs)} (exit {done.returncode}): {tail}"
            )
        for clip in clips:
            os.replace(_partial(clip.path), clip.path)
    finally:
        for path in scratch:
            path.unlink(missing_ok=True)
        for clip in clips:
            _partial(clip.path).unlink(missing_ok=True)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit mono PCM WAV."""
    with atomic_path(path, durable=False) as partial, wave.open(str(partial), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(_to_pcm16(audio))


def write_png(path: Path, image: np.ndarray) -> None:
    """uint8 RGB [H, W, 3] as PNG."""
    with atomic_path(path, durable=False) as partial:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(partial, format="PNG")


def write_text(path: Path, text: str) -> None:
    write_atomic(path, text, durable=False)
