"""Media decoding with the system ffmpeg: what a file is (ffprobe), its video, audio and
images decoded to model inputs, windows over long files. Every ffmpeg process runs
with a timeout, CPU-time and memory limits and an output cap; bad input raises a typed
MediaError (see errors.py for the codes).

    info = read_media_info(path)            # what the file really is
    windows = load_windows(path, config)    # the model's windows over the file
    windows = cached_windows(cache_dir, path, config)  # the same, decoded once (decode_cache.py)
"""

from model.media.augment import VideoAugment, augment_clip, centre_clip
from model.media.decode import (
    Clip,
    decode_audio,
    decode_clip,
    decode_full,
    decode_image,
    decode_video,
    pad_audio,
    pad_frames,
)
from model.media.decode_cache import DecodeCache, DecodeCacheError, cached_windows
from model.media.errors import (
    DEFAULT_LIMITS,
    CPULimitExceeded,
    DecodeTimeout,
    FFmpegMissing,
    MediaError,
    MediaLimits,
    MediaTooLong,
    MemoryLimitExceeded,
    NoUsableStream,
    OutputTooLarge,
    TooManyPixels,
    UnreadableMedia,
    UnsupportedFormat,
)
from model.media.media_info import MediaInfo, MediaKind, read_media_info
from model.media.windows import Windows, default_window_count, load_windows, window_starts

__all__ = [
    "DEFAULT_LIMITS",
    "CPULimitExceeded",
    "Clip",
    "DecodeCache",
    "DecodeCacheError",
    "DecodeTimeout",
    "FFmpegMissing",
    "MediaError",
    "MediaInfo",
    "MediaKind",
    "MediaLimits",
    "MediaTooLong",
    "MemoryLimitExceeded",
    "NoUsableStream",
    "OutputTooLarge",
    "TooManyPixels",
    "UnreadableMedia",
    "UnsupportedFormat",
    "VideoAugment",
    "Windows",
    "augment_clip",
    "cached_windows",
    "centre_clip",
    "decode_audio",
    "decode_clip",
    "decode_full",
    "decode_image",
    "decode_video",
    "default_window_count",
    "load_windows",
    "pad_audio",
    "pad_frames",
    "read_media_info",
    "window_starts",
]
