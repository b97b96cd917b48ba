"""Training samples from clip files: narrated clips -> (frames, waveform, nearest narrations).

Three ways in, one sample format: `ClipDataset` takes a list of `ClipItem`s from
anywhere (the service's stored items); `CorpusDataset` (corpus_dataset.py) and
`FolderDataset` (folder_dataset.py) make that list from a generated corpus or a user's
folder of videos.

A sample is one window of `config.clip_seconds`: its start is drawn at random in
training (temporal jitter) and is the middle window otherwise; its texts are the K
narrations nearest in time to the window's centre (MIL-NCE positives). Randomness
comes only from (seed, epoch, index), so a run is the same with 0 or 8 workers.

Decoding is the slow part, so each file is decoded once, whole, at the model's frame
rate and a little larger than the crop, into the decode cache ("full" entries,
model/media/decode_cache.py); later epochs read the windows they need from it. Files
longer than `cache_max_duration_s` are decoded per window instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from model.config import ModelConfig
from model.media import (
    MediaInfo,
    MediaLimits,
    VideoAugment,
    augment_clip,
    centre_clip,
    decode_clip,
    pad_audio,
    pad_frames,
    read_media_info,
)
from model.media.decode_cache import ContentHashes, DecodeCache, DecodeCacheError, FullDecode
from model.training.errors import DatasetError
from model.transcripts import Transcript

Window = tuple[np.ndarray, np.ndarray, float, bool]  # frames, audio, start_s, has_audio


@dataclass(frozen=True)
class ClipItem:
    """One training file. transcript None: no narration (video-audio loss only)."""

    id: str
    path: Path
    transcript: Transcript | None = None
    duration_s: float | None = None
    content_hash: str | None = None  # computed by the dataset when None


class ClipDataset(Dataset[dict[str, Any]]):
    """Samples from a list of clip files (see the module docstring).

    `dataset[i]` or `dataset[(i, epoch)]` → dict(video float32 [T, H, W, 3] in [0, 1],
    audio float32 [S], texts list[str] (≤ K, nearest first), has_text bool,
    has_audio bool, start_s float (the window's start in the file), id str).
    `augment`: True (paper defaults), False (centre view) or a VideoAugment.
    """

    def __init__(
        self,
        items: Sequence[ClipItem],
        config: ModelConfig,
        *,
        seed: int = 0,
        cache_dir: str | Path,
        augment: bool | VideoAugment = True,
        num_positives: int | None = None,
        limits: MediaLimits | None = None,
        cache_max_duration_s: float = 900.0,
        show_progress: bool | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.cache_dir = Path(cache_dir)
        self.cache = DecodeCache(self.cache_dir)
        self.augment: VideoAugment | None = (
            augment if isinstance(augment, VideoAugment) else VideoAugment() if augment else None
        )
        self.num_positives = num_positives or config.loss.num_positives
        self.limits = limits
        self.cache_max_duration_s = cache_max_duration_s
        # Decoded frames are a little larger than the crop in both modes, so the cache
        # serves training and evaluation alike.
        self.decode_side = (self.augment or VideoAugment()).decode_side(config.video.crop_size)
        self.seek_decodes = 0  # windows of long files decoded by seeking, in this process
        self._infos: dict[int, MediaInfo] = {}
        self._headers: dict[int, FullDecode] = {}  # cache entries whose headers were read
        missing = [i for i, item in enumerate(items) if item.content_hash is None]
        hashed = list(items)
        hashes = ContentHashes(self.cache_dir)
        for i in tqdm(missing, desc="hashing clips", unit="file", disable=quiet(show_progress)):
            item = items[i]
            try:
                digest = hashes.of(item.path)
            except DecodeCacheError as exc:
                raise DatasetError(str(exc)) from exc
            hashed[i] = ClipItem(item.id, item.path, item.transcript, item.duration_s, digest)
        hashes.save()
        self.items: list[ClipItem] = hashed

    def __len__(self) -> int:
        return len(self.items)

    @contextmanager
    def centre_views(self) -> Iterator[None]:
        """Within it, items are centre views (no augmentation, the middle window), as the
        service and the evaluation see files: what the after-training fits read."""
        augment, self.augment = self.augment, None
        try:
            yield
        finally:
            self.augment = augment

    @property
    def decode_count(self) -> int:
        """ffmpeg decodes run by this process (tests count them)."""
        return self.cache.decodes + self.seek_decodes

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.items[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        frames, audio, start_s, has_audio = self._window(index, rng)
        size = self.config.video.crop_size
        if self.augment is not None:
            video = augment_clip(frames, size, self.augment, rng)
        else:
            video = centre_clip(frames, size)
        texts: list[str] = []
        if item.transcript is not None:
            centre = start_s + self.config.clip_seconds / 2
            texts = [s.text for s in item.transcript.nearest(centre, self.num_positives)]
        return {
            "video": video,
            "audio": torch.from_numpy(audio),
            "texts": texts,
            "has_text": bool(texts),
            "has_audio": has_audio,
            "start_s": start_s,
            "id": item.id,
        }

    # -- windows ----------------------------------------------------------------------
    def _window(self, index: int, rng: np.random.Generator) -> Window:
        """(frames uint8 [T, C, C, 3], audio float32 [S], start_s, has_audio)."""
        item = self.items[index]
        if item.duration_s is not None and item.duration_s > self.cache_max_duration_s:
            return self._window_by_seeking(index, rng)
        state = rng.bit_generator.state
        try:
            try:
                return self._cached_window(self._decoded(index), rng)
            except FileNotFoundError:
                # The cache entry went away under a running dataset (someone cleared the
                # cache): decode the file again rather than fail the run, with the same draws.
                self._headers.pop(index, None)
                rng.bit_generator.state = state
                return self._cached_window(self._decoded(index), rng)
        except DecodeCacheError as exc:  # a damaged entry: the user deletes it
            raise DatasetError(str(exc)) from exc

    def _cached_window(self, decoded: FullDecode, rng: np.random.Generator) -> Window:
        v = self.config.video
        samples = self.config.audio_samples
        last_start = max(0, len(decoded.video) - v.frames)
        if self.augment is not None:
            start_frame = int(rng.integers(0, last_start + 1))
        else:
            start_frame = last_start // 2
        frames = pad_frames(decoded.video.rows(start_frame, start_frame + v.frames), v.frames)
        start_s = start_frame / v.fps
        if decoded.audio is None:
            return frames, np.zeros(samples, dtype=np.float32), start_s, False
        first = round(start_s * self.config.audio.sample_rate)
        pcm = decoded.audio.rows(first, first + samples).astype(np.float32) / 32767.0
        return frames, pad_audio(pcm, samples), start_s, True

    def _window_by_seeking(self, index: int, rng: np.random.Generator) -> Window:
        item = self.items[index]
        info = self._info(index)
        clip_s = self.config.clip_seconds
        last_start = max(0.0, (info.duration_s or 0.0) - clip_s)
        start_s = float(rng.uniform(0, last_start)) if self.augment else last_start / 2
        clip = decode_clip(
            item.path,
            fps=self.config.video.fps,
            frames=self.config.video.frames,
            size=self.decode_side,
            sample_rate=self.config.audio.sample_rate if info.has_audio else None,
            start_s=start_s,
            limits=self.limits,
            info=info,
        )
        self.seek_decodes += 1
        assert clip.video is not None
        audio = clip.audio
        if audio is None:
            return clip.video, np.zeros(self.config.audio_samples, np.float32), start_s, False
        return clip.video, audio, start_s, True

    def _info(self, index: int) -> MediaInfo:
        if index not in self._infos:
            self._infos[index] = read_media_info(self.items[index].path, self.limits)
        return self._infos[index]

    # -- decode cache -----------------------------------------------------------------
    def cache_path(self, index: int) -> Path:
        """Folder of one file's decoded arrays: content hash + preprocessing params."""
        digest = self.items[index].content_hash
        assert digest is not None
        return self.cache.full_entry(
            digest,
            fps=self.config.video.fps,
            side=self.decode_side,
            sample_rate=self.config.audio.sample_rate,
        )

    def is_cached(self, index: int) -> bool:
        return self.cache.has(self.cache_path(index))

    def _decoded(self, index: int) -> FullDecode:
        decoded = self._headers.get(index)
        if decoded is None:
            item = self.items[index]
            assert item.content_hash is not None
            decoded = self._headers[index] = self.cache.full(
                item.path,
                item.content_hash,
                fps=self.config.video.fps,
                side=self.decode_side,
                sample_rate=self.config.audio.sample_rate,
                media_info=lambda: self._info(index),
                limits=self.limits,
            )
        return decoded


def quiet(show_progress: bool | None) -> bool | None:
    """tqdm's `disable` for a show_progress option (None: only on a terminal)."""
    return None if show_progress is None else not show_progress
