"""model.media on real files encoded by ffmpeg (fixtures in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import load_config
from model.media import (
    DecodeTimeout,
    MediaError,
    MediaLimits,
    MediaTooLong,
    NoUsableStream,
    OutputTooLarge,
    TooManyPixels,
    UnreadableMedia,
    UnsupportedFormat,
    VideoAugment,
    augment_clip,
    decode_audio,
    decode_image,
    decode_video,
    load_windows,
    read_media_info,
    window_starts,
)
from model.media.decode import scaled_size
from model.media.process import OutputSpec, output_target, run, summarise_stderr

TINY = load_config("tiny")
TONE_RMS = 0.5 / np.sqrt(2)  # the fixtures' 440 Hz tone at amplitude 0.5

# name → (kind, has_audio, approximate duration or None, (width, height) or None)
GOOD = {
    "mp4": ("video", True, 3.0, (160, 90)),
    "webm": ("video", True, 2.0, (128, 72)),
    "mkv": ("video", True, 2.0, (128, 72)),
    "mov": ("video", True, 2.0, (128, 96)),
    "avi": ("video", True, 2.0, (128, 72)),
    "silent_mp4": ("video", False, 2.0, (96, 96)),
    "anim_gif": ("video", False, 1.0, (80, 60)),
    "mp4_noext": ("video", True, 3.0, (160, 90)),
    "wav": ("audio", True, 2.0, None),
    "mp3": ("audio", True, 2.0, None),
    "flac": ("audio", True, 2.0, None),
    "ogg": ("audio", True, 2.0, None),
    "png": ("image", False, None, (120, 80)),
    "jpg": ("image", False, None, (120, 80)),
    "webp": ("image", False, None, (120, 80)),
    "gif": ("image", False, None, (120, 80)),
    "png_noext": ("image", False, None, (120, 80)),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_probe_finds_the_real_type(media_files: dict[str, Path], name: str) -> None:
    kind, has_audio, duration, size = GOOD[name]
    info = read_media_info(media_files[name])
    assert info.kind == kind
    assert info.has_audio == has_audio
    assert info.has_video == (kind == "video")
    if duration is None:
        assert info.duration_s is None
    else:
        assert info.duration_s == pytest.approx(duration, abs=0.15)
    assert (info.width, info.height) == (size or (None, None))
    assert info.size_bytes == media_files[name].stat().st_size
    if kind == "video":
        assert info.fps and info.fps > 0
        assert info.video_codec
    expected = {"image": ("image",), "audio": ("audio",)}.get(
        kind, ("video", "audio") if has_audio else ("video",)
    )
    assert info.modalities == expected


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_format_decodes_to_model_inputs(media_files: dict[str, Path], name: str) -> None:
    kind, has_audio, _, _ = GOOD[name]
    inputs = load_windows(media_files[name], TINY)
    v, crop = TINY.video, TINY.video.crop_size
    if kind == "image":
        assert inputs.audio is None
        assert inputs.video is not None  # the picture, held for a whole clip
        assert inputs.video.shape == (1, v.frames, crop, crop, 3)
        assert inputs.video.dtype == np.uint8
        assert float(inputs.video[0, 0].std()) > 0.05 * 255  # a picture, not a blank
        return
    n = len(inputs.starts_s)
    if kind == "video":
        assert inputs.video is not None
        assert inputs.video.shape == (n, v.frames, crop, crop, 3)
        assert inputs.video.dtype == np.uint8
        first = inputs.video[0]
        # testsrc2 moves: the first and the fourth sampled frame differ.
        assert not np.array_equal(first[0], first[3])
    else:
        assert inputs.video is None
    if has_audio:
        assert inputs.audio is not None
        assert inputs.audio.shape == (n, TINY.audio_samples)
        assert inputs.audio.dtype == np.float32
        assert float(np.abs(inputs.audio).max()) <= 1.0
        # The first second of the tone is there at the right level, after resampling
        # to 16 kHz and down-mixing to mono (stereo mp4 too).
        rms = float(np.sqrt(np.mean(inputs.audio[0, 2000 : TINY.audio.sample_rate] ** 2)))
        assert rms == pytest.approx(TONE_RMS, rel=0.15)
    else:
        assert inputs.audio is None


def test_image_is_short_side_resized_and_centre_cropped(media_files: dict[str, Path]) -> None:
    info = read_media_info(media_files["png"])
    full = decode_image(media_files["png"], size=80, info=info)  # 120×80, centre 80×80
    wide = decode_image(media_files["png"], size=160, info=info)  # ×2, centre 160×160
    small = decode_image(media_files["png"], size=40, info=info)  # ×0.5
    assert full.shape == (80, 80, 3) and full.dtype == np.uint8
    assert wide.shape == (160, 160, 3) and small.shape == (40, 40, 3)

    # The same picture at three scales: down-sampling each to 40×40 agrees.
    def pool(img: np.ndarray, k: int) -> np.ndarray:
        h, w, _ = img.shape
        return img.reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3))

    assert np.abs(pool(full, 2) - small.astype(float)).mean() < 8
    assert np.abs(pool(wide, 4) - small.astype(float)).mean() < 10
    # Centre crop: the lossless frame's middle 80 columns, not its left edge.
    clip = decode_video(media_files["png"], fps=4, frames=3, size=80, info=info)
    assert clip.shape == (3, 80, 80, 3)
    assert np.array_equal(clip[0], clip[2]) and np.array_equal(clip[0], full)


def test_frames_are_sampled_at_the_model_rate_from_the_start(media_files: dict[str, Path]) -> None:
    # Frame n of the ramp (30 fps) has brightness ≈ 2n. Sampled frame k must be the
    # frame on screen at start + k / 4 s: frame floor(30 t), up to 3 frames earlier
    # when the decoder skips frames nothing refers to, at most 1 later (a seek between
    # two frames starts at the next one). From 1.5 s the seek lands mid-GOP and must
    # still be frame-accurate; from 1.51 s it falls between frames.
    for start in (0.0, 1.5, 1.51):
        frames = decode_video(media_files["ramp_video"], fps=4, frames=8, size=32, start_s=start)
        levels = frames.reshape(8, -1).mean(axis=1)
        on_screen = np.minimum(np.floor(30 * (start + np.arange(8) / 4) + 1e-6), 119)
        assert np.all(levels <= 2 * (on_screen + 1) + 3), (start, levels, on_screen)
        assert np.all(levels >= 2 * (on_screen - 3) - 3), (start, levels, on_screen)


def test_audio_is_resampled_mono_and_aligned(media_files: dict[str, Path]) -> None:
    ramp = media_files["ramp_audio"]  # value t / 8
    audio = decode_audio(ramp, sample_rate=16000, start_s=1.0, duration_s=1.0)
    assert audio.shape == (16000,) and audio.dtype == np.float32
    assert audio[100] == pytest.approx((1.0 + 100 / 16000) / 8, abs=0.002)
    assert audio[-100] == pytest.approx((2.0 - 100 / 16000) / 8, abs=0.002)
    slow = decode_audio(ramp, sample_rate=8000, start_s=2.0, duration_s=0.5)
    assert slow.shape == (4000,)
    assert float(slow[2000]) == pytest.approx(2.25 / 8, abs=0.003)
    whole = decode_audio(media_files["mp4"], sample_rate=16000)
    assert len(whole) == pytest.approx(3 * 16000, abs=1200)
    padded = decode_audio(media_files["wav"], sample_rate=16000, duration_s=3.0)
    assert padded.shape == (48000,)
    assert np.all(padded[33000:] == 0.0)  # silence after the 2 s file ends


def test_windows_are_uniform_and_seeking_matches_one_pass(media_files: dict[str, Path]) -> None:
    path = media_files["long_mp4"]  # 40 s, brightness 6·(n mod 40) at 10 fps
    seek = load_windows(path, TINY, 5)  # long file, few windows: seeks
    single = load_windows(path, TINY, 5, strategy="single")
    np.testing.assert_allclose(seek.starts_s, [0.0, 9.5, 19.0, 28.5, 38.0])
    assert seek.video is not None and single.video is not None
    assert seek.audio is not None and single.audio is not None
    assert seek.video.shape == single.video.shape == (5, 8, 64, 64, 3)
    assert seek.audio.shape == single.audio.shape == (5, TINY.audio_samples)
    for windows in (seek, single):
        first = windows.video[:, 0].reshape(5, -1).mean(axis=1)
        expected = [6 * ((10 * s) % 40) for s in windows.starts_s]
        assert np.abs(first - expected).max() <= 14, first
        rms = np.sqrt((windows.audio[:, 2000:] ** 2).mean(axis=1))
        np.testing.assert_allclose(rms, TONE_RMS, rtol=0.15)
    diff = np.abs(seek.video.astype(float) - single.video.astype(float)).mean()
    assert diff < 6


def test_a_sound_track_that_starts_late_is_decoded_in_its_place(tmp_path: Path) -> None:
    """A tone from 3 s to 5 s of a 6 s video (its sound track starts at 3 s): it was
    decoded from 0 s, so every window heard the sound of 3 s later. Silence first now,
    in one pass and seeking alike."""
    path = tmp_path / "late.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         "testsrc=size=96x96:rate=10:duration=6", "-itsoffset", "3", "-f", "lavfi", "-i",
         "sine=frequency=440:duration=2", "-map", "0", "-map", "1", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    for strategy in ("single", "seek"):
        windows = load_windows(path, TINY, 3, strategy=strategy)  # at 0, 2 and 4 s
        assert windows.audio is not None
        np.testing.assert_allclose(windows.starts_s, [0.0, 2.0, 4.0])
        rms = np.sqrt((windows.audio**2).mean(axis=1))
        half = 0.125 / np.sqrt(2) * np.sqrt(0.5)  # lavfi's tone (amplitude 1/8), half a window
        assert rms[0] < 0.005, (strategy, rms)  # before the sound starts
        np.testing.assert_allclose(rms[1:], [half, half], rtol=0.1, err_msg=strategy)
    whole = decode_audio(path, sample_rate=16000)
    assert np.abs(whole[: 2 * 16000]).max() < 0.01 and np.abs(whole[3 * 16000 + 800 :]).max() > 0.05


def test_short_files_give_one_padded_window(media_files: dict[str, Path]) -> None:
    gif = load_windows(media_files["anim_gif"], TINY)  # 1 s of a 2 s window
    assert gif.video is not None and gif.video.shape == (1, 8, 64, 64, 3)
    assert gif.audio is None
    assert np.array_equal(gif.video[0, 4], gif.video[0, 7])  # last frame held
    still = load_windows(media_files["jpg"], TINY)
    assert still.video is not None and still.video.shape == (1, 8, 64, 64, 3)
    sound = load_windows(media_files["flac"], TINY, 10)
    assert sound.video is None and sound.audio is not None
    assert sound.audio.shape == (1, TINY.audio_samples)
    np.testing.assert_allclose(window_starts(10.0, 2.0, 5), [0, 2, 4, 6, 8])
    np.testing.assert_allclose(window_starts(10.0, 2.0, 1), [4.0])
    np.testing.assert_allclose(window_starts(1.0, 2.0, 5), [0.0])


def test_truncated_file_with_intact_header_is_refused(media_files: dict[str, Path]) -> None:
    # It decoded to its first half, padded to the whole: an item made of padding.
    path = media_files["truncated_faststart"]
    info = read_media_info(path)  # the header promises 3 s; half the data is there
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    for strategy in ("single", "seek"):
        with pytest.raises(UnreadableMedia, match=r"ends before its media does: it looks trunc"):
            load_windows(path, TINY, 2, info, strategy=strategy)  # type: ignore[arg-type]


def test_augmentation_is_random_but_reproducible(media_files: dict[str, Path]) -> None:
    path = media_files["mp4"]
    aug = VideoAugment()
    kwargs = {"fps": 4, "frames": 4, "size": 48, "info": read_media_info(path)}
    a = decode_video(path, **kwargs, augment=aug, rng=np.random.default_rng(7))
    b = decode_video(path, **kwargs, augment=aug, rng=np.random.default_rng(7))
    c = decode_video(path, **kwargs, augment=aug, rng=np.random.default_rng(8))
    plain = decode_video(path, **kwargs)
    assert a.shape == plain.shape == (4, 48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, plain)
    # With no crop, colour or scale change left, a certain flip is the mirror image.
    flip_only = VideoAugment(
        decode_scale=1.0, crop_fraction=(1.0, 1.0), flip_p=1.0,
        brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
    )  # fmt: skip
    flipped = decode_video(path, **kwargs, augment=flip_only, rng=np.random.default_rng(0))
    assert np.abs(flipped.astype(int) - plain[:, :, ::-1].astype(int)).max() <= 1


def _augment_step_by_step(frames: np.ndarray, size: int, augment: VideoAugment,
                          rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """The paper's augmentation written out one change at a time, in float64: the
    reference the fused, uint8-resizing augment_clip must match."""
    import math

    _, h, w, _ = frames.shape
    short = min(h, w)
    side = max(1, min(short, round(short * rng.uniform(*augment.crop_fraction))))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    flip = bool(rng.random() < augment.flip_p)
    b = rng.uniform(-augment.brightness, augment.brightness)
    k = rng.uniform(1 - augment.contrast, 1 + augment.contrast)
    s = rng.uniform(1 - augment.saturation, 1 + augment.saturation)
    turns = rng.uniform(-augment.hue, augment.hue)
    clip = torch.from_numpy(frames[:, y : y + side, x : x + side].copy()).double() / 255
    clip = torch.nn.functional.interpolate(
        clip.permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
        antialias=side > size, align_corners=False,
    ).permute(0, 2, 3, 1)  # fmt: skip
    if flip:
        clip = clip.flip(2)
    clip = clip + b
    mean = clip.mean(dim=(1, 2), keepdim=True)
    clip = (clip - mean) * k + mean
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    grey = (clip @ luma).unsqueeze(-1)
    clip = grey + (clip - grey) * s
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], dtype=torch.float64)  # fmt: skip
    a = 2 * math.pi * turns
    rot = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)],
                        [0, math.sin(a), math.cos(a)]], dtype=torch.float64)  # fmt: skip
    clip = clip @ (torch.linalg.inv(yiq) @ rot @ yiq).T
    return clip.clamp(0, 1).numpy()


def test_fused_augmentation_matches_the_step_by_step_reference() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (6, 80, 90, 3), dtype=np.uint8)
    frames[:, 20:50, 30:60] = (200, 40, 90)  # a flat patch: colour changes show plainly
    strong = VideoAugment(brightness=0.2, contrast=0.5, saturation=0.5, hue=0.3)
    # No crop, no resize: the colour changes alone must agree to float precision.
    colour_only = VideoAugment(
        crop_fraction=(1.0, 1.0), brightness=0.2, contrast=0.5, saturation=0.5, hue=0.3
    )
    square = np.ascontiguousarray(frames[:, :64, :64])
    for seed in range(12):
        ours = augment_clip(square, 64, colour_only, np.random.default_rng(seed)).numpy()
        ref = _augment_step_by_step(square, 64, colour_only, np.random.default_rng(seed))
        assert np.abs(ours - ref).max() * 255 < 0.01, seed
        for aug in (VideoAugment(), strong):
            ours = augment_clip(frames, 64, aug, np.random.default_rng(seed)).numpy()
            ref = _augment_step_by_step(frames, 64, aug, np.random.default_rng(seed))
            diff = np.abs(ours.astype(np.float64) - ref) * 255
            # The uint8 resize rounds to whole levels (at most 1 off); contrast,
            # saturation and hue scale that rounding by up to ~3.
            assert diff.max() <= 4.0 and diff.mean() <= 0.6, (seed, diff.max(), diff.mean())


def test_rotation_and_pixel_aspect_are_respected(media_files: dict[str, Path]) -> None:
    rotated = read_media_info(media_files["rotated"])  # stored 160×90, displayed turned by 90°
    assert (rotated.width, rotated.height) == (90, 160)
    assert decode_image(media_files["rotated"], size=32).shape == (32, 32, 3)
    wide = read_media_info(media_files["anamorphic"])  # 80×90 stored, pixels twice as wide
    assert wide.pixel_aspect == pytest.approx(2.0)
    assert scaled_size(wide, 90) == (160, 90)
    assert decode_video(media_files["anamorphic"], fps=4, frames=2, size=40).shape == (2, 40, 40, 3)


# -- bad input: a typed error, a clear message, bounded time ---------------------------------
BAD = {
    "random_bytes": UnreadableMedia,
    "empty": UnreadableMedia,
    "text_as_mp4": UnreadableMedia,
    "truncated_mp4": UnreadableMedia,
    "vtt_as_mp4": NoUsableStream,
    "huge_png": TooManyPixels,
    "playlist": UnsupportedFormat,
}
CODES = {
    UnreadableMedia: "unreadable_media",
    NoUsableStream: "unsupported_media",
    UnsupportedFormat: "unsupported_media",
    TooManyPixels: "too_large",
    MediaTooLong: "too_long",
    DecodeTimeout: "decode_timeout",
    OutputTooLarge: "too_large",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_gives_its_typed_error(media_files: dict[str, Path], name: str) -> None:
    path = media_files[name]
    started = time.monotonic()
    with pytest.raises(BAD[name]) as caught:
        load_windows(path, TINY)
    assert time.monotonic() - started < 10
    error = caught.value
    assert isinstance(error, MediaError)
    assert error.code == CODES[BAD[name]]
    assert path.name in str(error)
    assert str(path.parent) not in str(error)  # no server paths in user-facing text


@pytest.mark.parametrize(
    "playlist",
    [
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\nfile:{target}\n#EXT-X-ENDLIST\n",
        "\ufeff  #EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\nfile:{target}\n",
        "ffconcat version 1.0\nfile '{target}'\n",
    ],
)
def test_a_playlist_cannot_tell_which_server_files_exist(
    tmp_path: Path, media_files: dict[str, Path], playlist: str
) -> None:
    """Probing a playlist opened the files it names before it was refused: an existing
    target gave 415 and a missing one 422, so its sender learnt what the server holds."""
    answers = []
    for n, target in enumerate((media_files["mp4"], tmp_path / "nothing-here.mp4")):
        upload = tmp_path / f"upload-{n}"  # no extension: as stored from an upload
        upload.write_text(playlist.format(target=target))
        with pytest.raises(MediaError) as caught:
            read_media_info(upload)
        answers.append((type(caught.value), str(caught.value).replace(upload.name, "x")))
    assert answers[0] == answers[1] and answers[0][0] is UnsupportedFormat


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableMedia, match="no such file"):
        read_media_info(tmp_path / "gone.mp4")


def test_limits_too_long_and_too_many_pixels(media_files: dict[str, Path]) -> None:
    with pytest.raises(MediaTooLong) as caught:
        read_media_info(media_files["mp4"], MediaLimits(max_duration_s=2.0))
    assert caught.value.code == "too_long" and "limit is 2 s" in str(caught.value)
    with pytest.raises(MediaTooLong):
        load_windows(media_files["wav"], TINY, limits=MediaLimits(max_duration_s=1.0))
    with pytest.raises(TooManyPixels) as big:
        decode_image(media_files["png"], size=64, limits=MediaLimits(max_pixels=5000))
    assert big.value.code == "too_large" and "megapixels" in str(big.value)


def test_a_songs_cover_art_past_the_pixel_limit_refuses_nothing(tmp_path: Path) -> None:
    """ffprobe's "exceeds specified max pixel count" was taken for the file's picture:
    an mp3 with a large cover was refused as too large, though only its sound is used."""
    song = tmp_path / "song.mp3"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=2", "-f", "lavfi",
         "-i", "color=c=red:s=200x200:d=1", "-map", "0", "-map", "1", "-c:a", "libmp3lame",
         "-c:v", "mjpeg", "-frames:v", "1", "-disposition:v", "attached_pic", str(song)],
        check=True, timeout=60,
    )  # fmt: skip
    small = MediaLimits(max_pixels=5000)  # the cover is 40,000
    info = read_media_info(song, small)
    assert info.kind == "audio" and info.duration_s == pytest.approx(2.0, abs=0.1)
    windows = load_windows(song, TINY, 2, info, limits=small)
    assert windows.video is None and windows.audio is not None


def test_wrong_stream_is_no_usable_stream(media_files: dict[str, Path]) -> None:
    with pytest.raises(NoUsableStream, match="no video stream"):
        decode_video(media_files["wav"], fps=4, frames=2, size=32)
    with pytest.raises(NoUsableStream, match="no sound"):
        decode_audio(media_files["silent_mp4"], sample_rate=16000)
    with pytest.raises(NoUsableStream, match="is audio"):
        decode_image(media_files["mp3"], size=32)


def test_output_cap_stops_the_decoder(media_files: dict[str, Path]) -> None:
    with pytest.raises(OutputTooLarge) as caught:
        decode_audio(
            media_files["wav"], sample_rate=16000, limits=MediaLimits(max_output_bytes=4000)
        )
    assert caught.value.code == "too_large"
    assert not _ffmpeg_children()


def test_decoder_timeout_kills_ffmpeg(media_files: dict[str, Path]) -> None:
    path = media_files["long_mp4"]
    info = read_media_info(path)
    started = time.monotonic()
    tight = MediaLimits(timeout_s=0.05, whole_file_s_per_s=0.0)
    with pytest.raises(DecodeTimeout) as caught:
        load_windows(path, TINY, 3, info, limits=tight, strategy="single")
    assert time.monotonic() - started < 2
    assert caught.value.code == "decode_timeout" and "0.05 s" in str(caught.value)
    assert not _ffmpeg_children()


def test_a_whole_file_decode_has_time_in_proportion_to_its_length(
    media_files: dict[str, Path],
) -> None:
    """One pass over a long item's every window had the fixed 120 s of any decode: an
    hour of 720p on one core took longer and the upload was refused (decode_timeout)."""
    path = media_files["long_mp4"]
    info = read_media_info(path)
    assert info.duration_s is not None and info.duration_s >= 10
    limits = MediaLimits(timeout_s=0.05, cpu_s=1.0)  # 0.5 s per second of it, instead
    assert limits.for_whole_file(info.duration_s).timeout_s == info.duration_s * 0.5
    windows = load_windows(path, TINY, 3, info, limits=limits, strategy="single")
    assert windows.video is not None and len(windows.video) == 3


def test_a_file_that_never_ends_times_out(tmp_path: Path) -> None:
    # A FIFO nobody writes to: ffprobe blocks opening it, for ever without a timeout.
    fifo = tmp_path / "stuck.mp4"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(DecodeTimeout):
        read_media_info(fifo, MediaLimits(timeout_s=1.0))
    assert time.monotonic() - started < 4
    assert not _ffmpeg_children()


def test_runner_two_pipes_exact_and_capped_outputs() -> None:
    # One process, two outputs: 1 s of a 16 kHz tone on stdout and on a second pipe.
    args = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=d=1:r=16000"]
    for i in range(2):
        args += ["-map", "0:a", "-f", "s16le", output_target(i)]
    both = run(args, [OutputSpec(max_bytes=10**6)] * 2, timeout_s=20, what="test")
    assert both.returncode == 0 and len(both.outputs[0]) == len(both.outputs[1]) == 32000
    assert both.outputs[0] == both.outputs[1]
    # Exact outputs: filled, then the process is stopped; surplus bytes are dropped.
    exact = run(args, [OutputSpec(max_bytes=800, exact_bytes=800)] * 2, timeout_s=20, what="t")
    assert [len(o) for o in exact.outputs] == [800, 800]
    assert exact.outputs[0] == both.outputs[0][:800]
    with pytest.raises(OutputTooLarge):
        run(args, [OutputSpec(max_bytes=1000), OutputSpec(max_bytes=10**6)], timeout_s=20, what="t")
    assert not _ffmpeg_children()


def test_stderr_summary_keeps_the_reason() -> None:
    log = (
        "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55e9976da980] moov atom not found\n"
        "file:/srv/data/media/x.mp4: Invalid data found when processing input\n"
    )
    text = summarise_stderr(log)
    assert (
        text
        == "moov atom not found; /srv/data/media/x.mp4: Invalid data found when processing input"
    )
    assert "0x55" not in text


def _ffmpeg_children() -> list[int]:
    """ffmpeg/ffprobe processes that are still children of this test process."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm.startswith("ff"):
            found.append(int(entry))
    return found
