"""Training data: narrated clips → (frames, waveform, nearest narrations) samples.

Three ways in, one sample format:
- `CorpusDataset`: a folder made by `python -m model.corpus make` (manifest.jsonl);
- `FolderDataset`: a user's folder of video files with optional same-stem .vtt /
  .srt / .txt sidecars; a file without one is transcribed by an ASR callable (cached);
- `ClipDataset`: a list of `ClipItem`s from anywhere (the service's stored items).

A sample is one window of `config.clip_seconds`: its start is drawn at random in
training (temporal jitter) and is the middle window otherwise; its texts are the K
narrations nearest in time to the window's centre (MIL-NCE positives). Randomness
comes only from (seed, epoch, index), so a run is the same with 0 or 8 workers.

Decoding is the slow part, so each file is decoded once, whole, at the model's
frame rate and a little larger than the crop (random crops need room), and kept as
.npy under `cache_dir` keyed by the file's content hash and those parameters; later
epochs read the windows they need from the cache. Files longer than `cache_max_duration_s` are
decoded per window instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from model.atomic_files import publish_dir, write_atomic
from model.config import ModelConfig
from model.corpus.clip_info import CorpusClipInfo
from model.corpus.errors import ManifestError
from model.corpus.manifest import TRAINING_FIELDS, iter_manifest
from model.errors import ModelError
from model.media import (
    MediaError,
    MediaInfo,
    MediaLimits,
    VideoAugment,
    augment_clip,
    centre_clip,
    decode_audio,
    decode_clip,
    decode_full,
    pad_audio,
    pad_frames,
    read_media_info,
)
from model.transcripts import Transcript, TranscriptError, read_transcript

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the cached arrays change meaning
SIDECAR_SUFFIXES = (".vtt", ".srt", ".txt")  # in order of preference
_HASH_CHUNK = 1 << 20

Transcribe = Callable[[np.ndarray, int], Transcript]
Split = Literal["train", "val", "test"]


class DatasetError(ModelError, ValueError):
    """A corpus or folder that cannot be turned into a dataset."""


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class ClipItem:
    """One training file. transcript None: no narration (video-audio loss only)."""

    id: str
    path: Path
    transcript: Transcript | None = None
    duration_s: float | None = None
    content_hash: str | None = None  # computed by the dataset when None


def content_hash(path: str | Path) -> str:
    """SHA-256 of the file's bytes (hex): the cache key, whatever the file is called."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


class _HashMemo:
    """Content hashes remembered by (path, size, mtime) in cache_dir/hashes.json, so
    a folder of large videos is not read in full at every start."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / "hashes.json"
        self.entries: dict[str, list[Any]] = {}
        self.changed = False
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}  # unreadable memo: start again

    def hash(self, path: Path) -> str:
        try:
            stat = path.stat()
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
        key = str(path.resolve())
        known = self.entries.get(key)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return str(known[2])
        digest = content_hash(path)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            write_atomic(self.path, json.dumps(self.entries), durable=False)
            self.changed = False


@dataclass(frozen=True)
class _NpyRows:
    """A C-order .npy file in the decode cache, read a slice of rows at a time.

    A window needs 8 of a clip's frames and 2 s of its sound. Memory-mapping both files
    for every sample (three opens, a realpath and a header parse each) cost more than
    the bytes read; this parses the header once and reads a window with one pread.
    """

    path: Path
    offset: int  # where the data starts, after the header
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @classmethod
    def open(cls, path: Path) -> _NpyRows:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # np.save writes 3.0 only for non-ASCII field names: never here
                raise DatasetError(f"{path}: .npy version {version} is not one the cache writes")
            if fortran or dtype.hasobject or not shape:
                raise DatasetError(f"{path}: not an array the decode cache writes; delete it")
            return cls(path, f.tell(), tuple(shape), dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self) -> np.ndarray:
        """The whole array."""
        return self.rows(0, self.shape[0])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) clipped to the array, as a new array (may be shorter)."""
        start, stop = max(0, start), min(stop, self.shape[0])
        out = np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
        if out.size == 0:
            return out
        row_bytes = out[0].nbytes
        fd = os.open(self.path, os.O_RDONLY)
        try:
            got = os.preadv(fd, [memoryview(out).cast("B")], self.offset + start * row_bytes)
        finally:
            os.close(fd)
        if got != out.nbytes:
            raise DatasetError(f"{self.path}: shorter than its header says; delete it")
        return out


@dataclass(frozen=True)
class _Decoded:
    video: _NpyRows  # uint8 [F, C, C, 3]
    audio: _NpyRows | None  # int16 [S]


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
        self.augment: VideoAugment | None = (
            augment if isinstance(augment, VideoAugment) else VideoAugment() if augment else None
        )
        self.num_positives = num_positives or config.loss.num_positives
        self.limits = limits
        self.cache_max_duration_s = cache_max_duration_s
        # Decoded frames are a little larger than the crop in both modes, so the cache
        # serves training and evaluation alike.
        self.decode_side = (self.augment or VideoAugment()).decode_side(config.video.crop_size)
        self.decode_count = 0  # ffmpeg decodes run by this process (tests count them)
        self._infos: dict[int, MediaInfo] = {}
        self._headers: dict[int, _Decoded] = {}  # cache entries whose headers were read
        missing = [i for i, item in enumerate(items) if item.content_hash is None]
        hashed = list(items)
        memo = _HashMemo(self.cache_dir)
        for i in tqdm(missing, desc="hashing clips", unit="file", disable=_quiet(show_progress)):
            item = items[i]
            digest = memo.hash(item.path)
            hashed[i] = ClipItem(item.id, item.path, item.transcript, item.duration_s, digest)
        memo.save()
        self.items: list[ClipItem] = hashed

    def __len__(self) -> int:
        return len(self.items)

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
    def _window(
        self, index: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """(frames uint8 [T, C, C, 3], audio float32 [S], start_s, has_audio)."""
        item = self.items[index]
        if item.duration_s is not None and item.duration_s > self.cache_max_duration_s:
            return self._window_by_seeking(index, rng)
        state = rng.bit_generator.state
        try:
            return self._cached_window(self._decoded(index), rng)
        except FileNotFoundError:
            # The cache entry went away under a running dataset (someone cleared the
            # cache): decode the file again rather than fail the run, with the same draws.
            self._headers.pop(index, None)
            rng.bit_generator.state = state
            return self._cached_window(self._decoded(index), rng)

    def _cached_window(
        self, decoded: _Decoded, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float, bool]:
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

    def _window_by_seeking(
        self, index: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float, bool]:
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
        self.decode_count += 1
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
        item = self.items[index]
        assert item.content_hash is not None
        v = self.config.video
        params = f"fps{v.fps:g}-side{self.decode_side}-sr{self.config.audio.sample_rate}"
        key = f"{item.content_hash[:32]}-{params}-v{CACHE_VERSION}"
        return self.cache_dir / "decoded" / item.content_hash[:2] / key

    def _decoded(self, index: int) -> _Decoded:
        decoded = self._headers.get(index)
        if decoded is not None:
            return decoded
        folder = self.cache_path(index)
        if not (folder / "meta.json").is_file():
            self._decode_into(index, folder)
        meta = json.loads((folder / "meta.json").read_text())
        video = _NpyRows.open(folder / "video.npy")
        audio = _NpyRows.open(folder / "audio.npy") if meta["has_audio"] else None
        decoded = self._headers[index] = _Decoded(video=video, audio=audio)
        return decoded

    def _decode_into(self, index: int, folder: Path) -> None:
        item = self.items[index]
        info = self._info(index)
        clip = decode_full(
            item.path,
            fps=self.config.video.fps,
            size=self.decode_side,
            sample_rate=self.config.audio.sample_rate if info.has_audio else None,
            limits=self.limits,
            info=info,
        )
        self.decode_count += 1

        def write(tmp: Path) -> None:
            np.save(tmp / "video.npy", clip.video)
            if clip.audio is not None:
                pcm = np.round(np.clip(clip.audio, -1.0, 1.0) * 32767.0).astype(np.int16)
                np.save(tmp / "audio.npy", pcm)
            meta = {
                "source": item.path.name,
                "frames": len(clip.video) if clip.video is not None else 0,
                "has_audio": clip.audio is not None,
                "fps": self.config.video.fps,
                "side": self.decode_side,
                "sample_rate": self.config.audio.sample_rate,
            }
            (tmp / "meta.json").write_text(json.dumps(meta))

        # Built aside, then renamed: a worker that dies half-way, or two workers decoding
        # the same file, never leave a half-written entry.
        publish_dir(folder, write)


class CorpusDataset(ClipDataset):
    """Clips of a generated corpus (`python -m model.corpus make`), one split.

    Reads only `id, kind, split, path, transcript, duration_s` from manifest.jsonl
    (never descriptions or attributes: those are for evaluation). Only `clip` items
    (pictures and sound) are training samples; a clip without a transcript trains the
    video-audio loss only. `augment` defaults to True for the train split only;
    `cache_dir` defaults to DIR/cache.
    """

    def __init__(
        self,
        corpus_dir: str | Path,
        config: ModelConfig,
        split: Split = "train",
        *,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        augment: bool | VideoAugment | None = None,
        num_positives: int | None = None,
        limits: MediaLimits | None = None,
        show_progress: bool | None = None,
    ) -> None:
        root = Path(corpus_dir)
        self.root = root
        self.split = split
        items = [
            ClipItem(
                id=row["id"],
                path=root / row["path"],
                transcript=read_transcript(root / row["transcript"]) if row["transcript"] else None,
                duration_s=row["duration_s"],
            )
            for row in read_manifest(root)
            if row["kind"] == "clip" and row["split"] == split
        ]
        if not items:
            raise DatasetError(f"corpus {root} has no clips in split '{split}'")
        self._clip_info = CorpusClipInfo(root)  # one ffprobe per process, not per clip
        super().__init__(
            items,
            config,
            seed=seed,
            cache_dir=cache_dir if cache_dir is not None else root / "cache",
            augment=split == "train" if augment is None else augment,
            num_positives=num_positives,
            limits=limits,
            show_progress=show_progress,
        )

    def _info(self, index: int) -> MediaInfo:
        cached = self._infos.get(index)
        if cached is None:
            item = self.items[index]
            cached = self._clip_info(item.path, item.duration_s, self.limits)
            self._infos[index] = cached
        return cached


def read_manifest(corpus_dir: str | Path) -> list[dict[str, Any]]:
    """The training fields of every manifest row (the others are dropped here)."""
    try:
        return [
            {k: row[k] for k in TRAINING_FIELDS}
            for row in iter_manifest(corpus_dir, required=TRAINING_FIELDS)
        ]
    except ManifestError as exc:
        raise DatasetError(str(exc)) from exc


class FolderDataset(ClipDataset):
    """Every video file in a user's folder (recursively; hidden folders skipped).

    A transcript is taken from a same-stem sidecar (`talk.mp4` → `talk.vtt`, `.srt`
    or `.txt`; plain text spans the whole clip). Without one, `asr(waveform,
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
        quiet = _quiet(show_progress)
        items: list[ClipItem] = []
        memo = _HashMemo(cache)
        for path in tqdm(_media_files(root), desc="scanning folder", unit="file", disable=quiet):
            rel = path.relative_to(root).as_posix()
            digest = memo.hash(path)
            if split != "all" and _split_of(digest, val_fraction) != split:
                continue
            try:
                info = _cached_probe(path, digest, cache, limits)
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
        memo.save()
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
        for suffix in SIDECAR_SUFFIXES:
            sidecar = path.with_suffix(suffix)
            if sidecar.is_file():
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


def _cached_probe(path: Path, digest: str, cache: Path, limits: MediaLimits | None) -> MediaInfo:
    """Probe once per content: later datasets over the same folder read the result.
    Only successful probes are kept (a limit may change between runs)."""
    cached = cache / "probe" / f"{digest}.json"
    if cached.is_file():
        try:
            return MediaInfo.from_dict(json.loads(cached.read_text()))
        except (ValueError, TypeError):
            pass  # written by another version: read it again
    info = read_media_info(path, limits)
    write_atomic(cached, json.dumps(info.to_dict()), durable=False)
    return info


def _quiet(show_progress: bool | None) -> bool | None:
    return None if show_progress is None else not show_progress  # None: only on a terminal


# -- batches and loaders ------------------------------------------------------------------
def collate_batch(
    samples: Sequence[dict[str, Any]], tokenizer: TextEncoder, num_positives: int
) -> dict[str, Any]:
    """Stack samples into a batch for MMVLoss.

    video [B, T, H, W, 3], audio [B, S], text_ids / text_mask [B, K, L],
    positive_mask [B, K] (True where a narration is present and has at least one
    known token), has_text [B] (any positive), has_audio [B], start_s [B],
    ids list[str].
    K = num_positives; missing narrations are padded (and masked out).
    """
    k = num_positives
    texts: list[str] = []
    present: list[list[bool]] = []
    for sample in samples:
        own = list(sample["texts"][:k])
        texts.extend(own + [""] * (k - len(own)))
        present.append([True] * len(own) + [False] * (k - len(own)))
    ids, mask = tokenizer.encode(texts)
    b = len(samples)
    ids = ids.reshape(b, k, -1)
    mask = mask.reshape(b, k, -1)
    positive = torch.tensor(present, dtype=torch.bool).reshape(b, k) & mask.any(dim=-1)
    mask = mask & positive.unsqueeze(-1)
    return {
        "video": torch.stack([s["video"] for s in samples]),
        "audio": torch.stack([s["audio"] for s in samples]),
        "text_ids": ids,
        "text_mask": mask,
        "positive_mask": positive,
        "has_text": positive.any(dim=-1),
        "has_audio": torch.tensor([bool(s.get("has_audio", True)) for s in samples]),
        "start_s": torch.tensor([float(s.get("start_s", 0.0)) for s in samples]),
        "ids": [s["id"] for s in samples],
    }


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, epoch): a fresh permutation every epoch from (seed, epoch),
    sharded over `world_size` ranks (each rank gets the same number of samples).

    It lives in the main process and counts epochs itself, so persistent workers
    (which keep their own copy of the dataset) still see every epoch's randomness.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start_epoch: int = 0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = start_epoch

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        total = len(self) * self.world_size
        order = np.resize(order, total)  # repeats the first few to even out the ranks
        for index in order[self.rank :: self.world_size]:
            yield int(index), epoch


def make_loader(
    dataset: ClipDataset,
    batch_size: int,
    num_workers: int,
    seed: int,
    tokenizer: TextEncoder,
    num_positives: int | None = None,
    *,
    shuffle: bool = True,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
    start_epoch: int = 0,
    prefetch_factor: int | None = 2,
    multiprocessing_context: str | None = None,
) -> DataLoader[dict[str, Any]]:
    """A DataLoader over `dataset` with decoding in `num_workers` processes (kept
    alive between epochs). Every `iter(loader)` is a new epoch; batches are the same
    for any number of workers."""
    sampler = EpochSampler(
        len(dataset),
        seed=seed,
        shuffle=shuffle,
        rank=rank,
        world_size=world_size,
        start_epoch=start_epoch,
    )
    collate = functools.partial(
        collate_batch,
        tokenizer=tokenizer,
        num_positives=num_positives or dataset.num_positives,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )


def _worker_init(_worker_id: int) -> None:
    # One thread per worker: the workers are the parallelism; more threads contend
    # with the training step for the same cores.
    torch.set_num_threads(1)
