"""Timed transcripts: read and write WebVTT, SRT and plain text.

A transcript is a list of timed segments (like ASR captions). Plain text has no
timings: it becomes one segment that spans the whole clip.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from model.errors import ModelError

TranscriptSource = Literal["upload", "asr", "corpus"]
SIDECAR_SUFFIXES = (".vtt", ".srt", ".txt")  # in order of preference

# 00:00:01.500 or 00:01.500 (WebVTT) and 00:00:01,500 (SRT)
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_CUE_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]+>|\{\\[^}]*\}")  # <i>, <v Name>, <00:01.000>; SRT's {\an8}


class TranscriptError(ModelError, ValueError):
    """A transcript file or string that cannot be read."""


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the media
    end: float
    text: str

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


@dataclass
class Transcript:
    segments: list[Segment] = field(default_factory=list)
    source: TranscriptSource = "upload"

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text).strip()

    def __bool__(self) -> bool:
        return bool(self.text)

    def text_in(self, start_s: float, end_s: float, max_cue_s: float | None = None) -> str:
        """What is said between start_s and end_s: the cues that overlap it, joined.
        Cues longer than `max_cue_s` are left out: a plain transcript is one cue over the
        whole file, which says nothing about where in it anything is said."""
        return " ".join(
            s.text
            for s in self.segments
            if s.text
            and s.start < end_s
            and s.end > start_s
            and (max_cue_s is None or s.end - s.start <= max_cue_s)
        ).strip()

    def nearest(self, time_s: float, k: int) -> list[Segment]:
        """The k segments whose middles are nearest to `time_s` (MIL-NCE positives)."""
        ranked = sorted((s for s in self.segments if s.text), key=lambda s: abs(s.middle - time_s))
        return ranked[:k]

    def to_vtt(self) -> str:
        lines = ["WEBVTT", ""]
        for seg in self.segments:
            lines.append(f"{_format_time(seg.start, '.')} --> {_format_time(seg.end, '.')}")
            # Escaped as WebVTT wants: stored and read again (moments, training), a cue
            # saying "if x < 10 and y > 2" lost what stood between its < and > as a tag.
            lines.append(html.escape(seg.text, quote=False))
            lines.append("")
        return "\n".join(lines)

    def to_srt(self) -> str:
        lines: list[str] = []
        for i, seg in enumerate(self.segments, start=1):
            lines.append(str(i))
            lines.append(f"{_format_time(seg.start, ',')} --> {_format_time(seg.end, ',')}")
            lines.append(seg.text)
            lines.append("")
        return "\n".join(lines)


def texts_in_spans(
    timed: str | None, spans: list[tuple[float, float]], max_cue_s: float | None
) -> list[str | None]:
    """What a timed transcript (WebVTT or SRT text) says in each span (None: nothing, or
    no usable transcript); see `Transcript.text_in`."""
    transcript = None
    if timed:
        try:
            transcript = parse_transcript(timed)
        except TranscriptError:
            transcript = None
    if transcript is None:
        return [None] * len(spans)
    return [transcript.text_in(start, end, max_cue_s) or None for start, end in spans]


def _format_time(seconds: float, sep: str) -> str:
    ms_total = max(0, round(seconds * 1000))
    h, rem = divmod(ms_total, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


MAX_HOUR_DIGITS = 6  # 999,999 hours: any real recording, and far from float's limits


def _parse_time(groups: tuple[str | None, ...]) -> float:
    h, m, s, frac = groups
    if h is not None and len(h.lstrip("0")) > MAX_HOUR_DIGITS:
        # A cue time no recording has; past ~300 digits it was an overflow, a 500.
        raise TranscriptError(
            f"a cue time has {len(h)}-digit hours; at most {MAX_HOUR_DIGITS} digits"
        )
    # Leading zeros off before int(): 5,000 of them passed the check above and then
    # raised a plain ValueError (past Python's 4,300-digit limit), a 500.
    hours = int(h.lstrip("0") or "0") if h is not None else 0
    return hours * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def _parse_cues(text: str, vtt: bool = False) -> list[Segment]:
    """Shared by WebVTT and SRT: a cue is a timing line followed by text lines. In WebVTT
    only an empty line ends a cue: a line of spaces is cue text (YouTube's captions open
    each cue with one, and their words were taken for the next cue's)."""
    segments: list[Segment] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        match = _CUE_TIMING.match(lines[i])
        if not match:
            i += 1
            continue
        start = _parse_time(match.groups()[:4])
        end = _parse_time(match.groups()[4:])
        if end < start:
            raise TranscriptError(f"cue on line {i + 1} ends ({end:.3f}s) before it starts")
        i += 1
        body: list[str] = []
        # A cue ends at a blank line, or, in files that leave the blank lines out, at
        # the next timing line (whose SRT counter line then is not text either).
        while (
            i < len(lines)
            and (lines[i] if vtt else lines[i].strip())
            and not _CUE_TIMING.match(lines[i])
        ):
            body.append(html.unescape(_TAG.sub("", lines[i])).strip())
            i += 1
        if i < len(lines) and _CUE_TIMING.match(lines[i]) and body and body[-1].isdigit():
            body.pop()
        segments.append(Segment(start, end, " ".join(b for b in body if b)))
    return segments


def parse_vtt(text: str) -> Transcript:
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise TranscriptError("not a WebVTT file: it must start with 'WEBVTT'")
    return Transcript(_parse_cues(text, vtt=True))


def parse_srt(text: str) -> Transcript:
    segments = _parse_cues(text)
    if not segments and text.strip():
        raise TranscriptError("no SRT cues found (expected lines like '00:00:01,000 --> ...')")
    return Transcript(segments)


def parse_plain(text: str, duration_s: float | None = None) -> Transcript:
    clean = " ".join(text.split())
    if not clean:
        return Transcript([])
    return Transcript([Segment(0.0, duration_s if duration_s is not None else 0.0, clean)])


def parse_transcript(text: str, duration_s: float | None = None) -> Transcript:
    """Sniff the format from the content: WebVTT, SRT, or plain text."""
    stripped = text.lstrip("\ufeff").lstrip()
    if stripped.startswith("WEBVTT"):
        return parse_vtt(stripped)
    if "-->" in text and any(_CUE_TIMING.match(line) for line in text.splitlines()):
        return parse_srt(text)
    return parse_plain(text, duration_s)


@dataclass(frozen=True)
class FolderNames:
    """A folder's file names, read once for every media file in it: a folder of 100,000
    files looked up name by name is 100,000 set and index builds."""

    exact: frozenset[str]
    folded: dict[str, str]  # casefolded -> a name (several alike: the same one each time)

    @classmethod
    def of(cls, names: Iterable[str]) -> FolderNames:
        exact = frozenset(names)
        return cls(exact, {n.casefold(): n for n in sorted(exact, reverse=True)})

    @classmethod
    def read(cls, folder: Path) -> FolderNames:
        try:
            return cls.of(entry.name for entry in folder.iterdir())
        except OSError:
            return cls.of(())


def sidecar_of(media: Path, names: FolderNames | None = None) -> Path | None:
    """The transcript beside `media`: its name with `.vtt`, `.srt` or `.txt` (in that
    order), in any case (`Take 3.MP4` and `take 3.vtt`, as cameras and editors name
    them); the same case first, with any of the three. `names`: its folder's, where the
    caller has read them already."""
    names = names if names is not None else FolderNames.read(media.parent)
    wanted = [media.stem + suffix for suffix in SIDECAR_SUFFIXES]
    found = [w for w in wanted if w in names.exact]
    found += [n for w in wanted if (n := names.folded.get(w.casefold())) is not None]
    for name in found:
        if name != media.name and (media.parent / name).is_file():
            return media.parent / name
    return None


def read_transcript(path: str | Path, duration_s: float | None = None) -> Transcript:
    """Read a .vtt, .srt or .txt sidecar file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TranscriptError(f"cannot read transcript {path.name}: {exc}") from exc
    suffix = path.suffix.lower()
    if suffix == ".vtt":
        return parse_vtt(text)
    if suffix == ".srt":
        return parse_srt(text)
    return parse_transcript(text, duration_s)
