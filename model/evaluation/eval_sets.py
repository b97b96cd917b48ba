"""What an evaluation embeds: the decoded windows of a corpus's test clips, sound files
and probe-training clips, read from the corpus's decode cache.

Each file's windows are a "windows" entry of CORPUS/cache (model/media/decode_cache.py),
so evaluating many models on one corpus, or the same files in another set, decodes each
file once; a set is its files' windows concatenated in memory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.config import ModelConfig
from model.corpus import read_manifest
from model.corpus.clip_info import CorpusClipInfo
from model.evaluation.errors import EvalError
from model.media import MediaError
from model.media.decode_cache import (
    CachedWindows,
    ContentHashes,
    DecodeCache,
    DecodeCacheError,
    NpyRows,
)
from model.usable_cpus import usable_cpus

DEFAULT_CANDIDATES = 1000
PROBE_TRAIN_CLIPS = 2000  # single-object train clips the probes are fitted on


@dataclass
class EvalSet:
    """Decoded windows of some corpus items. Window w belongs to item owner[w].

    video uint8 [W, T, H, W, 3] or None; audio float32 [W, S] or None.
    """

    rows: list[dict[str, Any]]
    video: np.ndarray | None
    audio: np.ndarray | None
    owner: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def middle_frames(self) -> np.ndarray:
        """uint8 [N, H, W, 3]: the middle frame of each item's middle window."""
        assert self.video is not None
        firsts = np.searchsorted(self.owner, np.arange(len(self.rows)))
        counts = np.bincount(self.owner, minlength=len(self.rows))
        middle = firsts + counts // 2
        return np.asarray(self.video[middle, self.video.shape[1] // 2])


def load_eval_set(
    corpus: Path,
    cfg: ModelConfig,
    rows: list[dict[str, Any]],
    name: str,
    n_windows: int | None = None,
    progress: bool = True,
) -> EvalSet:
    """Windows of `rows` at `cfg`'s preprocessing: decoded once, then read from the cache.

    n_windows None: enough windows to cover each file (at most 10, the paper's count).
    `name` labels the progress bar.
    """
    cache_dir = corpus / "cache"
    cache = DecodeCache(cache_dir)
    paths = [corpus / row["path"] for row in rows]
    hashes = ContentHashes(cache_dir)
    try:
        digests = [hashes.of(path) for path in paths]
    except DecodeCacheError as exc:
        raise EvalError(f"cannot evaluate on {corpus}: {exc}") from exc
    hashes.save()
    clip_info = CorpusClipInfo(corpus)  # the corpus's clips need one ffprobe, not one each

    def one(i: int) -> CachedWindows:
        row, path = rows[i], paths[i]
        try:
            info = clip_info(path, row.get("duration_s")) if row["kind"] == "clip" else None
            return cache.cached_windows(path, cfg, n_windows, info, digest=digests[i], parallel=1)
        except (MediaError, DecodeCacheError) as exc:
            raise EvalError(f"cannot decode {row['path']} for evaluation: {exc}") from exc

    workers = min(4, usable_cpus())
    with ThreadPoolExecutor(workers) as pool:  # ffmpeg runs in its own processes
        entries = list(
            tqdm(
                pool.map(one, range(len(rows))),
                total=len(rows),
                desc=f"decoding {name}",
                unit="file",
                disable=not progress,
            )
        )
    owner = np.concatenate([np.full(len(e), i) for i, e in enumerate(entries)])
    videos = [e.video for e in entries if e.video is not None]
    audios = [e.audio for e in entries if e.audio is not None]
    return EvalSet(
        rows=rows,
        video=_concatenate(videos) if len(videos) == len(entries) else None,
        audio=_concatenate(audios) if len(audios) == len(entries) else None,
        owner=owner,
    )


def _concatenate(arrays: list[NpyRows]) -> np.ndarray:
    """The files' windows one after another, read straight into one array (a list of
    arrays and their concatenation would need twice the memory)."""
    out = np.empty((sum(len(a) for a in arrays), *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    at = 0
    for a in arrays:
        a.rows(0, len(a), out=out[at : at + len(a)])
        at += len(a)
    return out


@dataclass
class CorpusEval:
    """Everything one corpus contributes to an evaluation (shared by many models)."""

    corpus: Path
    split: str
    clips: EvalSet  # the retrieval candidates
    probe_train: EvalSet | None
    sounds: EvalSet | None
    stills: EvalSet | None = None  # the split's still images (each a description)


def prepare_corpus_eval(
    corpus: Path,
    cfg: ModelConfig,
    split: str = "test",
    candidates: int = DEFAULT_CANDIDATES,
    probe_train_clips: int = PROBE_TRAIN_CLIPS,
    progress: bool = True,
) -> CorpusEval:
    which = None if split == "all" else split
    if probe_train_clips > 0 and split in ("train", "all"):
        # The probes are fitted on training clips: scoring them on those would overstate them.
        raise EvalError(
            f"linear probes are fitted on training clips, so they cannot be scored on split "
            f"'{split}': evaluate on 'test' or 'val', or pass --probe-train 0"
        )
    clip_rows = read_manifest(corpus, kind="clip", split=which)
    if len(clip_rows) < candidates:
        raise EvalError(
            f"{corpus} has {len(clip_rows)} clips in split '{split}', fewer than the "
            f"{candidates} candidates asked for: generate a larger corpus or pass --candidates"
        )
    clips = load_eval_set(corpus, cfg, clip_rows[:candidates], f"{split}-clips", None, progress)
    probe_train = None
    if probe_train_clips > 0:
        train_rows = [
            r
            for r in read_manifest(corpus, kind="clip", split="train")
            if r["attributes"]["n_objects"] == 1
        ][:probe_train_clips]
        if train_rows:
            probe_train = load_eval_set(corpus, cfg, train_rows, "probe-train", 1, progress)
    sound_rows = read_manifest(corpus, kind="audio", split=which)
    sounds = None
    if len(sound_rows) >= 2:  # one sound alone would be found every time
        sounds = load_eval_set(corpus, cfg, sound_rows, f"{split}-sounds", None, progress)
    still_rows = read_manifest(corpus, kind="still", split=which)
    stills = None
    if len(still_rows) >= 2:
        stills = load_eval_set(corpus, cfg, still_rows, f"{split}-stills", None, progress)
    return CorpusEval(corpus, split, clips, probe_train, sounds, stills)
