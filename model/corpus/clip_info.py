"""What decoding needs to know of a generated corpus's clips, for one ffprobe per process.

Training (CorpusDataset) and evaluation (model.evaluation.eval_sets) both decode a
corpus's clips; this spares them an ffprobe per clip.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from model.corpus.errors import ManifestError
from model.corpus.manifest import read_corpus_info
from model.media import MediaInfo, MediaLimits, read_media_info

log = logging.getLogger(__name__)


class CorpusClipInfo:
    """The media info of a generated corpus's clips, one ffprobe per process.

    The generator encodes every clip with the settings corpus.json declares, so the first
    clip asked about is probed and checked against them, and every other clip gets its
    facts with its own duration (from the manifest) and size. ffprobe's start-up alone
    (~0.1 s: Debian's loads ~100 libraries) costs as much as decoding a clip, so this
    halves the time to fill the decode cache. Media info that disagrees with the declared
    settings, a duration the manifest lacks, or caller-set limits send every clip to its
    own probe. Safe to share between threads (a race only probes one clip more)."""

    def __init__(self, root: Path) -> None:
        self.declared = _declared_clip_encoding(root)
        self.template: MediaInfo | None = None

    def __call__(
        self, path: Path, duration_s: float | None, limits: MediaLimits | None = None
    ) -> MediaInfo:
        if self.declared is None or duration_s is None or limits is not None:
            return read_media_info(path, limits)
        template = self.template
        if template is None:
            info = read_media_info(path)
            if _matches_declared(info, self.declared, duration_s):
                self.template = info
            elif self.declared is not None:
                log.warning(
                    "%s does not match the encoding corpus.json declares: probing every clip",
                    path,
                )
                self.declared = None
            return info
        return replace(template.lasting(duration_s), size_bytes=path.stat().st_size)


def _declared_clip_encoding(root: Path) -> dict[str, Any] | None:
    try:
        declared = read_corpus_info(root).get("video")
    except ManifestError:
        return None
    return declared if isinstance(declared, dict) else None


def _matches_declared(info: MediaInfo, declared: dict[str, Any], duration_s: float) -> bool:
    """A probed clip is what the generator says it writes (and the manifest's duration is
    the file's): the facts other clips may then share."""
    return (
        info.kind == "video"
        and info.has_video
        and info.has_audio
        and info.video_stream is not None
        and info.audio_stream is not None
        and info.width == declared.get("width")
        and info.height == declared.get("height")
        and info.fps is not None
        and abs(info.fps - float(declared.get("fps") or 0)) < 1e-6
        and info.video_codec == declared.get("codec")
        and info.audio_codec == declared.get("audio_codec")
        and info.sample_rate == declared.get("audio_sample_rate")
        and info.pixel_aspect == 1.0
        and info.duration_s is not None
        and abs(info.duration_s - duration_s) < 0.05
    )
