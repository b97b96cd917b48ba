"""Media fixtures for tests/model (imported by conftest.py): real files encoded by
the system ffmpeg from lavfi test sources, made once per session, small and short so
the whole set costs a few seconds."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from model.transcripts import Segment, Transcript

_FF = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y"]
# Picture and sound sources. The testsrc2 pattern moves, so frames differ; the tone
# is 440 Hz at amplitude 0.5 (RMS ≈ 0.354) so levels can be checked after decoding.
_VIDEO = "testsrc2=size={size}:rate={rate}:duration={d}"
_SINE = "0.5*sin(2*PI*440*t)"


def _tone(sr: int, d: float, channels: int = 1) -> str:
    """The 440 Hz tone; with channels=2 both channels carry it at full level."""
    return f"aevalsrc=exprs='{'|'.join([_SINE] * channels)}':s={sr}:d={d}"


_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def ffmpeg_make(*args: str) -> None:
    subprocess.run([*_FF, *args], check=True, timeout=60)


def lavfi_file(out: Path, video: str, audio: str | None, codecs: list[str]) -> Path:
    """Encode lavfi sources (a picture graph and/or a sound graph) into `out`."""
    inputs = ["-f", "lavfi", "-i", video]
    if audio is not None:
        inputs += ["-f", "lavfi", "-i", audio]
    ffmpeg_make(*inputs, *codecs, "-shortest", str(out))
    return out


def narrated_clip(out: Path, seconds: float, hue: int, freq: int) -> Path:
    """A small h264 + aac clip (128×72, 10 fps) with a tone: like a corpus clip."""
    return lavfi_file(
        out,
        f"testsrc2=size=128x72:rate=10:duration={seconds},hue=h={hue}",
        f"aevalsrc='0.5*sin(2*PI*{freq}*t)':s=16000:d={seconds}",
        [*_X264, "-c:a", "aac"],
    )


def _png_with_size(src: Path, out: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width × height (a decompression bomb's header)."""
    data = src.read_bytes()
    assert data[12:16] == b"IHDR"
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    out.write_bytes(data[:16] + bytes(ihdr) + crc + data[33:])
    return out


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name → path of every test file: good formats and bad inputs."""
    d = tmp_path_factory.mktemp("media")
    f: dict[str, Path] = {}
    v2 = _VIDEO.format(size="128x72", rate=25, d=2)
    # Video containers and codecs.
    f["mp4"] = lavfi_file(
        d / "clip.mp4",
        _VIDEO.format(size="160x90", rate=30, d=3),
        _tone(44100, 3, channels=2),
        [*_X264, "-c:a", "aac"],
    )
    f["webm"] = lavfi_file(
        d / "clip.webm", v2, _tone(48000, 2),
        ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"],
    )  # fmt: skip
    f["mkv"] = lavfi_file(d / "clip.mkv", v2, _tone(22050, 2), [*_X264, "-c:a", "libvorbis"])
    f["mov"] = lavfi_file(
        d / "clip.mov", _VIDEO.format(size="128x96", rate=15, d=2), _tone(16000, 2),
        ["-c:v", "mjpeg", "-q:v", "5", "-c:a", "pcm_s16le"],
    )  # fmt: skip
    f["avi"] = lavfi_file(
        d / "clip.avi", v2, _tone(44100, 2),
        ["-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame"],
    )  # fmt: skip
    f["silent_mp4"] = lavfi_file(
        d / "silent.mp4", _VIDEO.format(size="96x96", rate=10, d=2), None, _X264
    )
    f["anim_gif"] = lavfi_file(d / "anim.gif", _VIDEO.format(size="80x60", rate=10, d=1), None, [])
    # Audio.
    tone2 = _tone(44100, 2)
    f["wav"] = lavfi_file(d / "tone.wav", tone2, None, [])
    f["mp3"] = lavfi_file(d / "tone.mp3", tone2, None, ["-c:a", "libmp3lame"])
    f["flac"] = lavfi_file(d / "tone.flac", tone2, None, [])
    f["ogg"] = lavfi_file(d / "tone.ogg", tone2, None, ["-c:a", "libvorbis"])
    # Images (a wide one, so the short-side resize and centre crop matter).
    still = _VIDEO.format(size="120x80", rate=1, d=1)
    for ext in ("png", "jpg", "webp", "gif"):
        f[ext] = d / f"still.{ext}"
        ffmpeg_make("-f", "lavfi", "-i", still, "-frames:v", "1", str(f[ext]))
    # Timing probes: frame n of `ramp_video` has brightness ≈ 2n (30 fps, B-frames and
    # a 1 s GOP, so seeking and frame skipping are exercised); `ramp_audio` is a
    # lossless signal whose value at time t is t / 8.
    f["ramp_video"] = lavfi_file(
        d / "ramp.mp4",
        "color=black:size=64x48:rate=30:duration=4,format=gray,geq=lum='2*N'",
        None,
        ["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-bf", "3", "-crf", "10",
         "-pix_fmt", "yuv420p"],
    )  # fmt: skip
    f["ramp_audio"] = lavfi_file(d / "ramp.flac", "aevalsrc='t/8':s=16000:d=4", None, [])
    # A 40 s file, long enough for seek-based windows; brightness repeats every 4 s.
    f["long_mp4"] = lavfi_file(
        d / "long.mp4",
        "color=black:size=64x36:rate=10:duration=40,format=gray,geq=lum='6*mod(N,40)'",
        _tone(16000, 40),
        [*_X264, "-g", "20", "-c:a", "aac"],
    )
    # Odd geometry: rotated (display matrix) and anamorphic (2:1 pixels).
    source = lavfi_file(d / "rot_src.mp4", _VIDEO.format(size="160x90", rate=10, d=1), None, _X264)
    f["rotated"] = d / "rotated.mp4"
    ffmpeg_make("-i", str(source), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(f["rotated"]))
    f["anamorphic"] = lavfi_file(
        d / "anamorphic.mp4", _VIDEO.format(size="80x90", rate=10, d=1) + ",setsar=2", None, _X264
    )
    # Files with no extension: the type must come from the content.
    f["mp4_noext"] = d / "upload_without_extension"
    shutil.copy(f["mp4"], f["mp4_noext"])
    f["png_noext"] = d / "picture_without_extension"
    shutil.copy(f["png"], f["png_noext"])

    # Bad inputs.
    rnd = random.Random(1234)
    f["random_bytes"] = d / "random.mp4"
    f["random_bytes"].write_bytes(bytes(rnd.getrandbits(8) for _ in range(20_000)))
    f["empty"] = d / "empty.mp4"
    f["empty"].write_bytes(b"")
    f["text_as_mp4"] = d / "notes.mp4"
    f["text_as_mp4"].write_text("These are meeting notes, not a video.\n" * 40)
    f["vtt_as_mp4"] = d / "captions.mp4"
    f["vtt_as_mp4"].write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n")
    data = f["mp4"].read_bytes()
    f["truncated_mp4"] = d / "truncated.mp4"  # moov atom at the end: cut off
    f["truncated_mp4"].write_bytes(data[: len(data) // 2])
    faststart = d / "faststart.mp4"
    ffmpeg_make("-i", str(f["mp4"]), "-c", "copy", "-movflags", "+faststart", str(faststart))
    fs = faststart.read_bytes()
    f["truncated_faststart"] = d / "truncated_faststart.mp4"  # header intact, data cut
    f["truncated_faststart"].write_bytes(fs[: len(fs) // 2])
    f["huge_png"] = _png_with_size(f["png"], d / "huge.png", 12_000, 12_000)
    f["playlist"] = d / "playlist.m3u8"  # would make ffmpeg open another file
    f["playlist"].write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\n{f['mp4']}\n#EXT-X-ENDLIST\n"
    )
    return f


@pytest.fixture(scope="session")
def narrated_clips(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Transcript]]:
    """Six 4 s narrated clips in one folder, each with a WebVTT transcript of four
    1 s cues ("clip I says wordS at second S"); the last one has no .vtt."""
    d = tmp_path_factory.mktemp("narrated")
    out: list[tuple[Path, Transcript]] = []
    for i in range(6):
        path = narrated_clip(d / f"clip{i}.mp4", 4, hue=i * 60, freq=300 + 100 * i)
        transcript = Transcript(
            [Segment(float(s), s + 1.0, f"clip {i} says word{s} at second {s}") for s in range(4)]
        )
        if i < 5:
            path.with_suffix(".vtt").write_text(transcript.to_vtt())
        out.append((path, transcript))
    return out
