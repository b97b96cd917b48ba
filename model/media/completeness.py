"""Is the file whole? What its container declares, compared with what it holds and
what decodes.

ffmpeg decodes a damaged file as far as it can and stops without an error: a
faststart mp4 cut in its data decodes to its first half, a sound track whose packets
are all garbled decodes to nothing, and the decoder pads both to the asked length
(last frame held, silence). Without these checks such a file becomes an item whose
embeddings describe padding. A file is refused (UnreadableMedia) when:

- a stream decodes shorter than its container declares, by more than
  `allowed_shortfall`: the whole file (every stream short) "looks truncated"; one
  stream short while another is whole "cannot be decoded";
- a wav's data chunk declares more bytes than the file holds (ffprobe hides this: it
  then estimates the length from the bytes present).

Only declared lengths count: where ffprobe guessed the length from the bit rate (a
VBR mp3 without a Xing header, a raw ADTS stream, a webm from a browser's recorder)
the guess can be several times too long (an 8 s VBR mp3 probes as 31.8 s) and nothing
is compared.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from model.media.errors import UnreadableMedia

if TYPE_CHECKING:
    from model.media.media_info import MediaInfo

# A stream may decode this much shorter than declared: max(0.5 s, 10 %). Valid files
# decode at most 0.04 s short (encoder delay and padding: mp3 2.000 of 2.038 s, opus
# 2.300 of 2.307 s, webm/mkv 2.000 of 2.012 s; measured on every format in
# tests/model/media_fixtures.py at 4/10/25 fps and 16/44.1/48 kHz); a file cut in half
# or a garbled track misses seconds.
TOLERANCE_S = 0.5
TOLERANCE_SHARE = 0.10
# Within this of its declared end a stream counts as whole (the 0.04 s of padding
# differences measured, and one lost frame at the model's 4 fps or more): one stream
# short while the others are not is a damaged track, every stream ending early a
# truncated file.
_PADDING_S = 0.25

# wav sizes written by recorders that cannot seek back to fill them in (ffmpeg to a
# pipe writes 0xFFFFFFFF; others leave 0): "length unknown", not a declared length.
_WAV_PLACEHOLDERS = {0, 0xFFFFFFFF}
_WAV_MAX_CHUNKS = 64  # chunks walked before the data chunk (fmt, LIST, bext, ...)


def allowed_shortfall(expected_s: float) -> float:
    return max(TOLERANCE_S, TOLERANCE_SHARE * expected_s)


def truncated(name: str, held_s: float, declared_s: float, start_s: float = 0.0) -> UnreadableMedia:
    where = f" from {start_s:.1f} s" if start_s >= 0.05 else ""
    return UnreadableMedia(
        f"'{name}': the file ends before its media does: it looks truncated "
        f"(decoded {held_s:.1f} of {declared_s:.1f} s{where})",
        detail={"decoded_s": round(held_s, 3), "declared_s": round(declared_s, 3)},
    )


def check_decoded(
    info: MediaInfo,
    *,
    name: str,
    start_s: float,
    span_s: float | None,
    video_s: float | None,
    audio_s: float | None,
    reason: str,
) -> None:
    """Raise UnreadableMedia when what decoded from `start_s` (for `span_s`, None: to
    the end) falls short of what the container declares there. `video_s` / `audio_s`:
    seconds decoded of each stream, None where it was not decoded; a picture stream
    that decoded nothing is left to the caller (it has its own message). `reason`:
    ffmpeg's own words, if any."""
    if video_s == 0:
        return
    end_s = math.inf if span_s is None else start_s + span_s
    decoded = {"picture": video_s, "sound": audio_s}
    spans = {"picture": info.video_span_s, "sound": info.audio_span_s}
    expected = {
        kind: _overlap(start_s, end_s, *spans[kind])
        for kind, got in decoded.items()
        if got is not None and spans[kind] is not None
    }
    short = {
        kind: expected[kind]
        for kind in expected
        if decoded[kind] < expected[kind] - allowed_shortfall(expected[kind])  # type: ignore[operator]
    }
    got = [s for s in decoded.values() if s is not None]
    # Every stream of the file decoded: the latest of them must reach the declared end.
    every_stream = (video_s is not None or not info.has_video) and (
        audio_s is not None or not info.has_audio
    )
    if every_stream and info.declared_s is not None and got:
        whole = _overlap(start_s, end_s, 0.0, info.declared_s)
        if max(got) < whole - allowed_shortfall(whole):
            raise truncated(name, max(got), whole, start_s)
    if not short:
        return
    # One stream short and every other one ending early too: the bytes ran out.
    if all(decoded[k] < expected[k] - _PADDING_S for k in expected):  # type: ignore[operator]
        raise truncated(name, max(got), max(expected.values()), start_s)
    for kind, wanted in short.items():
        held = decoded[kind] or 0.0
        part = "none" if held == 0 else f"{held:.1f} s"
        why = f": {reason}" if reason else ""
        raise UnreadableMedia(
            f"'{name}': the {kind} track cannot be decoded ({part} of its {wanted:.1f} s "
            f"decoded){why}",
            detail={f"{kind}_decoded_s": round(held, 3), f"{kind}_declared_s": round(wanted, 3)},
        )


def check_wav_header(path: Path) -> None:
    """Refuse a wav whose data chunk declares more sound than the file holds (beyond
    the tolerance). Streaming placeholders (RIFF or data size 0 / 0xFFFFFFFF) declare
    nothing and pass; so do RF64 files (their sizes live elsewhere) and anything this
    walk does not recognise (ffmpeg has read it already)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        if struct.unpack("<I", head[4:8])[0] in _WAV_PLACEHOLDERS:
            return
        byte_rate = 0
        offset = 12
        for _ in range(_WAV_MAX_CHUNKS):
            f.seek(offset)
            chunk = f.read(20)  # id, size; for fmt: format, channels, rate, byte rate
            if len(chunk) < 8:
                return
            kind, length = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
            if kind == b"fmt " and len(chunk) == 20:
                byte_rate = struct.unpack("<I", chunk[16:20])[0]
            if kind == b"data":
                break
            offset += 8 + length + (length & 1)  # chunks are padded to even sizes
        else:
            return
    if length in _WAV_PLACEHOLDERS or byte_rate <= 0:
        return
    held = max(0, size - offset - 8)
    if length <= held:
        return
    declared_s, held_s = length / byte_rate, held / byte_rate
    if held_s < declared_s - allowed_shortfall(declared_s):
        raise UnreadableMedia(
            f"'{path.name}': the file ends before its media does: it looks truncated "
            f"(its header declares {declared_s:.1f} s of sound; the file holds {held_s:.1f} s)",
            detail={"held_s": round(held_s, 3), "declared_s": round(declared_s, 3)},
        )


def _overlap(start: float, end: float, begin: float, finish: float) -> float:
    return max(0.0, min(end, finish) - max(start, begin))
