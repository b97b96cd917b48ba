"""Damaged files that ffmpeg decodes without an error are refused (completeness.py):
a sound track that decodes to nothing, a wav whose header declares more than the file
holds; and what must stay accepted: lengths nobody declared (a wav streamed to a pipe,
a VBR mp3 without a Xing header), a sound track shorter than its picture. The
truncated mp4 is in test_media.py (test_truncated_file_with_intact_header_is_refused)."""

from __future__ import annotations

import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from media_fixtures import ffmpeg_make, lavfi_file

from model.config import load_config
from model.media import (
    MediaInfo,
    MediaLimits,
    UnreadableMedia,
    decode_audio,
    decode_clip,
    decode_full,
    decode_image,
    decode_video,
    load_windows,
    read_media_info,
)
from model.media import media_info as media_info_module
from model.media.completeness import check_decoded
from model.media.media_info import parse_probe

TINY = load_config("tiny")


def with_data_size(wav: bytes, data_size: int, keep_s: float | None = None) -> bytes:
    """`wav` with its data chunk's size field set to `data_size` (RIFF size to match),
    keeping `keep_s` seconds of its samples (all by default)."""
    data = wav.index(b"data")
    byte_rate = struct.unpack("<I", wav[28:32])[0]
    header = bytearray(wav[: data + 8])
    header[4:8] = struct.pack("<I", min(data_size + data, 2**32 - 1))
    header[data + 4 : data + 8] = struct.pack("<I", data_size)
    samples = wav[data + 8 :]
    if keep_s is not None:
        samples = samples[: round(keep_s * byte_rate) // 4 * 4]
    return bytes(header) + samples


def test_a_sound_track_that_decodes_to_nothing_is_refused(
    media_files: dict[str, Path], tmp_path: Path
) -> None:
    # Every audio packet garbled, the container and pictures intact: it was stored with
    # its "sound" embedded from the silence the decoder pads in.
    path = tmp_path / "garbled_sound.mp4"
    ffmpeg_make("-i", str(media_files["mp4"]), "-c", "copy", "-bsf:a", "noise=amount=1", str(path))
    info = read_media_info(path)
    assert info.has_audio and info.audio_span_s == pytest.approx((0.0, 3.0), abs=0.05)
    message = r"the sound track cannot be decoded \(none of its 3\.0 s decoded\): \S"
    with pytest.raises(UnreadableMedia, match=message):
        load_windows(path, TINY, 2, info)
    with pytest.raises(UnreadableMedia, match="the sound track cannot be decoded"):
        decode_clip(path, fps=4, frames=8, size=32, sample_rate=16000, start_s=0.5, info=info)
    # The pictures alone are whole: asked for without the sound, they decode.
    assert decode_video(path, fps=4, frames=8, size=32, info=info).std() > 5


def test_a_wav_declaring_more_than_it_holds_is_refused(
    media_files: dict[str, Path], tmp_path: Path
) -> None:
    # ffprobe estimates such a file's length from the bytes present (1 s), so it was
    # stored as a 1 s sound; the header's length is read here.
    wav = media_files["wav"].read_bytes()  # 2 s at 44.1 kHz
    ten_hours = tmp_path / "ten_hours.wav"
    ten_hours.write_bytes(with_data_size(wav, 10 * 3600 * 44100 * 2, keep_s=1.0))
    pattern = r"looks truncated \(its header declares 36000\.0 s of sound; the file holds 1\.0 s\)"
    with pytest.raises(UnreadableMedia, match=pattern):
        read_media_info(ten_hours)
    # A download cut short: 2 s declared, 1.2 s there (0.8 s missing, over the 0.5 s
    # allowed); 1.7 s there is within it.
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav[: len(wav) - round(0.8 * 44100 * 2)])
    with pytest.raises(UnreadableMedia, match=r"declares 2\.0 s of sound; the file holds 1\.2 s"):
        read_media_info(cut)
    cut.write_bytes(wav[: len(wav) - round(0.3 * 44100 * 2)])
    assert read_media_info(cut).duration_s == pytest.approx(1.7, abs=0.01)


def streamed_wav(source: Path, path: Path) -> Path:
    """`source` as ffmpeg writes a WAV to a pipe (RIFF and data sizes 0xFFFFFFFF)."""
    with path.open("wb") as out:
        subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(source), "-f", "wav", "pipe:"],
            stdout=out, check=True, timeout=60,
        )  # fmt: skip
    return path


def test_a_wav_without_a_declared_length_is_accepted(
    media_files: dict[str, Path], tmp_path: Path
) -> None:
    # What a recorder that cannot seek back writes: ffmpeg to a pipe leaves the RIFF and
    # data sizes at 0xFFFFFFFF; others leave the data size 0.
    streamed = streamed_wav(media_files["wav"], tmp_path / "streamed.wav")
    data = streamed.read_bytes()
    assert data[4:8] == b"\xff\xff\xff\xff" and data[data.index(b"data") + 4 :][:4] == data[4:8]
    zero = tmp_path / "zero.wav"
    zero.write_bytes(with_data_size(media_files["wav"].read_bytes(), 0))
    for path in (streamed, zero):
        info = read_media_info(path)
        assert decode_audio(path, sample_rate=16000, info=info).size == pytest.approx(32000, abs=2)


def test_a_streamed_wav_is_not_listed_packet_by_packet(
    media_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PCM's length from its bit rate is exact: listing the packets of a two-hour WAV
    written to a pipe took 16.5 s of the upload's probe (0.35 s without)."""
    streamed = streamed_wav(media_files["wav"], tmp_path / "streamed.wav")

    def listed(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the packets of a PCM sound were listed")

    monkeypatch.setattr(media_info_module, "_probe_again", listed)
    assert read_media_info(streamed).duration_s == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize("quiet_first", [True, False], ids=["guessed-too-long", "too-short"])
def test_a_length_guessed_from_the_bit_rate_is_measured(tmp_path: Path, quiet_first: bool) -> None:
    """A VBR mp3 without a Xing header: ffprobe guesses its length from the first frame's
    bit rate, several times too long when it starts quiet (windows and moments were
    placed in the padding past its end, and that length was stored), too short when it
    starts loud (its decode passed the output cap: 413 for a small, whole file). Its
    packets give the real length; it is still no declaration to hold the decode to."""
    path = tmp_path / "vbr.mp3"
    quiet, loud = "anullsrc=r=22050:d=1", "anoisesrc=r=22050:d=1:a=0.9"
    rest = "sine=r=22050:d=20" if quiet_first else "anullsrc=r=22050:d=20"
    ffmpeg_make(
        "-f", "lavfi", "-i", quiet if quiet_first else loud, "-f", "lavfi", "-i", rest,
        "-filter_complex", "[0][1]concat=n=2:v=0:a=1",
        "-c:a", "libmp3lame", "-q:a", "9" if not quiet_first else "0", "-write_xing", "0",
        str(path),
    )  # fmt: skip
    info = read_media_info(path)
    assert info.duration_s == pytest.approx(21.0, abs=0.1)
    assert info.declared_s is None and info.audio_span_s is None
    audio = decode_audio(path, sample_rate=16000, info=info)
    assert len(audio) / 16000 == pytest.approx(21.0, abs=0.1)
    windows = load_windows(path, TINY, None, info)
    assert windows.starts_s.max() == pytest.approx(19.0, abs=0.1)  # the last full window


def test_a_webm_that_declares_no_length_is_measured(tmp_path: Path) -> None:
    """What a browser's MediaRecorder writes (WebM streamed, no duration in its header):
    it had one window at 0 s, no moments and no stored duration."""
    path = tmp_path / "recorded.webm"
    with path.open("wb") as out:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
             "testsrc2=size=64x48:rate=10:duration=30", "-f", "lavfi", "-i", "sine=d=30",
             "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus",
             "-f", "webm", "pipe:1"],
            stdout=out, check=True, timeout=120,
        )  # fmt: skip
    info = read_media_info(path)
    assert info.duration_s == pytest.approx(30.0, abs=0.1)
    windows = load_windows(path, TINY, None, info)
    assert len(windows) == 10 and windows.starts_s.max() == pytest.approx(28.0, abs=0.1)


def test_a_sound_track_shorter_than_its_picture_is_whole(tmp_path: Path) -> None:
    # Matroska declares each stream's length in a tag only: 2 s of picture, 1 s of sound.
    path = lavfi_file(
        tmp_path / "short_sound.mkv",
        "testsrc2=size=64x48:rate=10:duration=2",
        "sine=d=1:sample_rate=16000",
        ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libvorbis"],
    )
    info = read_media_info(path)
    assert info.audio_span_s is not None and info.audio_span_s[1] == pytest.approx(1.0, abs=0.05)
    windows = load_windows(path, TINY, 2, info)
    assert windows.audio is not None and windows.video is not None


@pytest.mark.parametrize(
    ("declared", "decoded", "refused"),
    [(3.0, 2.6, False), (3.0, 2.4, True), (40.0, 36.5, False), (40.0, 35.5, True)],
)
def test_the_tolerance_is_half_a_second_or_a_tenth(
    declared: float, decoded: float, refused: bool
) -> None:
    probe = {
        "format": {"format_name": "wav", "duration": str(declared)},
        "streams": [{"index": 0, "codec_type": "audio", "codec_name": "pcm_s16le",
                     "duration": str(declared)}],
    }  # fmt: skip
    info = parse_probe(probe)
    assert info.declared_s == declared and info.audio_span_s == (0.0, declared)
    check = lambda: check_decoded(  # noqa: E731
        info, name="f.wav", start_s=0.0, span_s=None, video_s=None, audio_s=decoded, reason=""
    )
    if refused:
        with pytest.raises(UnreadableMedia, match=f"decoded {decoded:.1f} of {declared:.1f} s"):
            check()
    else:
        check()


def test_matroska_files_whose_streams_do_not_start_at_zero_are_whole(tmp_path: Path) -> None:
    """ffmpeg's Matroska muxer writes a stream's end time in its DURATION tag, not its
    length: a sound track that starts 3 s late, and a remux whose timestamps start at 3 s,
    were refused as truncated ("decoded 8.0 of 11.0 s")."""
    late = tmp_path / "late_sound.mkv"
    ffmpeg_make(
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=8", "-itsoffset", "3",
        "-f", "lavfi", "-i", "sine=d=5:sample_rate=16000", "-map", "0", "-map", "1",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libopus", str(late),
    )  # fmt: skip
    shifted = tmp_path / "shifted.mkv"
    ffmpeg_make("-i", str(late), "-c", "copy", "-output_ts_offset", "3", str(shifted))
    for path in (late, shifted):
        info = read_media_info(path)
        assert info.duration_s == pytest.approx(8.0, abs=0.1), path.name
        assert info.audio_span_s is not None
        assert info.audio_span_s == pytest.approx((3.0, 8.0), abs=0.1), path.name
        for strategy in ("single", "seek"):
            windows = load_windows(path, TINY, 4, info, strategy=strategy)
            assert windows.audio is not None and windows.video is not None


@pytest.mark.parametrize("suffix", ["mkv", "ts"])
def test_a_sound_starting_past_the_probes_reach_is_placed_where_it_starts(
    tmp_path: Path, suffix: str
) -> None:
    """A sound track starting 20 s late, past what ffprobe reads to describe a file:
    Matroska's and MPEG-TS's demuxers then said it starts with the file, so a window
    seeked before 20 s expected sound and the file was refused ("the sound track cannot
    be decoded (none of its 2.0 s decoded)"); one pass over it worked."""
    path = tmp_path / f"sound_20s_late.{suffix}"
    ffmpeg_make(
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=50", "-itsoffset", "20",
        "-f", "lavfi", "-i", "sine=d=30:sample_rate=16000", "-map", "0", "-map", "1",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "libopus" if suffix == "mkv" else "aac", str(path),
    )  # fmt: skip
    info = read_media_info(path)
    windows = load_windows(path, TINY, 5, info, strategy="seek")
    assert info.audio_span_s is not None
    assert info.audio_span_s[0] == pytest.approx(20.0, abs=0.2)
    assert info.duration_s == pytest.approx(50.0, abs=0.2)
    assert windows.audio is not None and windows.video is not None
    before = windows.starts_s < 19.0
    assert before.any() and (~before).any()
    assert np.abs(windows.audio[before]).max() == 0  # silence before it starts
    assert np.abs(windows.audio[windows.starts_s > 21.0]).max() > 0.1


def test_a_subtitle_cue_long_after_the_clip_is_not_its_length(tmp_path: Path) -> None:
    """The file's duration counts every stream: a 5 s clip with a subtitle cue at 1:30:00
    was 5,401 s long (refused as too long; a nearer cue stretched its windows)."""
    subs = tmp_path / "subs.srt"
    subs.write_text(
        "1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n01:30:00,000 --> 01:30:01,000\nbye\n"
    )
    path = tmp_path / "subs.mkv"
    ffmpeg_make(
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=5", "-f", "lavfi", "-i",
        "sine=d=5:sample_rate=16000", "-i", str(subs), "-map", "0", "-map", "1", "-map", "2",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libopus", "-c:s", "srt", str(path),
    )  # fmt: skip
    info = read_media_info(path)
    assert info.duration_s == pytest.approx(5.0, abs=0.1)
    assert load_windows(path, TINY, None, info).starts_s.max() <= 3.1  # 5 s less a 2 s window


@pytest.mark.parametrize("channels", [3, 10, 32])
def test_sound_of_many_channels_without_a_layout_is_their_average(
    tmp_path: Path, channels: int
) -> None:
    """A field recorder's poly WAV names no channel layout: with 10 or 32 channels
    ffmpeg's resampler could not tell how to mix it down ("Rematrix is needed ... not
    enough information"): 422 for a file any player opens. Channel c holds a constant
    (c + 1) / 100: the mean of them is what comes out."""
    path = tmp_path / f"poly{channels}.wav"
    levels = np.array([(c + 1) / 100 for c in range(channels)], dtype=np.float64)
    frames = np.tile(np.round(levels * 32767).astype("<i2"), (16000, 1))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(frames.tobytes())
    info = read_media_info(path)
    assert info.channels == channels and info.channel_layout is None
    audio = decode_audio(path, sample_rate=16000, info=info)
    assert len(audio) == 16000
    assert float(np.median(audio)) == pytest.approx(levels.mean(), abs=0.002)


@pytest.mark.parametrize("offset", [0, 5], ids=["sound-ends-early", "sound-starts-late"])
def test_an_undeclared_length_is_the_longest_used_streams(tmp_path: Path, offset: int) -> None:
    """8 s of picture with 3 s of sound, streamed (no length declared): measured from
    the sound alone, the file was 3 s long (its picture cut at 3 s), and with the sound
    at 5-8 s the decode of its padded start passed the output cap (413)."""
    path = tmp_path / "recorded.webm"
    with path.open("wb") as out:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
             "testsrc2=size=64x48:rate=10:duration=8", "-itsoffset", str(offset), "-f",
             "lavfi", "-i", "sine=d=3", "-map", "0", "-map", "1", "-c:v", "libvpx",
             "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", "-f", "webm",
             "pipe:1"],
            stdout=out, check=True, timeout=120,
        )  # fmt: skip
    info = read_media_info(path)
    assert info.duration_s == pytest.approx(8.0, abs=0.1)
    windows = load_windows(path, TINY, 4, info)
    assert windows.video is not None and windows.audio is not None
    np.testing.assert_allclose(windows.starts_s, [0.0, 2.0, 4.0, 6.0], atol=0.1)


def test_a_sound_track_with_a_one_frame_cover_track_is_a_sound(tmp_path: Path) -> None:
    """A podcast mp4 whose cover is a real one-frame MJPEG track (not flagged as an
    attached picture) became an image item: the sound was never embedded or
    transcribed."""
    cover = tmp_path / "cover.jpg"
    ffmpeg_make("-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", str(cover))
    path = tmp_path / "podcast.mp4"
    ffmpeg_make(
        "-f", "lavfi", "-i", "sine=d=3", "-i", str(cover), "-map", "0", "-map", "1",
        "-c:a", "aac", "-c:v", "mjpeg", str(path),
    )  # fmt: skip
    info = read_media_info(path)
    assert info.kind == "audio" and info.modalities == ("audio",)
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    windows = load_windows(path, TINY, None, info)
    assert windows.video is None and windows.audio is not None


def test_a_window_after_the_picture_ends_holds_its_last_frame_when_seeking(
    tmp_path: Path,
) -> None:
    """Seeking (long files: search by an example, ingestion without moments) to a window
    where no picture begins (the picture track ended at 5 s of 70) was a 422 ("no video
    frames could be decoded at 13.11 s"); one pass over the file held the last frame."""
    path = tmp_path / "early_picture_end.mp4"
    ffmpeg_make(
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=5", "-f", "lavfi", "-i",
        "sine=d=70", "-map", "0", "-map", "1", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", str(path),
    )  # fmt: skip
    info = read_media_info(path)
    seek = load_windows(path, TINY, 5, info, strategy="seek")
    single = load_windows(path, TINY, 5, info, strategy="single")
    assert seek.video is not None and single.video is not None
    assert seek.video.shape == single.video.shape == (5, 8, 64, 64, 3)
    # Every window after 5 s shows the last picture, held, as the one pass has it.
    later = seek.video[1:].astype(float)
    assert np.abs(later - single.video[1:].astype(float)).mean() < 6
    assert np.abs(later - later[:1, :1]).max() == 0  # one picture, held


def test_a_recording_whose_camera_stopped_early_holds_its_last_frame_when_seeking(
    tmp_path: Path,
) -> None:
    """A MediaRecorder WebM (no length declared, measured from packets) whose picture
    stops at 10 s of 70: a seeked window more than 30 s after it was a 422, since the
    picture's end was unknown; the measured end is where its last frame is looked for."""
    path = tmp_path / "camera_stopped.webm"
    with path.open("wb") as out:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
             "testsrc2=size=64x48:rate=10:duration=10", "-f", "lavfi", "-i", "sine=d=70",
             "-map", "0", "-map", "1", "-c:v", "libvpx", "-deadline", "realtime",
             "-cpu-used", "8", "-c:a", "libopus", "-f", "webm", "pipe:1"],
            stdout=out, check=True, timeout=120,
        )  # fmt: skip
    info = read_media_info(path)
    assert info.video_span_s is None and info.duration_s == pytest.approx(70.0, abs=0.1)
    seek = load_windows(path, TINY, 3, info, strategy="seek")
    single = load_windows(path, TINY, 3, info, strategy="single")
    assert seek.video is not None and single.video is not None
    assert seek.starts_s.max() > 40.0  # a window well past the lookback from its start
    later = seek.video[1:].astype(float)
    assert np.abs(later - single.video[1:].astype(float)).mean() < 6
    assert getattr(info, "measured_video_end_s", None) == pytest.approx(10.0, abs=0.2)


def test_a_thumbnail_track_listed_first_does_not_hide_the_video(tmp_path: Path) -> None:
    """An mp4 whose first picture track is a one-frame MJPEG thumbnail (not flagged as
    an attached picture) beside the real H.264 video: it was taken for the picture and,
    being a still beside a sound, the file became a sound item."""
    thumb = tmp_path / "thumb.jpg"
    ffmpeg_make("-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", str(thumb))
    path = tmp_path / "with_thumbnail.mp4"
    ffmpeg_make(
        "-i", str(thumb), "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=4",
        "-f", "lavfi", "-i", "sine=d=4", "-map", "0", "-map", "1", "-map", "2",
        "-c:v:0", "mjpeg", "-c:v:1", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", str(path),
    )  # fmt: skip
    info = read_media_info(path)
    assert info.kind == "video" and info.video_codec == "h264" and info.video_stream == 1
    assert info.modalities == ("video", "audio") and (info.width, info.height) == (160, 90)


def test_a_portrait_photo_stored_sideways_with_exif_orientation_is_upright(
    tmp_path: Path,
) -> None:
    """A phone's portrait photo: pixels stored landscape (160×90), EXIF orientation 6.
    ffmpeg's decoder turns the picture, but the probe reported the stored size, so the
    upright 90×160 picture was scaled as if 160×90 (squeezed) and stored as 160×90."""
    from PIL import Image

    upright = np.zeros((160, 90, 3), np.uint8)
    upright[:40] = (255, 0, 0)  # a red band at the top of the picture as seen
    stored = np.rot90(upright, k=1)  # orientation 6: turn 90° clockwise to display
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "phone.jpg", exif=exif)
    Image.fromarray(upright).save(tmp_path / "upright.jpg")
    info = read_media_info(tmp_path / "phone.jpg")
    assert (info.width, info.height) == (90, 160)
    turned = decode_image(tmp_path / "phone.jpg", size=64, info=info).astype(float)
    reference = decode_image(tmp_path / "upright.jpg", size=64).astype(float)
    assert np.abs(turned - reference).mean() < 4


@pytest.mark.parametrize("orientation", [None, 1, 3, 6, 8])
def test_only_a_photo_its_exif_turns_a_quarter_is_decoded_to_see_its_shown_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orientation: int | None
) -> None:
    """Seeing the size a JPEG is shown at decodes its first frame: 0.3 s more than the
    probe for a 40-megapixel photo, for every photo. Its EXIF header says whether that
    can differ from the stored size (a quarter turn, orientations 5-8)."""
    from PIL import Image

    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((90, 160, 3), np.uint8)).save(path, exif=exif)
    decoded: list[Path] = []
    upright = media_info_module._upright

    def counted(path: Path, info: MediaInfo, limits: MediaLimits) -> MediaInfo:
        decoded.append(path)
        return upright(path, info, limits)

    monkeypatch.setattr(media_info_module, "_upright", counted)
    info = read_media_info(path)
    turned = orientation in (6, 8)
    assert len(decoded) == turned
    assert (info.width, info.height) == ((90, 160) if turned else (160, 90))


def test_mp3s_joined_end_to_end_are_read_whole(tmp_path: Path) -> None:
    """`cat a.mp3 b.mp3`: the first file's Xing header declares its own length only, and
    ffmpeg flags the join only past 5% of the bytes. A 400 s and a 3 s mp3 joined (0.7%
    more bytes) were refused as too large (the decode ran past the declared length's
    output cap), and their stored length was the first's."""
    first, second, joined = tmp_path / "a.mp3", tmp_path / "b.mp3", tmp_path / "joined.mp3"
    for path, source in ((first, "sine=r=22050:d=400"), (second, "sine=r=22050:f=880:d=3")):
        ffmpeg_make("-f", "lavfi", "-i", source, "-c:a", "libmp3lame", "-q:a", "9", str(path))
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    info = read_media_info(joined)
    assert info.duration_s == pytest.approx(403.0, abs=0.2)
    assert info.declared_s is None  # no declaration to hold the decode to
    audio = decode_full(joined, fps=None, size=None, sample_rate=16000, info=info).audio
    assert audio is not None and len(audio) / 16000 == pytest.approx(403.0, abs=0.2)
    windows = load_windows(joined, TINY, None, info)
    assert windows.starts_s.max() == pytest.approx(401.0, abs=0.2)  # the last full window
    # One mp3 alone keeps what its header declares (and so its completeness check).
    assert read_media_info(first).declared_s == pytest.approx(400.0, abs=0.1)
