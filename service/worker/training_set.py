"""What a training job learns from: the stored clips, split once and for all.

Every ready item with pictures and sound is a training clip, with its transcript (the
uploaded one or speech recognition's, timed); a clip without speech still teaches the
video-audio loss (MIL-NCE needs words). Sounds without pictures and pictures without
sound are left out: both losses pair video with something.

The validation slice is a fixed share of the clips chosen by a hash of each item's id,
so an item is in it for every job, never trained on by one job and validated on by the
next: `bucket(id) < VAL_PERCENT`. A small collection whose hash share falls short of
MIN_VAL clips borrows the lowest-bucket clips up to MIN_VAL, one whose share would leave
fewer than MIN_TRAIN to train on holds out fewer (never below MIN_VAL); at most MAX_VAL
clips are held out. The slice is recorded on the job (`data.val_ids`).

The set is fixed at a job's first claim: written to its run folder (`spec.json`, whole
or not at all) and read back by the training process and by a later claim. A set chosen
again for a job (its file torn by a crash) takes only the items the first claim saw
(`up_to_seq`), so it is the same set, less any clip deleted since.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from model.atomic_files import write_atomic
from model.transcripts import Transcript, TranscriptError, parse_transcript
from service.storage import Storage
from service.storage.rows import TrainingClip

VAL_PERCENT = 10
MIN_VAL = 4
MAX_VAL = 500
MIN_TRAIN = 16  # one batch of 16 at least: fewer negatives teach the contrastive losses little


class TrainingDataError(ValueError):
    """Too little stored data to train on; the message says what is missing."""


class TrainingSetFileError(ValueError):
    """A training set file that cannot be read (torn by a crash, or not one at all)."""


def bucket(item_id: str) -> int:
    """0..99, fixed for an item id (the validation split's hash)."""
    return int.from_bytes(hashlib.sha256(b"mmv-val:" + item_id.encode()).digest()[:4]) % 100


@dataclass(frozen=True)
class SpecClip:
    """One clip as the training process reads it (no database there)."""

    id: str
    path: str
    content_hash: str
    duration_s: float | None
    transcript_vtt: str | None

    def transcript(self) -> Transcript | None:
        if not self.transcript_vtt:
            return None
        try:
            parsed = parse_transcript(self.transcript_vtt, self.duration_s)
        except TranscriptError:  # stored by ingestion, so readable; never fail a job on it
            return None
        return parsed if parsed else None


@dataclass(frozen=True)
class TrainingSet:
    train: list[SpecClip]
    val: list[SpecClip]
    last_seq: int  # the newest item seen: later items count as new for auto retraining

    def describe(self) -> dict[str, Any]:
        """What the job records about its data."""
        narrated = sum(1 for c in self.train if c.transcript_vtt)
        return {
            "clips": len(self.train) + len(self.val),
            "train": len(self.train),
            "val": len(self.val),
            "train_narrated": narrated,
            "val_ids": [c.id for c in self.val],
            "val_rule": f"sha256 bucket of the item id < {VAL_PERCENT} of 100 "
            f"(at least {MIN_VAL}, at most {MAX_VAL})",
            "last_item_seq": self.last_seq,
        }

    def pinned(self, folder: Path) -> TrainingSet:
        """The same clips, each read from a hard link in `folder` (the job's run folder):
        an item deleted while the job runs takes its media file away, and a job that
        decodes its clips minutes after its claim would fail on it. A clip whose file is
        already gone is left out; where a link cannot be made (another filesystem), the
        clip is read from the media folder as before."""
        folder.mkdir(parents=True, exist_ok=True)

        def pin(clips: list[SpecClip]) -> list[SpecClip]:
            kept = []
            for clip in clips:
                link = folder / clip.content_hash
                try:
                    if not link.exists():
                        os.link(clip.path, link)
                    kept.append(replace(clip, path=str(link)))
                except FileNotFoundError:
                    continue  # deleted since the set was built
                except OSError:
                    kept.append(clip)
            return kept

        pinned = TrainingSet(pin(self.train), pin(self.val), self.last_seq)
        if not pinned.train or not pinned.val:
            raise TrainingDataError(
                "the clips to train on were deleted while the job started; start it again"
            )
        return pinned

    def write(self, path: Path) -> None:
        spec = {
            "train": [asdict(c) for c in self.train],
            "val": [asdict(c) for c in self.val],
            "last_seq": self.last_seq,
        }
        # Atomic: a worker killed mid-write must not leave half a file for the next claim.
        write_atomic(path, json.dumps(spec))

    @classmethod
    def read(cls, path: Path) -> TrainingSet:
        """TrainingSetFileError when `path` holds no whole training set."""
        try:
            spec = json.loads(path.read_text())
            return cls(
                [SpecClip(**c) for c in spec["train"]],
                [SpecClip(**c) for c in spec["val"]],
                int(spec["last_seq"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrainingSetFileError(
                f"the training set file {path} cannot be read ({type(exc).__name__}: {exc})"
            ) from exc


def _spec(clip: TrainingClip, media_dir: Path) -> SpecClip:
    return SpecClip(
        id=clip.id,
        path=str(media_dir / clip.content_hash),
        content_hash=clip.content_hash,
        duration_s=clip.duration_s,
        transcript_vtt=clip.transcript_vtt or clip.transcript,
    )


def build_training_set(
    storage: Storage, media_dir: Path, up_to_seq: int | None = None
) -> TrainingSet:
    """The stored clips, split into training and validation (see the module docstring);
    with `up_to_seq`, only the items up to that one. TrainingDataError when there are
    too few to train on."""
    clips = [
        c
        for c in storage.items.training_clips()
        if (media_dir / c.content_hash).is_file() and (up_to_seq is None or c.seq <= up_to_seq)
    ]
    ranked = sorted(clips, key=lambda c: (bucket(c.id), c.seq))
    held = [c for c in ranked if bucket(c.id) < VAL_PERCENT]
    if len(held) < MIN_VAL:
        held = ranked[:MIN_VAL]
    # A small collection whose hash share leaves too few to train on holds fewer out.
    held = held[: max(MIN_VAL, min(MAX_VAL, len(clips) - MIN_TRAIN))]
    val_ids = {c.id for c in held}
    train = [c for c in clips if c.id not in val_ids]
    if len(train) < MIN_TRAIN:
        raise TrainingDataError(
            f"training needs at least {MIN_TRAIN + MIN_VAL} stored clips with pictures and "
            f"sound ({MIN_TRAIN} to train on, {MIN_VAL} to validate); this collection has "
            f"{len(clips)}: upload more videos with a sound track"
        )
    return TrainingSet(
        train=[_spec(c, media_dir) for c in train],
        val=[_spec(c, media_dir) for c in sorted(held, key=lambda c: c.seq)],
        last_seq=storage.items.last_seq() if up_to_seq is None else up_to_seq,
    )
