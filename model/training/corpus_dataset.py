"""A generated corpus's split as training samples (`python -m model.corpus make`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from model.config import ModelConfig
from model.corpus.clip_info import CorpusClipInfo
from model.corpus.errors import ManifestError
from model.corpus.manifest import TRAINING_FIELDS, iter_manifest
from model.media import MediaInfo, MediaLimits, VideoAugment
from model.training.clip_dataset import ClipDataset, ClipItem
from model.training.errors import DatasetError
from model.transcripts import read_transcript

Split = Literal["train", "val", "test"]


class CorpusDataset(ClipDataset):
    """Clips of a generated corpus, one split.

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
            for row in read_training_manifest(root)
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


def read_training_manifest(corpus_dir: str | Path) -> list[dict[str, Any]]:
    """The training fields of every manifest row (the others are dropped here)."""
    try:
        return [
            {k: row[k] for k in TRAINING_FIELDS}
            for row in iter_manifest(corpus_dir, required=TRAINING_FIELDS)
        ]
    except ManifestError as exc:
        raise DatasetError(str(exc)) from exc
