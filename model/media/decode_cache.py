"""The decode cache: each media file decoded once, kept as .npy under a cache folder.

Decoding is the slow part of training and evaluation, so a file's decoded arrays are
kept in an entry folder named by the file's content hash (whatever the file is called),
the decode parameters and a cache version:

    CACHE/hashes.json                                   content hashes by (path, size, mtime)
    CACHE/decoded/ab/<hash>-fps4-side80-sr16000-v1/      "full": the whole file, for training
    CACHE/windows/ab/<hash>-fps4-t8-crop64-sr16000-nauto-v1/   "windows": load_windows' output

A "full" entry holds every frame at the model's frame rate, a little larger than the
crop (random crops need room), and all of the sound as int16: a training sample reads
the window it draws, one pread per array. A "windows" entry holds exactly what
`load_windows(path, config, n_windows, info)` returns (video uint8, audio float32,
starts), so evaluation and re-indexing read a file's windows instead of running ffmpeg.

An entry is built in a temporary folder and renamed into place (`publish_dir`): one
with its meta.json is complete. A parameter or version change names a new entry. An
array shorter than its header (a damaged disk, a copy cut short) raises
DecodeCacheError; a "windows" entry is then decoded again, while a training dataset
names it (ClipDataset).

The service removes a file's entries when its last item is deleted (`remove`), and
now and then those of files no item names (`sweep`: another host's deletes, entries of
example queries, builds cut short).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.atomic_files import publish_dir, write_atomic
from model.config import ModelConfig
from model.errors import ModelError
from model.media.decode import Clip, decode_full
from model.media.errors import MediaLimits
from model.media.media_info import MediaInfo
from model.media.windows import Windows, load_windows

log = logging.getLogger(__name__)

# Bump when an entry's arrays change meaning; the sweep removes entries of older ones.
# 2: a sound track that starts after the file does is decoded in its place, silence
# before it (it was decoded from 0 s).
FULL_VERSION = 2  # "full" entries
WINDOWS_VERSION = 2  # "windows" entries
META = "meta.json"  # written with the arrays: an entry with it is complete
KINDS = ("decoded", "windows")  # the folders entries live in, by kind
_VERSION_OF = {"decoded": FULL_VERSION, "windows": WINDOWS_VERSION}
_HASH_CHUNK = 1 << 20


class DecodeCacheError(ModelError):
    """A source file the cache cannot hash, or a cache entry that is damaged."""


def content_hash(path: str | Path) -> str:
    """SHA-256 of the file's bytes (hex): the cache key, whatever the file is called."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DecodeCacheError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


class ContentHashes:
    """Content hashes remembered by (path, size, mtime, inode, ctime) in CACHE/hashes.json, so a
    folder of large videos is not read in full at every start. Call save() when done."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.path = Path(cache_dir) / "hashes.json"
        self.entries: dict[str, list[Any]] = {}
        self.changed = False
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}  # unreadable memo: start again

    def of(self, path: Path) -> str:
        try:
            stat = path.stat()
        except OSError as exc:
            raise DecodeCacheError(f"cannot read {path}: {exc.strerror or exc}") from exc
        key = str(path.resolve())
        known = self.entries.get(key)
        # The inode and its change time too: a file replaced by a copy that kept size
        # and modification time (cp -p, rsync -a) is another file.
        seen = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
        if known and len(known) == 5 and known[:4] == seen:
            return str(known[4])
        digest = content_hash(path)
        self.entries[key] = [*seen, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            write_atomic(self.path, json.dumps(self.entries), durable=False)
            self.changed = False


@dataclass(frozen=True)
class NpyRows:
    """A C-order .npy file of the cache, read a slice of rows at a time.

    A training window needs 8 of a clip's frames and 2 s of its sound. Memory-mapping
    both files for every sample (three opens, a realpath and a header parse each) cost
    more than the bytes read; this parses the header once and reads rows with one pread.
    """

    path: Path
    offset: int  # where the data starts, after the header
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @classmethod
    def open(cls, path: Path) -> NpyRows:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # np.save writes 3.0 only for non-ASCII field names: never here
                raise DecodeCacheError(
                    f"{path}: .npy version {version} is not one the cache writes; delete it"
                )
            if fortran or dtype.hasobject or not shape:
                raise DecodeCacheError(f"{path}: not an array the decode cache writes; delete it")
            return cls(path, f.tell(), tuple(shape), dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self) -> np.ndarray:
        """The whole array."""
        return self.rows(0, self.shape[0])

    def rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, stop) clipped to the array, as a new array (may be shorter), or
        read into `out` (C-contiguous, exactly that many rows)."""
        start, stop = max(0, start), min(stop, self.shape[0])
        shape = (max(0, stop - start), *self.shape[1:])
        if out is None:
            out = np.empty(shape, dtype=self.dtype)
        elif out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out is {out.dtype} {out.shape}, rows are {self.dtype} {shape}")
        if out.size == 0:
            return out
        row_bytes = out[0].nbytes
        fd = os.open(self.path, os.O_RDONLY)
        try:
            got = os.preadv(fd, [memoryview(out).cast("B")], self.offset + start * row_bytes)
        finally:
            os.close(fd)
        if got != out.nbytes:
            raise DecodeCacheError(f"{self.path}: shorter than its header says; delete it")
        return out


# -- "full" entries: training ------------------------------------------------------------
@dataclass(frozen=True)
class FullDecode:
    """A file decoded whole: video uint8 [F, side, side, 3], audio int16 [S] or None."""

    video: NpyRows
    audio: NpyRows | None


# -- "windows" entries: evaluation and re-indexing ---------------------------------------
@dataclass(frozen=True)
class CachedWindows:
    """A "windows" entry, its arrays not read yet: `load()` gives the Windows."""

    video: NpyRows | None  # uint8 [N, T, H, W, 3]
    audio: NpyRows | None  # float32 [N, S]
    starts_s: np.ndarray
    info: MediaInfo

    def __len__(self) -> int:
        return len(self.starts_s)

    def load(self) -> Windows:
        return Windows(
            video=self.video.read() if self.video is not None else None,
            audio=self.audio.read() if self.audio is not None else None,
            starts_s=self.starts_s,
            info=self.info,
        )


class DecodeCache:
    """The entries under one cache folder. `decodes` counts the ffmpeg decodes this
    object ran (tests count them); everything else lives on disk, so any number of
    processes may share the folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.decodes = 0

    def has(self, entry: Path) -> bool:
        """Whether an entry folder is complete (it may still be damaged)."""
        return (entry / META).is_file()

    # -- full ---------------------------------------------------------------------------
    def full_entry(self, digest: str, *, fps: float, side: int, sample_rate: int) -> Path:
        params = f"fps{fps:g}-side{side}-sr{sample_rate}"
        return self.root / "decoded" / digest[:2] / f"{digest[:32]}-{params}-v{FULL_VERSION}"

    def full(
        self,
        path: Path,
        digest: str,
        *,
        fps: float,
        side: int,
        sample_rate: int,
        media_info: Callable[[], MediaInfo],
        limits: MediaLimits | None = None,
    ) -> FullDecode:
        """The whole file at `fps`, frames `side` pixels square, sound at `sample_rate`;
        decoded (and kept) on the first call. `media_info` is asked only then."""
        entry = self.full_entry(digest, fps=fps, side=side, sample_rate=sample_rate)
        if not self.has(entry):
            info = media_info()
            clip = decode_full(
                path,
                fps=fps,
                size=side,
                sample_rate=sample_rate if info.has_audio else None,
                limits=limits,
                info=info,
            )
            self.decodes += 1
            # Built aside, then renamed: a worker that dies half-way, or two workers
            # decoding the same file, never leave a half-written entry.
            publish_dir(
                entry, lambda tmp: _write_full(tmp, clip, path.name, fps, side, sample_rate)
            )
        meta = json.loads((entry / META).read_text())
        video = NpyRows.open(entry / "video.npy")
        audio = NpyRows.open(entry / "audio.npy") if meta["has_audio"] else None
        return FullDecode(video=video, audio=audio)

    # -- windows ------------------------------------------------------------------------
    def windows_entry(self, digest: str, config: ModelConfig, n_windows: int | None) -> Path:
        v = config.video
        count = "auto" if n_windows is None else str(n_windows)
        params = f"fps{v.fps:g}-t{v.frames}-crop{v.crop_size}-sr{config.audio.sample_rate}-n{count}"
        return self.root / "windows" / digest[:2] / f"{digest[:32]}-{params}-v{WINDOWS_VERSION}"

    def cached_windows(
        self,
        path: Path,
        config: ModelConfig,
        n_windows: int | None = None,
        info: MediaInfo | None = None,
        *,
        limits: MediaLimits | None = None,
        digest: str | None = None,
        parallel: int | None = None,
    ) -> CachedWindows:
        """The entry holding `load_windows(path, config, n_windows, info)`, decoded on
        the first call (and again if found damaged); its arrays are read on `load()`.
        `digest`: the file's content hash if known (else the file is read to hash it)."""
        entry = self.windows_entry(digest or content_hash(path), config, n_windows)
        if self.has(entry):
            try:
                return _open_windows(entry)
            except DecodeCacheError as exc:
                log.warning("decoding %s again: %s", path, exc)
                shutil.rmtree(entry, ignore_errors=True)
        windows = load_windows(path, config, n_windows, info, limits=limits, parallel=parallel)
        self.decodes += 1
        publish_dir(entry, lambda tmp: _write_windows(tmp, windows, path.name))
        return _open_windows(entry)

    def store_windows(
        self,
        digest: str,
        config: ModelConfig,
        n_windows: int | None,
        windows: Windows,
        source: str = "",
    ) -> Path:
        """Keep windows decoded elsewhere (the service decodes an upload once, for its
        embedding and its speech recognition) as the entry `cached_windows` would make."""
        entry = self.windows_entry(digest, config, n_windows)
        if not self.has(entry):
            publish_dir(entry, lambda tmp: _write_windows(tmp, windows, source))
        return entry

    # -- removal ------------------------------------------------------------------------
    def remove(self, digest: str) -> int:
        """Every entry of the file with this content hash (a deleted item's decoded
        frames and sound do not outlive it); returns how many went."""
        removed = 0
        for kind in KINDS:
            for entry in (self.root / kind / digest[:2]).glob(f"{digest[:32]}-*"):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    def sweep(self, in_use: Collection[str], older_than_s: float) -> tuple[int, int]:
        """Remove the entries of files whose content hash is not in `in_use`, those of
        an older cache version, and the leftovers of builds cut short, untouched for
        `older_than_s`: work under way is younger. Returns (entries, bytes) removed."""
        keep = {digest[:32] for digest in in_use}
        cutoff = time.time() - older_than_s
        entries = removed_bytes = 0
        for kind in KINDS:
            current = f"-v{_VERSION_OF[kind]}"
            for entry in (self.root / kind).glob("*/*"):
                if entry.name.split("-", 1)[0] in keep and entry.name.endswith(current):
                    continue
                try:
                    if entry.stat().st_mtime > cutoff:
                        continue
                    size = sum(f.stat().st_size for f in entry.iterdir())
                except FileNotFoundError:  # removed meanwhile (another process's sweep)
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                entries, removed_bytes = entries + 1, removed_bytes + size
        return entries, removed_bytes


def cached_windows(
    cache_dir: str | Path,
    path: str | Path,
    config: ModelConfig,
    n_windows: int | None = None,
    info: MediaInfo | None = None,
    *,
    limits: MediaLimits | None = None,
    content_hash: str | None = None,
) -> Windows:
    """`load_windows(path, config, n_windows, info)`, read from the decode cache under
    `cache_dir` (decoded and kept there the first time)."""
    cache = DecodeCache(cache_dir)
    entry = cache.cached_windows(
        Path(path), config, n_windows, info, limits=limits, digest=content_hash
    )
    return entry.load()


def _write_full(
    folder: Path, clip: Clip, source: str, fps: float, side: int, sample_rate: int
) -> None:
    np.save(folder / "video.npy", clip.video)
    if clip.audio is not None:
        pcm = np.round(np.clip(clip.audio, -1.0, 1.0) * 32767.0).astype(np.int16)
        np.save(folder / "audio.npy", pcm)
    meta = {
        "source": source,
        "frames": len(clip.video) if clip.video is not None else 0,
        "has_audio": clip.audio is not None,
        "fps": fps,
        "side": side,
        "sample_rate": sample_rate,
    }
    (folder / META).write_text(json.dumps(meta))


def _write_windows(folder: Path, windows: Windows, source: str) -> None:
    if windows.video is not None:
        np.save(folder / "video.npy", windows.video)
    if windows.audio is not None:
        np.save(folder / "audio.npy", windows.audio)
    np.save(folder / "starts_s.npy", windows.starts_s)
    meta = {
        "source": source,
        "windows": len(windows),
        "has_video": windows.video is not None,
        "has_audio": windows.audio is not None,
        "info": windows.info.to_dict(),
    }
    (folder / META).write_text(json.dumps(meta))


def _open_windows(entry: Path) -> CachedWindows:
    """A complete entry's arrays, their lengths checked against meta.json and the files'
    sizes against their headers (DecodeCacheError if not)."""
    try:
        meta = json.loads((entry / META).read_text())
        starts = NpyRows.open(entry / "starts_s.npy").read()
        video = _open_checked(entry / "video.npy", meta["windows"]) if meta["has_video"] else None
        audio = _open_checked(entry / "audio.npy", meta["windows"]) if meta["has_audio"] else None
        info = MediaInfo.from_dict(meta["info"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DecodeCacheError(f"{entry}: not a complete cache entry ({exc}); delete it") from exc
    if len(starts) != meta["windows"]:
        raise DecodeCacheError(f"{entry}: {len(starts)} starts for {meta['windows']} windows")
    return CachedWindows(video=video, audio=audio, starts_s=starts, info=info)


def _open_checked(path: Path, rows: int) -> NpyRows:
    array = NpyRows.open(path)
    expected = array.offset + int(np.prod(array.shape)) * array.dtype.itemsize
    if len(array) != rows or path.stat().st_size < expected:
        raise DecodeCacheError(f"{path}: shorter than its header says")
    return array
