"""Typed media errors and the limits that guard every ffmpeg call.

Each error carries a `code` that the REST API returns as `error.code`, so a bad
upload becomes a 4xx with a message a person understands, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from model.errors import ModelError


class MediaError(ModelError):
    """Base of every error caused by the media itself (bad input, not a bug)."""

    code: str = "unreadable_media"

    def __init__(self, message: str, *, detail: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class UnreadableMedia(MediaError):
    """ffmpeg cannot read the file: not media, truncated, corrupt, or missing."""

    code = "unreadable_media"


class NoUsableStream(MediaError):
    """The file opens but holds nothing we can use (e.g. subtitles only, or no audio
    where audio was asked for)."""

    code = "unsupported_media"


class UnsupportedFormat(MediaError):
    """A container we refuse on purpose: playlists and other formats that make
    ffmpeg open further files or render text as pictures."""

    code = "unsupported_media"


class MediaTooLong(MediaError):
    code = "too_long"


class TooManyPixels(MediaError):
    code = "too_large"


class OutputTooLarge(MediaError):
    """The decoded output passed its byte cap (a header that lies about the size)."""

    code = "too_large"


class DecodeTimeout(MediaError):
    code = "decode_timeout"


class CPULimitExceeded(DecodeTimeout):
    """ffmpeg used up its CPU time (RLIMIT_CPU): a file that costs too much to decode.
    The same code as the wall-clock timeout: to a client both say "took too long"."""


class MemoryLimitExceeded(MediaError):
    """ffmpeg ran out of its address space (RLIMIT_AS): a file too large to decode."""

    code = "too_large"


class FFmpegMissing(RuntimeError):
    """ffmpeg/ffprobe are not installed: a set-up problem, not the user's input."""


@dataclass(frozen=True)
class MediaLimits:
    """Caps applied to every probe and decode.

    max_duration_s: longest accepted media (4 h by default).
    max_pixels: largest accepted frame, width × height (≈ 40 MP: 8K video and
      large photos pass, decompression bombs do not).
    timeout_s: wall-clock limit of one ffmpeg/ffprobe process.
    max_output_bytes: most bytes one process may write back (decoded frames/audio).
    cpu_s: CPU seconds one process may use (RLIMIT_CPU; None: no limit). As long as the
      wall-clock limit: decodes run one thread, so only a process spinning on more than
      one core trips it first.
    memory_mb: address space one process may map (RLIMIT_AS; None: no limit). ffmpeg's
      shared libraries alone map ~250 MB; decoding an 8K frame in full adds ~300 MB.
    whole_file_s_per_s: a decode of a whole file (decode_full: every window of a long
      item in one pass) may take this many seconds (wall clock and CPU) per second of
      media when that is more than timeout_s/cpu_s: an hour of 1080p takes minutes on
      one core, which a fixed 120 s refused.
    """

    max_duration_s: float = 4 * 3600.0
    max_pixels: int = 40_000_000
    timeout_s: float = 120.0
    max_output_bytes: int = 1 << 30
    cpu_s: float | None = 120.0
    memory_mb: int | None = 2048
    whole_file_s_per_s: float = 0.5

    def for_whole_file(self, duration_s: float | None) -> MediaLimits:
        """These limits for a decode of the whole file of this duration."""
        allowed = (duration_s or 0.0) * self.whole_file_s_per_s
        cpu_s = None if self.cpu_s is None else max(self.cpu_s, allowed)
        return replace(self, timeout_s=max(self.timeout_s, allowed), cpu_s=cpu_s)

    def process_limits(self) -> dict[str, Any]:
        """The keyword arguments of `process.run` these limits ask for."""
        return {
            "timeout_s": self.timeout_s,
            "cpu_s": self.cpu_s,
            "memory_bytes": None if self.memory_mb is None else self.memory_mb * 2**20,
        }


DEFAULT_LIMITS = MediaLimits()
