"""What each item of a corpus will be, decided before anything is drawn or heard.

A plan is cheap (no pixels, no samples): the split, the scene, the narration's words
and voice, and which clip the narration really describes. Plans depend only on
(seed, n, kind, index), which is what makes the corpus deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.corpus import narration
from model.corpus.world import (
    Kind,
    Purpose,
    Scene,
    Split,
    base_duration,
    item_id,
    item_rng,
    scene_of,
    split_of,
)

UNNARRATED_SHARE = 0.1  # AudioSet-like clips: no narration, video and sound only
MISALIGNED_SHARE = 0.2  # of narrated clips: the narration describes a neighbouring clip
NEIGHBOUR_REACH = 30  # how far to look for a neighbour in the same split


@dataclass(frozen=True)
class ItemPlan:
    id: str
    kind: Kind
    index: int
    split: Split
    scene: Scene
    base_duration_s: float
    sentences: tuple[str, ...] = ()  # empty: no narration
    voice: narration.Voice | None = None
    narration_of: str | None = None  # id of the clip the narration describes

    @property
    def narrated(self) -> bool:
        return bool(self.sentences)

    @property
    def aligned(self) -> bool:
        """False only when a narration describes another clip."""
        return self.narration_of in (None, self.id)


def plan_item(seed: int, n_clips: int, kind: Kind, index: int) -> ItemPlan:
    split = split_of(seed, kind, index)
    scene = scene_of(seed, kind, index)
    plan = ItemPlan(
        id=item_id(kind, index),
        kind=kind,
        index=index,
        split=split,
        scene=scene,
        base_duration_s=base_duration(seed, kind, index),
    )
    if kind != "clip":
        return plan
    rng = item_rng(seed, kind, index, Purpose.NARRATION)
    if rng.random() < UNNARRATED_SHARE:
        return plan
    described = index
    if rng.random() < MISALIGNED_SHARE:
        step = -1 if rng.random() < 0.5 else 1
        described = _neighbour(seed, n_clips, index, split, step)
        if described is None:
            described = _neighbour(seed, n_clips, index, split, -step)
        if described is None:  # too few clips in this split to misalign: stay aligned
            described = index
    described_scene = scene if described == index else scene_of(seed, kind, described)
    sentences = tuple(narration.compose(rng, described_scene))
    n_words = sum(len(s.split()) for s in sentences)
    voice = narration.pick_voice(item_rng(seed, kind, index, Purpose.SPEECH), n_words)
    return ItemPlan(
        id=plan.id,
        kind=kind,
        index=index,
        split=split,
        scene=scene,
        base_duration_s=plan.base_duration_s,
        sentences=sentences,
        voice=voice,
        narration_of=item_id(kind, described),
    )


def _neighbour(seed: int, n_clips: int, index: int, split: Split, step: int) -> int | None:
    """The nearest clip in generation order, one way, in the same split.

    Same split, so a train clip's narration never names a held-out pair and never
    leaks a test clip's words into training.
    """
    for k in range(1, NEIGHBOUR_REACH + 1):
        other = index + step * k
        if not 0 <= other < n_clips:
            return None
        if split_of(seed, "clip", other) == split:
            return other
    return None
