"""Decode media into model-ready numpy arrays with one ffmpeg process per call.

ffmpeg does the heavy work inside its filter graph: seek (`-ss` before `-i`), frame
rate (`fps`), short-side resize and centre crop, so only small frames cross the pipe.
A call that needs both pictures and sound gets them from one process (one demux)
through two pipes. When the source has many more frames than the model samples, the
decoder skips frames nothing refers to (`-skip_frame noref`): a third or more of the
decoding work on typical h264, and the fps filter still picks the frame on screen at each
instant. When frames are shrunk a lot it also skips the deblocking filter, whose
effect does not survive the downscale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from model.media.augment import VideoAugment, augment_clip, to_uint8
from model.media.completeness import check_decoded
from model.media.errors import (
    DEFAULT_LIMITS,
    MediaLimits,
    MediaTooLong,
    NoUsableStream,
    UnreadableMedia,
)
from model.media.media_info import MediaInfo, read_media_info
from model.media.process import (
    OutputSpec,
    commonest_line,
    ffmpeg_binary,
    input_url,
    output_target,
    run,
)

# Skip non-reference frames when the source has at least this many frames per
# sampled frame (30 fps source, 4-10 fps model: yes; 12 fps source, 10 fps model: no).
NOREF_RATIO = 2.5
# Skip the decoder's deblocking filter when frames are shrunk at least this much.
DEBLOCK_RATIO = 3.0
# Decoder threads per process. One: the callers run several decodes at once (data
# loader workers, window pools, the service's requests) and on few cores threads
# inside one process mostly add contention (bench/decode.py measures both).
DECODE_THREADS = 1
# Longest side kept after the short-side resize, in multiples of the short side: a
# 10000×10 panorama must not make a 64 000-pixel-wide frame before the centre crop.
_MAX_ASPECT = 16


@dataclass
class Clip:
    """Decoded pictures and sound of one stretch of a file."""

    video: np.ndarray | None  # uint8 [F, side, side, 3]
    audio: np.ndarray | None  # float32 [S], mono, in [-1, 1]
    start_s: float = 0.0


def decode_video(
    path: str | Path,
    *,
    fps: float,
    frames: int,
    size: int,
    start_s: float = 0.0,
    augment: VideoAugment | None = None,
    rng: np.random.Generator | None = None,
    limits: MediaLimits | None = None,
    info: MediaInfo | None = None,
) -> np.ndarray:
    """`frames` frames at `fps` from `start_s`: uint8 [frames, size, size, 3].

    Without `augment`: short side resized to `size`, centre crop (inference). With it:
    decoded larger, then a random crop, flip and colour change drawn from `rng`.
    An image gives a static clip (the picture repeated); a clip shorter than asked
    repeats its last frame.
    """
    info = info or read_media_info(path, limits)
    side = augment.decode_side(size) if augment is not None else size
    if info.kind == "image":
        picture = decode_image(path, size=side, limits=limits, info=info)
        raw = np.repeat(picture[None], frames, axis=0)
    else:
        _require(info, video=True, path=path)
        clip = decode_clip(
            path,
            fps=fps,
            frames=frames,
            size=side,
            sample_rate=None,
            start_s=start_s,
            limits=limits,
            info=info,
        )
        assert clip.video is not None
        raw = clip.video
    if augment is None:
        return raw
    return to_uint8(augment_clip(raw, size, augment, rng or np.random.default_rng()))


def decode_audio(
    path: str | Path,
    *,
    sample_rate: int,
    start_s: float = 0.0,
    duration_s: float | None = None,
    limits: MediaLimits | None = None,
    info: MediaInfo | None = None,
) -> np.ndarray:
    """Mono float32 [S] at `sample_rate`. With `duration_s`, exactly
    round(duration_s × sample_rate) samples (zero-padded past the end); without it,
    the whole file from `start_s`."""
    info = info or read_media_info(path, limits)
    _require(info, audio=True, path=path)
    if duration_s is not None:
        samples = round(duration_s * sample_rate)
        clip = _decode(
            path, info, limits or DEFAULT_LIMITS, start_s=start_s, duration_s=duration_s,
            sample_rate=sample_rate, samples=samples,
        )  # fmt: skip
        assert clip.audio is not None
        return pad_audio(clip.audio, samples)
    clip = decode_full(path, fps=None, size=None, sample_rate=sample_rate, limits=limits, info=info)
    assert clip.audio is not None
    if start_s > 0:
        return clip.audio[round(start_s * sample_rate) :].copy()
    return clip.audio


def decode_image(
    path: str | Path,
    *,
    size: int,
    start_s: float = 0.0,
    limits: MediaLimits | None = None,
    info: MediaInfo | None = None,
) -> np.ndarray:
    """One picture: uint8 [size, size, 3] (short side resized, centre crop). From a
    video, the frame at `start_s`."""
    info = info or read_media_info(path, limits)
    if info.kind == "audio":
        raise NoUsableStream(f"'{Path(path).name}' is audio: it has no picture")
    clip = _decode(
        path, info, limits or DEFAULT_LIMITS,
        start_s=start_s if info.kind == "video" else 0.0,
        fps=None, frames=1, side=size,
    )  # fmt: skip
    assert clip.video is not None
    if len(clip.video) == 0:
        raise UnreadableMedia(f"'{Path(path).name}': no picture could be decoded")
    return clip.video[0]


def decode_clip(
    path: str | Path,
    *,
    fps: float,
    frames: int,
    size: int,
    sample_rate: int | None,
    start_s: float = 0.0,
    limits: MediaLimits | None = None,
    info: MediaInfo | None = None,
) -> Clip:
    """One window of `frames / fps` seconds from `start_s`, pictures and sound from
    one ffmpeg process: video uint8 [frames, size, size, 3] (None without a picture
    stream), audio float32 [round(span × sample_rate)] (None without sound or when
    `sample_rate` is None). Short clips are padded: last frame repeated, silence."""
    info = info or read_media_info(path, limits)
    _require(info, video=True, path=path, allow_audio_only=sample_rate is not None)
    span = frames / fps
    samples = round(span * sample_rate) if sample_rate and info.has_audio else None
    clip = _decode(
        path, info, limits or DEFAULT_LIMITS, start_s=start_s, duration_s=span,
        fps=fps if info.has_video else None, frames=frames if info.has_video else None,
        side=size if info.has_video else None,
        sample_rate=sample_rate if samples else None, samples=samples,
    )  # fmt: skip
    if clip.video is not None:
        if len(clip.video) == 0:
            # No picture begins in the window (a picture track that ended before the
            # sound, a screen recording's frame every few seconds): the one on screen
            # is the last before it, as in a decode of the whole file.
            clip.video = _last_picture_before(path, info, limits or DEFAULT_LIMITS, start_s, size)
        clip.video = pad_frames(clip.video, frames)
    if clip.audio is not None and samples is not None:
        clip.audio = pad_audio(clip.audio, samples)
    return clip


HOLD_LOOKBACK_S = 30.0  # how far before an empty window its held picture is looked for


def _last_picture_before(
    path: str | Path, info: MediaInfo, limits: MediaLimits, start_s: float, size: int
) -> np.ndarray:
    """[1, size, size, 3]: the last picture shown before `start_s`, looked for in the
    HOLD_LOOKBACK_S before the picture track's end where it ended before that (declared,
    or measured from packets), else in the HOLD_LOOKBACK_S before `start_s`."""
    end = info.video_span_s[1] if info.video_span_s is not None else info.measured_video_end_s
    if end is not None and end < start_s - HOLD_LOOKBACK_S:
        # Up to just past its end, not on through the rest of a long file's sound.
        begin, stop = max(0.0, end - HOLD_LOOKBACK_S), end + 1.0
    else:
        begin, stop = max(0.0, start_s - HOLD_LOOKBACK_S), start_s
    clip = _decode(
        path, info, limits, start_s=begin, duration_s=max(stop - begin, 1.0), fps=1.0, side=size
    )
    if clip.video is not None and len(clip.video):
        return clip.video[-1:]
    raise UnreadableMedia(
        f"'{Path(path).name}': no video frames could be decoded at {start_s:.2f} s"
    )


def decode_full(
    path: str | Path,
    *,
    fps: float | None,
    size: int | None,
    sample_rate: int | None,
    limits: MediaLimits | None = None,
    info: MediaInfo | None = None,
) -> Clip:
    """The whole file in one pass: every frame at `fps`, resized and centre-cropped to
    `size` (pass fps=None to skip pictures), and all of the sound at `sample_rate`
    (None to skip sound). Sizes are unknown up front, so outputs are capped by the
    probed duration and the limits."""
    limits = limits or DEFAULT_LIMITS
    info = info or read_media_info(path, limits)
    want_video = fps is not None and size is not None and info.has_video
    want_audio = sample_rate is not None and info.has_audio
    if not want_video and not want_audio:
        _require(info, video=fps is not None, audio=sample_rate is not None, path=path)
    clip = _decode(
        path, info, limits.for_whole_file(info.duration_s), start_s=0.0, duration_s=None,
        fps=fps if want_video else None, frames=None, side=size if want_video else None,
        sample_rate=sample_rate if want_audio else None, samples=None,
    )  # fmt: skip
    name = Path(path).name
    if want_video and (clip.video is None or len(clip.video) == 0):
        raise UnreadableMedia(f"'{name}': no video frames could be decoded")
    if want_audio and (clip.audio is None or len(clip.audio) == 0) and not want_video:
        raise UnreadableMedia(f"'{name}': no audio could be decoded")
    decoded_s = 0.0
    if clip.video is not None and fps:
        decoded_s = len(clip.video) / fps
    if clip.audio is not None and sample_rate:
        decoded_s = max(decoded_s, len(clip.audio) / sample_rate)
    if decoded_s > limits.max_duration_s:
        raise MediaTooLong(
            f"'{name}' decodes to more than {limits.max_duration_s:g} s",
            detail={"max_duration_s": limits.max_duration_s},
        )
    return clip


def scaled_size(info: MediaInfo, side: int) -> tuple[int, int]:
    """(width, height) with the shorter displayed side equal to `side`."""
    if not info.width or not info.height:
        return side, side
    display_w = info.width * info.pixel_aspect
    display_h = float(info.height)
    if display_w <= display_h:
        long = min(round(side * display_h / display_w), side * _MAX_ASPECT)
        return side, max(side, long)
    long = min(round(side * display_w / display_h), side * _MAX_ASPECT)
    return max(side, long), side


def pad_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """Exactly `count` frames: cut, or repeat the last frame (a clip that ends early
    holds still rather than jumping back to its start)."""
    if len(frames) >= count:
        return frames[:count]
    tail = np.repeat(frames[-1:], count - len(frames), axis=0)
    return np.concatenate([frames, tail], axis=0)


def pad_audio(audio: np.ndarray, count: int) -> np.ndarray:
    """Exactly `count` samples: cut, or pad with silence."""
    if len(audio) >= count:
        return audio[:count]
    return np.concatenate([audio, np.zeros(count - len(audio), dtype=np.float32)])


def _require(
    info: MediaInfo,
    *,
    path: str | Path,
    video: bool = False,
    audio: bool = False,
    allow_audio_only: bool = False,
) -> None:
    name = Path(path).name
    if video and not info.has_video and not (allow_audio_only and info.has_audio):
        what = "an image" if info.kind == "image" else "audio only"
        raise NoUsableStream(f"'{name}' has no video stream (it is {what})")
    if audio and not info.has_audio:
        raise NoUsableStream(f"'{name}' has no sound")


def _decode(
    path: str | Path,
    info: MediaInfo,
    limits: MediaLimits,
    *,
    start_s: float,
    duration_s: float | None = None,
    fps: float | None = None,
    frames: int | None = None,
    side: int | None = None,
    sample_rate: int | None = None,
    samples: int | None = None,
) -> Clip:
    """Build and run one ffmpeg process. Pictures when `side` is set (at `fps`, or a
    still when fps is None), sound when `sample_rate` is set. `frames`/`samples`
    known → exact-size outputs, read and stopped as soon as they are full."""
    name = Path(path).name
    in_opts: dict[str, Any] = {
        "protocol_whitelist": "file",
        "threads": DECODE_THREADS,
        "max_pixels": limits.max_pixels,  # the decoder refuses bigger frames
    }
    if start_s > 0:
        in_opts["ss"] = f"{start_s:.6f}"
    if duration_s is not None:
        in_opts["t"] = f"{duration_s:.6f}"
    elif info.duration_s is None:
        # Length unknown: read at most a little past the limit, so an endless or lying
        # stream ends and is reported as too long.
        in_opts["t"] = f"{limits.max_duration_s + 1:.3f}"
    if side is not None and fps and info.fps and info.fps >= NOREF_RATIO * fps:
        in_opts["skip_frame"] = "noref"
    if side is not None and fps and min(info.width or 0, info.height or 0) >= DEBLOCK_RATIO * side:
        # Shrunk this much, deblocking changes pixels by < 1/255 on average (bench/
        # decode.py measures it) and costs about a fifth of h264 decoding.
        in_opts["skip_loop_filter"] = "all"
    source = ffmpeg.input(input_url(path), **in_opts)

    outputs = []
    specs: list[OutputSpec] = []
    span = duration_s if duration_s is not None else _remaining(info, limits, start_s)
    if side is not None:
        if info.video_stream is None:
            raise NoUsableStream(f"'{name}' has no picture stream")
        stream = source[str(info.video_stream)]
        if fps is not None:
            # round=up: output frame k is the frame on screen at k / fps (the latest
            # frame starting at or before it); the default (near) takes the latest
            # frame before (k + 0.5) / fps, half a model frame late. start_time=0:
            # after a seek between two frames the first frame still fills slot 0
            # (otherwise the whole clip slips by one model frame).
            stream = stream.filter("fps", fps=f"{fps:g}", round="up", start_time=0)
        width, height = scaled_size(info, side)
        stream = (
            stream.filter("scale", width, height, flags="area")
            .filter("setsar", "1")
            .filter("crop", side, side)
        )
        frame_bytes = side * side * 3
        count = frames
        if count is None:
            count = 1 if fps is None else math.ceil(span * fps) + 2
        # threads=1: the rawvideo encoder otherwise starts a thread per core (64 on a
        # 64-core host), each reserving a stack and a malloc arena: the address space
        # under MediaLimits.memory_mb would depend on the machine.
        out_opts: dict[str, Any] = {
            "format": "rawvideo",
            "pix_fmt": "rgb24",
            "frames:v": count,
            "threads": 1,
        }
        outputs.append(ffmpeg.output(stream, output_target(len(outputs)), **out_opts))
        cap = min(count * frame_bytes, limits.max_output_bytes)
        specs.append(OutputSpec(max_bytes=cap, exact_bytes=cap if frames is not None else None))
    if sample_rate is not None:
        if info.audio_stream is None:
            raise NoUsableStream(f"'{name}' has no sound")
        expected = samples if samples is not None else math.ceil(span * sample_rate) + sample_rate
        cap = min(expected * 4, limits.max_output_bytes)
        # Down-mix by averaging the channels (rematrix_maxval=1): ffmpeg's default
        # keeps power instead, which lifts a stereo track by 3 dB and can clip.
        sound = source[str(info.audio_stream)]
        channels = info.channels or 1
        if channels > 2 and info.channel_layout is None:
            # No layout (a 10-channel recorder's WAV): the resampler cannot tell how to
            # mix it and fails; the plain average of the channels is asked for instead.
            # `<`: gains renormalised to sum to 1, the average (and no `=`, which
            # ffmpeg-python would escape once too often).
            sound = sound.filter("pan", "mono|c0<" + "+".join(f"c{c}" for c in range(channels)))
        sound = sound.filter("aresample", rematrix_maxval=1.0, first_pts=0)
        outputs.append(
            ffmpeg.output(
                sound,
                output_target(len(outputs)),
                format="f32le",
                ac=1,
                ar=sample_rate,
                threads=1,
            )
        )
        specs.append(OutputSpec(max_bytes=cap, exact_bytes=cap if samples is not None else None))

    args = (
        ffmpeg.merge_outputs(*outputs)
        .global_args("-nostdin", "-hide_banner", "-v", "error", "-filter_complex_threads", "1")
        .compile(cmd=ffmpeg_binary("ffmpeg"))
    )
    result = run(args, specs, what=f"decoding '{name}'", **limits.process_limits())
    if result.returncode not in (0, None) and not any(result.filled):
        reason = result.summary(path) or f"ffmpeg exit status {result.returncode}"
        raise UnreadableMedia(f"'{name}' could not be decoded: {reason}")

    clip = Clip(video=None, audio=None, start_s=start_s)
    index = 0
    if side is not None:
        data = result.outputs[index]
        n = len(data) // (side * side * 3)
        clip.video = np.frombuffer(data, dtype=np.uint8, count=n * side * side * 3).reshape(
            n, side, side, 3
        )
        index += 1
    if sample_rate is not None:
        data = result.outputs[index]
        audio = np.frombuffer(data, dtype=np.float32, count=len(data) // 4)
        # Resampling can overshoot full scale a little; the model expects [-1, 1].
        clip.audio = np.clip(audio, -1.0, 1.0)
    if result.returncode is not None:  # stopped early: every output is full
        # ffmpeg stops at the end of the bytes or past packets it cannot decode without
        # an error; compared with what the container declares, that is a damaged file.
        check_decoded(
            info, name=name, start_s=start_s, span_s=duration_s,
            video_s=len(clip.video) / fps if clip.video is not None and fps else None,
            audio_s=len(clip.audio) / sample_rate if clip.audio is not None else None,
            reason=commonest_line(result.stderr, path),
        )  # fmt: skip
    return clip


def _remaining(info: MediaInfo, limits: MediaLimits, start_s: float) -> float:
    length = info.duration_s if info.duration_s is not None else limits.max_duration_s + 1
    return max(0.0, length - start_s) + 1.0  # one second of slack: durations are estimates
