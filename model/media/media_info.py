"""ffprobe: what a file really is (never judged by its name), checked against the limits."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from model.media.completeness import check_wav_header
from model.media.errors import (
    DEFAULT_LIMITS,
    MediaLimits,
    MediaTooLong,
    NoUsableStream,
    OutputTooLarge,
    TooManyPixels,
    UnreadableMedia,
    UnsupportedFormat,
)
from model.media.process import OutputSpec, ffmpeg_binary, input_url, run

MediaKind = Literal["video", "audio", "image"]
# Bump when what a probe finds changes, so probes kept on disk are made again (2:
# undeclared lengths measured, the channel layout, EXIF-turned JPEG sizes, covers; 3:
# a moving picture chosen before a still one, where a measured picture ends, a
# Matroska or MPEG-TS stream starting at its first packet).
PROBE_VERSION = 3

# Demuxers that open further files or URLs (playlists) or draw text as video: an
# upload in one of these formats could make ffmpeg read files it was never given.
_REFUSED_FORMATS = {"hls", "applehttp", "concat", "dash", "tty", "sdp", "rtsp", "rtp", "bin"}
# Codecs that hold still pictures; one frame of them is an image, not a video.
_IMAGE_CODECS = {
    "png", "apng", "mjpeg", "jpegls", "webp", "gif", "bmp", "tiff", "jpeg2000",
    "pgm", "ppm", "pbm", "pam", "qoi", "jpegxl", "sgi", "targa", "photocd", "exr",
}  # fmt: skip
_PROBE_OUTPUT_CAP = 4 << 20
# ~25 bytes a packet line: 4 h of 30 fps video with 20 ms Opus frames (1.2M packets) fits.
_PACKETS_OUTPUT_CAP = 64 << 20
_OVER_MAX_PIXELS = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")
# ffprobe runs at `-v level+warning` to see this warning: the length is then a guess from
# the bit rate (e.g. 31.8 s for an 8 s VBR mp3 without a Xing header), not a declaration.
_LENGTH_GUESSED = "Estimating duration from bitrate"
# Seconds of sound an mp3 may hold beyond what its header declares (frames rounded)
# before its length is measured, and taken from that measure.
_JOINED_MP3_SLACK_S = 0.5
# Lines of a `level+...` log at error level or worse, and the tag to drop from them.
_ERROR_LINE = re.compile(r"\[(?:error|fatal|panic)\] ")


@dataclass(frozen=True)
class MediaInfo:
    kind: MediaKind
    duration_s: float | None  # None for images and streams without a known length
    has_video: bool  # a moving-picture stream (False for an image)
    has_audio: bool
    width: int | None  # as displayed: after rotation; None for audio
    height: int | None
    fps: float | None  # average frame rate of the video stream
    container: str  # ffprobe format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    video_codec: str | None
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    video_stream: int | None  # ffmpeg stream index of the picture stream used
    audio_stream: int | None
    pixel_aspect: float = 1.0  # sample aspect ratio (anamorphic video ≠ 1)
    size_bytes: int = 0
    # What the container declares (completeness.py compares decoded lengths with it):
    # the length of the file, and where the picture / sound stream used lies on its time
    # line (start, end) in seconds. None where it declares nothing, or ffprobe guessed
    # the length from the bit rate.
    declared_s: float | None = None
    video_span_s: tuple[float, float] | None = None
    audio_span_s: tuple[float, float] | None = None
    # ffprobe's name of the sound's channel layout ("stereo", "5.1"); None when it has
    # none (a 10-channel field recorder's WAV).
    channel_layout: str | None = None
    # Where the picture's last packet ends, when the length was measured from packets
    # (nothing declared it: a MediaRecorder WebM whose camera stopped before its sound);
    # decode.py looks there for the picture a later window holds.
    measured_video_end_s: float | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """What an item made from this file can be searched by (api.md's Item)."""
        if self.kind == "image":
            return ("image",)
        if self.kind == "audio":
            return ("audio",)
        return ("video", "audio") if self.has_audio else ("video",)

    def lasting(self, duration_s: float) -> MediaInfo:
        """These facts for a file encoded alike that lasts `duration_s`: its declared
        lengths moved by the difference (generated corpus clips share one probe,
        model/corpus/clip_info.py)."""
        delta = duration_s - (self.duration_s or 0.0)

        def moved(span: tuple[float, float] | None) -> tuple[float, float] | None:
            return None if span is None else (span[0], span[1] + delta)

        return replace(
            self,
            duration_s=duration_s,
            declared_s=None if self.declared_s is None else self.declared_s + delta,
            video_span_s=moved(self.video_span_s),
            audio_span_s=moved(self.audio_span_s),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaInfo:
        spans = {k: tuple(data[k]) for k in ("video_span_s", "audio_span_s") if data.get(k)}
        return cls(**{**data, **spans})  # JSON turned the tuples into lists


# A stand-in carrying only a frame size, to report an oversized frame found in stderr.
_SIZE_ONLY = MediaInfo(
    kind="image", duration_s=None, has_video=False, has_audio=False, width=None, height=None,
    fps=None, container="", video_codec=None, audio_codec=None, sample_rate=None,
    channels=None, video_stream=None, audio_stream=None,
)  # fmt: skip


# Playlists ffprobe recognises by their first bytes. They are refused after probing too
# (_REFUSED_FORMATS), but probing one opens the files it names: `file:/srv/x.mp4` in an
# uploaded HLS playlist told its sender whether that file exists on the server.
_PLAYLIST_STARTS = (b"#EXTM3U", b"ffconcat version")


def _refuse_playlist(path: Path, name: str) -> None:
    with path.open("rb") as f:
        head = f.read(4096)
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    dash = start.startswith(b"<") and b"<MPD" in head  # XML: not 4 chance bytes of a video
    if start.startswith(_PLAYLIST_STARTS) or dash:
        raise UnsupportedFormat(
            f"'{name}' is a playlist: playlists and text formats are not accepted; upload "
            "the media itself"
        )


def read_media_info(path: str | Path, limits: MediaLimits | None = None) -> MediaInfo:
    """Probe `path` with ffprobe and check it against `limits`.

    Raises UnreadableMedia (not media, corrupt, missing), NoUsableStream (no video,
    audio or image stream), UnsupportedFormat (playlists), MediaTooLong, TooManyPixels
    or DecodeTimeout.
    """
    limits = limits or DEFAULT_LIMITS
    path = Path(path)
    name = path.name
    if not path.exists():
        raise UnreadableMedia(f"'{name}': no such file")
    size_bytes = path.stat().st_size if path.is_file() else 0
    if path.is_file() and size_bytes == 0:
        raise UnreadableMedia(f"'{name}' is empty")
    if path.is_file():
        _refuse_playlist(path, name)
    # ffmpeg-python builds graphs for ffmpeg only; ffprobe's flat argument list is
    # written out here (its own probe() has no timeout and no output cap).
    args = [
        ffmpeg_binary("ffprobe"),
        "-v", "level+warning", "-hide_banner",
        "-protocol_whitelist", "file",
        # Decoders refuse bigger frames instead of allocating them: a 12000×12000 PNG
        # bomb otherwise costs ffprobe ~0.5 GB before we can look at its size.
        "-max_pixels", str(limits.max_pixels),
        "-show_format", "-show_streams", "-of", "json",
        "-i", input_url(path),
    ]  # fmt: skip
    result = run(
        args,
        [OutputSpec(max_bytes=_PROBE_OUTPUT_CAP)],
        what=f"probing '{name}'",
        **limits.process_limits(),
    )
    oversized = _OVER_MAX_PIXELS.search(result.stderr)
    guessed = _LENGTH_GUESSED in result.stderr
    # Warnings were asked for (above) but say nothing about why a file cannot be read.
    errors = [_ERROR_LINE.sub("", line) for line in result.stderr.splitlines()]
    result.stderr = "\n".join(
        e for e, line in zip(errors, result.stderr.splitlines(), strict=True) if e != line
    )
    if result.returncode != 0:
        reason = result.summary(path) or f"ffprobe exit status {result.returncode}"
        raise UnreadableMedia(f"'{name}' is not a media file ffmpeg can read: {reason}")
    try:
        data = json.loads(bytes(result.outputs[0]).decode("utf-8", "replace"))
    except json.JSONDecodeError as exc:
        raise UnreadableMedia(f"'{name}': ffprobe returned no readable description") from exc
    if oversized:
        width, height = int(oversized.group(1)), int(oversized.group(2))
        if not _only_cover_art(data):  # a cover is never decoded: no bomb
            check_limits(replace(_SIZE_ONLY, width=width, height=height), limits, name=name)
    if path.is_file() and _starts_unreliable(data):
        _start_at_first_packets(data, path, limits)
    info = parse_probe(data, name=name, size_bytes=size_bytes, length_guessed=guessed)
    if (
        info.kind != "image"
        and (guessed or info.duration_s is None)
        and not (guessed and _constant_rate(info))
        and path.is_file()
    ):
        # Nothing declared the length (a browser's MediaRecorder WebM) or ffprobe guessed
        # it from the bit rate (a VBR mp3 without a Xing header, off by minutes): windows,
        # segments and the stored duration need the real one.
        length, video_end = _measured_length(path, info, limits)
        info = replace(info, duration_s=length or info.duration_s, measured_video_end_s=video_end)
    elif info.duration_s is not None and _holds_more_than_declared(data) and path.is_file():
        length, _ = _measured_length(path, info, limits)
        if length is not None and length > info.duration_s + _JOINED_MP3_SLACK_S:
            # Joined mp3s: the first one's header is no declaration for the whole.
            joined = parse_probe(data, name=name, size_bytes=size_bytes, length_guessed=True)
            info = replace(joined, duration_s=length)
    if (
        info.kind == "image"
        and info.video_codec == "mjpeg"
        and path.is_file()
        and _exif_quarter_turn(path) is not False
    ):
        info = _upright(path, info, limits)
    check_limits(info, limits, name=name)
    if info.container == "wav" and path.is_file():
        check_wav_header(path)  # ffprobe hides a data chunk longer than the file
    return info


def _only_cover_art(data: dict[str, Any]) -> bool:
    """Whether every picture stream is cover art (an attached picture) of a file with
    sound: an mp3's 5000×5000 cover must not refuse the song (ffprobe, refusing to
    decode it, reports its size as 0×0)."""
    streams = data.get("streams") or []
    pictures = [s for s in streams if s.get("codec_type") == "video"]
    return any(s.get("codec_type") == "audio" for s in streams) and all(
        (s.get("disposition") or {}).get("attached_pic") == 1 for s in pictures
    )


def _probe_again(path: Path, limits: MediaLimits, cap: int, asked: list[str]) -> bytes:
    """What one more ffprobe of `path` prints for `asked` (what the first probe does not
    show), under the same limits."""
    args = [
        ffmpeg_binary("ffprobe"),
        "-v", "error", "-hide_banner", "-protocol_whitelist", "file",
        "-max_pixels", str(limits.max_pixels),
        *asked,
        "-i", input_url(path),
    ]  # fmt: skip
    result = run(
        args, [OutputSpec(max_bytes=cap)], what=f"probing '{path.name}'",
        **limits.process_limits(),
    )  # fmt: skip
    return bytes(result.outputs[0])


# Containers whose demuxer gives a stream whose first packet lies past ffprobe's
# analysis the file's start time (a sound track starting 20 s late read as from 0).
_STARTS_GUESSED = {"matroska,webm", "mpegts"}


def _starts_unreliable(data: dict[str, Any]) -> bool:
    """A picture and a sound in a container that may have guessed where they start."""
    if str((data.get("format") or {}).get("format_name")) not in _STARTS_GUESSED:
        return False
    kinds = {s.get("codec_type") for s in data.get("streams") or []}
    return {"video", "audio"} <= kinds


def _start_at_first_packets(data: dict[str, Any], path: Path, limits: MediaLimits) -> None:
    """Move each stream's start in `data` to its first packet where that is later (its
    end stays): the windows seeked before a late sound would expect sound there and
    refuse the file. Each picture and sound stream's first packet is read (the file as
    far as it)."""
    for stream in data.get("streams") or []:
        if stream.get("codec_type") not in ("video", "audio") or "index" not in stream:
            continue
        listed = _probe_again(
            path, limits, _PROBE_OUTPUT_CAP,
            ["-select_streams", str(int(stream["index"])), "-read_intervals", "%+#1",
             "-show_entries", "packet=pts_time", "-of", "csv=p=0"],
        )  # fmt: skip
        pts = _finite(listed.decode("ascii", "replace").split("\n", 1)[0].strip(" ,\r"))
        declared = _number(stream.get("start_time"))
        if pts is None or pts <= declared + 0.05:
            continue
        stream["start_time"] = f"{pts:.6f}"
        length = _seconds(stream.get("duration"))
        if length is not None:
            stream["duration"] = f"{max(length - (pts - declared), 0.0):.6f}"


# EXIF orientations that show the stored picture turned a quarter (mirrored or not).
_QUARTER_TURNS = {5, 6, 7, 8}


def _exif_quarter_turn(path: Path) -> bool | None:
    """Whether a JPEG's EXIF orientation turns it a quarter, from its header (Pillow
    reads the APP1 segment, decodes nothing); None when Pillow cannot tell. Only then
    is the first frame decoded to see the size shown (`_upright`): that decode cost a
    40-megapixel photo 0.3 s more than its probe, and most photos are not turned."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return isinstance(orientation, int) and orientation in _QUARTER_TURNS


def _upright(path: Path, info: MediaInfo, limits: MediaLimits) -> MediaInfo:
    """A JPEG's size as displayed. A phone photo's EXIF orientation reaches ffmpeg as the
    decoded frame's display matrix, which the decoder applies, while the stream reports
    the stored size: a portrait photo was scaled as a landscape one (squeezed)."""
    shown = _probe_again(
        path, limits, _PROBE_OUTPUT_CAP,
        ["-select_streams", "v:0", "-read_intervals", "%+#1", "-show_frames",
         "-show_entries", "frame=width,height:frame_side_data_list", "-of", "json"],
    )  # fmt: skip
    try:
        frames = json.loads(shown.decode("utf-8", "replace")).get("frames")
    except json.JSONDecodeError:
        return info
    first = frames[0] if isinstance(frames, list) and frames else {}
    if (first.get("width"), first.get("height")) != (info.width, info.height):
        return info  # already turned (an ffmpeg that puts the rotation on the stream)
    for side in first.get("side_data_list") or []:
        rotation = side.get("rotation")
        if isinstance(rotation, int | float) and round(rotation) % 180 == 90:
            return replace(info, width=info.height, height=info.width)
    return info


def _measured_length(
    path: Path, info: MediaInfo, limits: MediaLimits
) -> tuple[float | None, float | None]:
    """(length, where the picture ends) from the packets' timestamps of the streams used:
    from their first packet to the end of their last (a demux, no decode: about a second
    for an hour). None where they say nothing, or a file has too many packets to list."""
    used = {s for s in (info.video_stream, info.audio_stream) if s is not None}
    # Only the streams used are listed, and no further than a file the limits accept:
    # one too long is measured as just past them, and refused as too long.
    only = ["-select_streams", str(next(iter(used)))] if len(used) == 1 else []
    try:
        packets = _probe_again(
            path, limits, _PACKETS_OUTPUT_CAP,
            [*only, "-read_intervals", f"%+{limits.max_duration_s + 1:g}",
             "-show_entries", "packet=stream_index,pts_time,duration_time", "-of", "csv=p=0"],
        )  # fmt: skip
    except OutputTooLarge:  # millions of packets: the length stays as ffprobe had it
        return None, None
    first = last = video_last = None
    for line in packets.decode("ascii", "replace").splitlines():
        fields = line.split(",")
        if len(fields) < 3 or not fields[0].isdigit() or int(fields[0]) not in used:
            continue
        start = _finite(fields[1])
        if start is None:
            continue
        end = start + (_finite(fields[2]) or 0.0)
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
        if int(fields[0]) == info.video_stream:
            video_last = end if video_last is None else max(video_last, end)
    if first is None or last is None or last <= first:
        return None, None
    return last - first, None if video_last is None else video_last - first


def _holds_more_than_declared(data: dict[str, Any]) -> bool:
    """An mp3 with more bytes than its Xing header counts: mp3s joined end to end (`cat
    a.mp3 b.mp3`, how many podcasts and audiobooks are made) declare the first one's
    length; ffmpeg flags the join only past a few percent, and below that the decode
    ran past the declared length and its output cap (an hour and 2 minutes refused as
    too large, and the last minutes never searched). The file's bit rate above the
    sound's says so (past half a second of sound, however long the file); tags and a
    cover say so too, and then listing the packets (about a second for an hour) finds
    the declared length right."""
    fmt = data.get("format") or {}
    if "mp3" not in str(fmt.get("format_name")).split(","):
        return False
    sounds = [s for s in data.get("streams") or [] if s.get("codec_type") == "audio"]
    sound = _number(sounds[0].get("bit_rate")) if sounds else 0.0
    if sound <= 0:
        return False
    # The bytes past what the header counts, as seconds of this sound.
    beyond_s = _number(fmt.get("duration")) * (_number(fmt.get("bit_rate")) / sound - 1.0)
    return beyond_s > _JOINED_MP3_SLACK_S


def _constant_rate(info: MediaInfo) -> bool:
    """A sound whose length from its bit rate is exact (PCM: a WAV streamed to a pipe,
    which declares no length), so its packets need no listing: an hour of them is
    hundreds of thousands of lines."""
    return info.kind == "audio" and (info.audio_codec or "").startswith("pcm_")


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_probe(
    data: dict[str, Any], *, name: str = "file", size_bytes: int = 0, length_guessed: bool = False
) -> MediaInfo:
    """Turn ffprobe's JSON into a MediaInfo (no limits checked). `length_guessed`:
    ffprobe said it estimated the length from the bit rate (nothing is declared)."""
    fmt = data.get("format") or {}
    container = str(fmt.get("format_name") or "unknown")
    if set(container.split(",")) & _REFUSED_FORMATS:
        raise UnsupportedFormat(
            f"'{name}' is a '{container}' file: playlists and text formats are not accepted; "
            "upload the media itself"
        )
    streams = data.get("streams") or []
    pictures = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    sounds = [s for s in streams if s.get("codec_type") == "audio"]
    if not pictures and not sounds:
        found = sorted({str(s.get("codec_type")) for s in streams}) or ["nothing"]
        raise NoUsableStream(
            f"'{name}' has no video, audio or image stream (found: {', '.join(found)})"
        )
    # A moving picture before a still one: a one-frame thumbnail track listed first
    # (not flagged attached_pic) is not what a video file is.
    video = _preferred([s for s in pictures if not _is_still(s, container)]) or _preferred(pictures)
    audio = _preferred(sounds)
    if video is not None and audio is not None and _is_still(video, container):
        # One picture beside a sound track (a podcast's cover as a real one-frame track,
        # not flagged attached_pic): the sound is the item, as with a flagged cover.
        video = None
    is_image = video is not None and _is_still(video, container)

    width = height = None
    rotation = 0
    if video is not None:
        width, height = int(video.get("width") or 0) or None, int(video.get("height") or 0) or None
        rotation = _rotation(video)
        if rotation % 180 == 90 and width and height:
            width, height = height, width  # ffmpeg auto-rotates: report what it outputs
        if not width or not height:
            raise UnreadableMedia(f"'{name}': its picture stream has no size")

    fps = None
    declared = video_span = audio_span = None
    if is_image:
        kind: MediaKind = "image"
        duration = None
    else:
        kind = "video" if video is not None else "audio"
        duration = _duration(fmt, [s for s in (video, audio) if s is not None])
        if video is not None:
            fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
        if not length_guessed:
            video_span = _span(fmt, video) if video is not None else None
            audio_span = _span(fmt, audio) if audio is not None else None
            ends = [s[1] for s in (video_span, audio_span) if s is not None]
            # The used streams' own lengths (another, longer stream may be in the file:
            # a subtitle cue an hour after a 5 s clip ends makes the file's duration).
            declared = max(ends) if ends else _seconds(fmt.get("duration"))
            if ends and len(ends) == (video is not None) + (audio is not None):
                duration = max(ends)  # every used stream declares its span
    return MediaInfo(
        kind=kind,
        duration_s=duration,
        has_video=kind == "video",
        has_audio=audio is not None and kind != "image",
        width=width,
        height=height,
        fps=fps,
        container=container,
        video_codec=str(video.get("codec_name")) if video is not None else None,
        audio_codec=str(audio.get("codec_name")) if audio is not None else None,
        sample_rate=int(audio.get("sample_rate") or 0) or None if audio is not None else None,
        channels=int(audio.get("channels") or 0) or None if audio is not None else None,
        channel_layout=_layout(audio) if audio is not None else None,
        video_stream=int(video["index"]) if video is not None else None,
        audio_stream=int(audio["index"]) if audio is not None and kind != "image" else None,
        pixel_aspect=_aspect(video.get("sample_aspect_ratio")) if video is not None else 1.0,
        size_bytes=size_bytes,
        declared_s=declared,
        video_span_s=video_span,
        audio_span_s=audio_span if kind != "image" else None,
    )


def check_limits(info: MediaInfo, limits: MediaLimits, *, name: str = "file") -> None:
    if info.width and info.height and info.width * info.height > limits.max_pixels:
        raise TooManyPixels(
            f"'{name}' is {info.width}×{info.height} = {info.width * info.height / 1e6:.1f} "
            f"megapixels; the limit is {limits.max_pixels / 1e6:.1f}",
            detail={"width": info.width, "height": info.height, "max_pixels": limits.max_pixels},
        )
    if info.duration_s is not None and info.duration_s > limits.max_duration_s:
        raise MediaTooLong(
            f"'{name}' lasts {info.duration_s:.1f} s; the limit is {limits.max_duration_s:g} s",
            detail={"duration_s": info.duration_s, "max_duration_s": limits.max_duration_s},
        )


def _preferred(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stream marked default, else the first."""
    for s in streams:
        if (s.get("disposition") or {}).get("default"):
            return s
    return streams[0] if streams else None


def _is_still(video: dict[str, Any], container: str) -> bool:
    # Image demuxers are named "<codec>_pipe" (png_pipe, jpeg_pipe, webp_pipe...), or
    # image2 when chosen by file extension; a one-frame GIF/APNG is a still too.
    if container.endswith("_pipe") or container in {"image2", "image2pipe"}:
        return True
    codec = str(video.get("codec_name"))
    return codec in _IMAGE_CODECS and str(video.get("nb_frames")) in {"1", "0"}


def _layout(audio: dict[str, Any]) -> str | None:
    layout = str(audio.get("channel_layout") or "")
    return None if layout in ("", "unknown") else layout


def _rotation(video: dict[str, Any]) -> int:
    for side in video.get("side_data_list") or []:
        if "rotation" in side:
            return round(float(side["rotation"])) % 360
    tag = (video.get("tags") or {}).get("rotate")
    return int(tag) % 360 if tag and str(tag).lstrip("-").isdigit() else 0


def _rate(text: object) -> float | None:
    if not text or not isinstance(text, str) or "/" not in text:
        return None
    num, den = text.split("/", 1)
    try:
        value = float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) and 0 < value < 1000 else None


def _aspect(text: object) -> float:
    if not isinstance(text, str) or ":" not in text:
        return 1.0
    num, den = text.split(":", 1)
    try:
        value = float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return 1.0
    return value if math.isfinite(value) and 0.1 < value < 10 else 1.0


def _span(fmt: dict[str, Any], stream: dict[str, Any]) -> tuple[float, float] | None:
    """Where `stream` lies on the file's time line (0 = the file's start), from its own
    declared length (mp4: `duration`; Matroska: the `DURATION` tag); None when it
    declares none."""
    origin = _number(fmt.get("start_time"))
    begin = max(0.0, _number(stream.get("start_time")) - origin)
    length = _seconds(stream.get("duration"))
    if length is not None:
        return (begin, begin + length)
    tag = _clock((stream.get("tags") or {}).get("DURATION"))
    if tag is None:
        return None
    # ffmpeg's Matroska muxer writes the stream's end time in this tag (and the file's
    # end time as its duration), not a length: a track that starts late, or a file whose
    # timestamps do not start at 0, would otherwise seem to run past the file's end.
    file_end = _seconds(fmt.get("duration"))
    if file_end is not None and begin + tag > file_end - origin + 0.5:
        return (begin, max(begin, tag - origin))
    return (begin, begin + tag)


def _seconds(text: object) -> float | None:
    """A positive length, or None."""
    value = _number(text)
    return value if value > 0 else None


def _number(text: object) -> float:
    """ffprobe's number (a time may be negative: encoder priming), 0 when absent."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _clock(text: object) -> float | None:
    """ "01:02:03.500000000" → 3723.5."""
    if not isinstance(text, str) or text.count(":") != 2:
        return None
    hours, minutes, seconds = text.split(":")
    try:
        value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _duration(fmt: dict[str, Any], streams: list[dict[str, Any]]) -> float | None:
    candidates = [fmt.get("duration")] + [s.get("duration") for s in streams]
    values: list[float] = []
    for c in candidates:
        try:
            v = float(c)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(v) and v > 0:
            values.append(v)
    return max(values) if values else None
