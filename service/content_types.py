"""The content type a stored media file is served with, from what ffprobe found in it
(never from the client's claim or the file's name)."""

from __future__ import annotations

from model.media import MediaInfo

# ffprobe container name (first of its aliases) -> content type, per item kind.
_CONTENT_TYPES: dict[str, dict[str, str]] = {
    "mov": {"video": "video/mp4", "audio": "audio/mp4"},
    "matroska": {"video": "video/webm", "audio": "audio/webm"},
    "ogg": {"video": "video/ogg", "audio": "audio/ogg"},
    "avi": {"video": "video/x-msvideo"},
    "mpegts": {"video": "video/mp2t"},
    "mpeg": {"video": "video/mpeg", "audio": "audio/mpeg"},
    "flv": {"video": "video/x-flv"},
    "asf": {"video": "video/x-ms-asf", "audio": "audio/x-ms-wma"},
    "wav": {"audio": "audio/wav"},
    "mp3": {"audio": "audio/mpeg"},
    "flac": {"audio": "audio/flac"},
    "aac": {"audio": "audio/aac"},
    "aiff": {"audio": "audio/aiff"},
    "au": {"audio": "audio/basic"},
    "png_pipe": {"image": "image/png"},
    "apng": {"image": "image/apng"},
    "jpeg_pipe": {"image": "image/jpeg"},
    "webp_pipe": {"image": "image/webp"},
    "gif": {"image": "image/gif"},
    "bmp_pipe": {"image": "image/bmp"},
    "tiff_pipe": {"image": "image/tiff"},
}


# A picture container holds a moving picture (an animated GIF or APNG is a video item)
# and a video container a still (a one-frame mp4 is an image item): the container's
# type, whichever kind the item is. Sound is never served as a picture, nor the reverse.
_SAME_BYTES = {"video": "image", "image": "video"}


def content_type_of(info: MediaInfo) -> str:
    container = info.container.split(",")[0]
    by_kind = _CONTENT_TYPES.get(container, {})
    found = by_kind.get(info.kind) or by_kind.get(_SAME_BYTES.get(info.kind, ""))
    return found or "application/octet-stream"
