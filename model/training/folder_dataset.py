"""A user's folder of videos as training samples, with transcripts from sidecars or ASR."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from model.atomic_files import write_atomic
from model.config import ModelConfig
from model.media import (
    MediaError,
    MediaInfo,
    MediaLimits,
    VideoAugment,
    decode_audio,
    read_media_info,
)
from model.media.decode_cache import ContentHashes, DecodeCacheError
from model.media.media_info import PROBE_VERSION
from model.training.clip_dataset import ClipDataset, ClipItem, quiet
from model.training.errors import DatasetError
from model.transcripts import (
    SIDECAR_SUFFIXES,
    FolderNames,
    Transcript,
    TranscriptError,
    read_transcript,
    sidecar_of,
)

log = logging.getLogger(__name__)


Transcribe = Callable[[np.ndarray, int], Transcript]


class FolderDataset(ClipDataset):
    """Every video file in a user's folder (recursively; hidden folders skipped).

    A transcript is taken from a same-stem sidecar (`talk.mp4` → `talk.vtt`, `.srt`
    or `.txt`, in any case; plain text spans the whole clip). Without one, `asr(waveform,
    sample_rate) -> Transcript` transcribes the sound once and the result is cached
    by content hash; with `asr=None` such a file trains without text. Files that
    are not video, are unreadable, or (with `require_audio`) have no sound are
    skipped and listed in `self.skipped` with the reason.

    `split`: "all", or "train"/"val" — a stable split by content hash with
    `val_fraction` of the files in "val". `cache_dir` defaults to FOLDER/.mmv-cache.
    """

    def __init__(
        self,
        folder: str | Path,
        config: ModelConfig,
        *,
        split: Literal["all", "train", "val"] = "all",
        val_fraction: float = 0.1,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        augment: bool | VideoAugment | None = None,
        num_positives: int | None = None,
        asr: Transcribe | None = None,
        asr_sample_rate: int = 16000,
        require_audio: bool = True,
        limits: MediaLimits | None = None,
        show_progress: bool | None = None,
    ) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise DatasetError(f"{root} is not a folder")
        cache = Path(cache_dir) if cache_dir is not None else root / ".mmv-cache"
        self.skipped: list[tuple[str, str]] = []
        self.asr_count = 0  # files transcribed by this process (not from the cache)
        self._listed: dict[Path, FolderNames] = {}
        items: list[ClipItem] = []
        hashes = ContentHashes(cache)
        _remove_older_probes(cache)
        files = _media_files(root)
        for path in tqdm(files, desc="scanning folder", unit="file", disable=quiet(show_progress)):
            rel = path.relative_to(root).as_posix()
            try:
                digest = hashes.of(path)
            except DecodeCacheError as exc:
                raise DatasetError(str(exc)) from exc
            if split != "all" and _split_of(digest, val_fraction) != split:
                continue
            try:
                info = _cached_media_info(path, digest, cache, limits)
            except MediaError as exc:
                self.skipped.append((rel, str(exc)))
                continue
            if info.kind != "video":
                self.skipped.append((rel, f"not a video ({info.kind})"))
                continue
            if require_audio and not info.has_audio:
                self.skipped.append((rel, "no sound track"))
                continue
            transcript = self._transcript(path, info, digest, cache, asr, asr_sample_rate, limits)
            items.append(ClipItem(rel, path, transcript, info.duration_s, digest))
        hashes.save()
        for rel, reason in self.skipped:
            log.info("skipped %s: %s", rel, reason)
        if not items:
            raise DatasetError(
                f"{root} has no usable video files for split '{split}' "
                f"({len(self.skipped)} skipped)"
            )
        self.root = root
        super().__init__(
            items,
            config,
            seed=seed,
            cache_dir=cache,
            augment=split != "val" if augment is None else augment,
            num_positives=num_positives,
            limits=limits,
            show_progress=show_progress,
        )

    def _transcript(
        self,
        path: Path,
        info: MediaInfo,
        digest: str,
        cache: Path,
        asr: Transcribe | None,
        sample_rate: int,
        limits: MediaLimits | None,
    ) -> Transcript | None:
        if path.parent not in self._listed:  # one listing a folder, not one a file
            self._listed[path.parent] = FolderNames.read(path.parent)
        sidecar = sidecar_of(path, self._listed[path.parent])
        if sidecar is not None:
            try:
                return read_transcript(sidecar, duration_s=info.duration_s)
            except TranscriptError as exc:
                self.skipped.append((sidecar.name, f"transcript ignored: {exc}"))
        if asr is None or not info.has_audio:
            return None
        cached = cache / "asr" / f"{digest}.vtt"
        if cached.is_file():
            transcript = read_transcript(cached)
        else:
            waveform = decode_audio(path, sample_rate=sample_rate, limits=limits, info=info)
            transcript = asr(waveform, sample_rate)
            self.asr_count += 1
            write_atomic(cached, transcript.to_vtt(), durable=False)
        transcript.source = "asr"
        return transcript if transcript else None


def _media_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in SIDECAR_SUFFIXES:
            continue
        files.append(path)
    return files


def _split_of(digest: str, val_fraction: float) -> str:
    return "val" if int(digest[:8], 16) / 0x1_0000_0000 < val_fraction else "train"


def _remove_older_probes(cache: Path) -> None:
    """Probes kept by earlier versions (`probe/`, `probe-v<k>/`) are never read again."""
    current = f"probe-v{PROBE_VERSION}"
    for old in (*cache.glob("probe-v*"), cache / "probe"):
        if old.is_dir() and old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def _cached_media_info(
    path: Path, digest: str, cache: Path, limits: MediaLimits | None
) -> MediaInfo:
    """ffprobe once per content: later datasets over the same folder read the result.
    Only successful probes are kept (a limit may change between runs)."""
    cached = cache / f"probe-v{PROBE_VERSION}" / f"{digest}.json"
    if cached.is_file():
        try:
            return MediaInfo.from_dict(json.loads(cached.read_text()))
        except (ValueError, TypeError):
            pass  # written by another version: read it again
    info = read_media_info(path, limits)
    write_atomic(cached, json.dumps(info.to_dict()), durable=False)
    return info
