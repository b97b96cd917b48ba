"""The world the corpus shows: attribute vocabularies, scenes, splits and held-out pairs.

A scene is one or two objects (shape, colour, size, motion) over a background. Every
value here is a pure function of (seed, kind, index), so an item looks the same
whichever worker builds it and however many workers there are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

GENERATOR_VERSION = "1.0"

SHAPES = ("ball", "cube", "triangle", "star", "ring")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
SIZES = ("small", "big")
MOTIONS = ("bouncing", "sliding", "floating", "spinning")
BACKGROUNDS = ("checkered", "striped", "noisy", "wavy", "dotted")

# Shape+colour pairs that never occur in train: val/test hold them for compositional
# zero-shot tests (each shape and each colour is still seen in train, just not together).
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("ball", "purple"),
    ("cube", "yellow"),
    ("triangle", "blue"),
    ("star", "green"),
    ("ring", "orange"),
)

Kind = Literal["clip", "audio", "still"]
Split = Literal["train", "val", "test"]
KINDS: tuple[Kind, ...] = ("clip", "audio", "still")
_KIND_CODES = {"clip": 1, "audio": 2, "still": 3}

# Each block of 10 consecutive items gets this pattern in a seeded order: exactly
# 80/10/10 over any whole number of blocks, and no split is empty from 10 items on.
SPLIT_PATTERN: tuple[Split, ...] = ("train",) * 8 + ("val", "test")

TWO_OBJECT_SHARE = 0.4
HELD_OUT_SHARE = 0.2  # share of val/test items with a held-out pair (train: none)

# Object radius as a fraction of the frame side: big stays ~13 px and small ~8 px at the
# model's 64 px crop.
RADIUS = {"small": 0.13, "big": 0.21}
FLOOR = 0.93  # where bouncing objects land, fraction of the frame height
PITCH_HZ = {"small": (480.0, 760.0), "big": (200.0, 320.0)}  # big sounds an octave lower
MIN_DURATION_S = 4.0
MAX_BASE_DURATION_S = 6.0
DURATION_STEP_S = 0.5  # whole video frames and whole audio samples at 8 fps / 22.05 kHz


class Purpose:
    """Independent random streams per item, so changing one stage never reshuffles another."""

    SPLIT = 0
    SCENE = 1
    NARRATION = 2
    SPEECH = 3
    RENDER = 4
    SOUND = 5
    DURATION = 6
    PLACEMENT = 7


def item_rng(seed: int, kind: Kind, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, _KIND_CODES[kind], index, purpose])


def item_id(kind: Kind, index: int) -> str:
    return f"{kind}-{index:06d}"


@dataclass(frozen=True)
class SceneObject:
    """One object and how it moves; positions are fractions of the frame (y grows down)."""

    shape: str
    colour: str
    size: str
    motion: str
    x: float  # centre at rest
    y: float  # centre at rest; for bouncing, the centre when it touches the floor
    rate: float  # bounces/s, slide cycles/s, float cycles/s or turns/s
    amplitude: float  # bounce height, half slide range or half float range
    phase: float  # position in the motion cycle at t = 0, in [0, 1)
    direction: int  # +1 or -1: spin direction, first slide direction
    tilt: float  # resting angle, radians
    pitch_hz: float  # base pitch of its sound

    @property
    def radius(self) -> float:
        return RADIUS[self.size]

    @property
    def held_out(self) -> bool:
        return (self.shape, self.colour) in HELD_OUT_PAIRS

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    background_rate: float  # wave speed of "wavy" (and its surf's swell), cycles/s

    @property
    def held_out(self) -> bool:
        return any(o.held_out for o in self.objects)


def split_of(seed: int, kind: Kind, index: int) -> Split:
    block, slot = divmod(index, len(SPLIT_PATTERN))
    order = item_rng(seed, kind, block, Purpose.SPLIT).permutation(len(SPLIT_PATTERN))
    return SPLIT_PATTERN[order[slot]]


def base_duration(seed: int, kind: Kind, index: int) -> float:
    """Length before narration is placed (narration may make a clip longer)."""
    rng = item_rng(seed, kind, index, Purpose.DURATION)
    raw = rng.uniform(MIN_DURATION_S, MAX_BASE_DURATION_S)
    return round(raw / DURATION_STEP_S) * DURATION_STEP_S


def scene_of(seed: int, kind: Kind, index: int) -> Scene:
    split = split_of(seed, kind, index)
    return sample_scene(item_rng(seed, kind, index, Purpose.SCENE), split)


def sample_scene(rng: np.random.Generator, split: Split) -> Scene:
    n_objects = 2 if rng.random() < TWO_OBJECT_SHARE else 1
    with_held_out = split != "train" and rng.random() < HELD_OUT_SHARE
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n_objects:
        if with_held_out and not pairs:
            pair = HELD_OUT_PAIRS[rng.integers(len(HELD_OUT_PAIRS))]
        else:
            pair = (SHAPES[rng.integers(len(SHAPES))], COLOURS[rng.integers(len(COLOURS))])
            # Held-out pairs come only through with_held_out (never in train, and in a
            # known share of val/test); two objects always differ in shape or colour.
            if pair in HELD_OUT_PAIRS or pair in pairs:
                continue
        pairs.append(pair)
    objects = [
        _place(rng, shape, colour, slot, n_objects) for slot, (shape, colour) in enumerate(pairs)
    ]
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return Scene(
        objects=tuple(sorted(objects, key=canonical_order)),
        background=background,
        background_rate=float(rng.uniform(0.3, 0.6)),
    )


def canonical_order(obj: SceneObject) -> tuple[int, int, int, int]:
    """Objects are listed in vocabulary order, so one scene has one description."""
    return (
        SHAPES.index(obj.shape),
        COLOURS.index(obj.colour),
        SIZES.index(obj.size),
        MOTIONS.index(obj.motion),
    )


def _place(
    rng: np.random.Generator, shape: str, colour: str, slot: int, n_objects: int
) -> SceneObject:
    size = SIZES[rng.integers(len(SIZES))]
    motion = MOTIONS[rng.integers(len(MOTIONS))]
    r = RADIUS[size]
    if n_objects == 1:
        x = 0.5 + rng.uniform(-0.06, 0.06)
    else:  # two objects share the frame: one left, one right
        x = (0.29, 0.71)[slot] + rng.uniform(-0.03, 0.03)
    floor_y = FLOOR - r
    if motion == "bouncing":
        rate = rng.uniform(0.7, 1.3)  # ≥ 3 model frames (4 fps) per bounce
        amplitude = min(rng.uniform(0.3, 0.45), floor_y - r - 0.04)
        y = floor_y
    elif motion == "sliding":
        amplitude = rng.uniform(0.2, 0.28) if n_objects == 1 else rng.uniform(0.09, 0.13)
        speed = rng.uniform(0.25, 0.6)  # frame widths per second
        rate = min(speed / (4 * amplitude), 1.0)  # ≤ 1 there-and-back per second
        y = min(rng.uniform(0.55, 0.75), floor_y)
    elif motion == "floating":
        amplitude = rng.uniform(0.1, 0.17)
        rate = rng.uniform(0.3, 0.6)
        y = float(
            np.clip(0.5 + rng.uniform(-0.04, 0.04), r + amplitude + 0.04, floor_y - amplitude)
        )
    else:  # spinning in place
        amplitude = 0.0
        rate = rng.uniform(0.2, 0.4)  # slow enough that 4 fps never aliases a turn
        y = rng.uniform(0.45, 0.6)
    low, high = PITCH_HZ[size]
    return SceneObject(
        shape=shape,
        colour=colour,
        size=size,
        motion=motion,
        x=float(x),
        y=float(y),
        rate=float(rate),
        amplitude=float(amplitude),
        phase=float(rng.uniform()),
        direction=int(rng.choice((-1, 1))),
        tilt=float(rng.uniform(0.0, 2 * math.pi)),
        pitch_hz=float(rng.uniform(low, high)),
    )


def describe(scene: Scene, kind: Kind = "clip") -> str:
    """The canonical description: one fixed wording, used as evaluation queries.

    It names what the medium shows: a clip everything, a sound no colour (colour is
    visual only), a still no motion.
    """
    parts = []
    for obj in scene.objects:
        words = [obj.size]
        if kind != "audio":
            words.append(obj.colour)
        words.append(obj.shape)
        if kind != "still":
            words.append(obj.motion)
        parts.append(f"{article(words[0])} {' '.join(words)}")
    return f"{' and '.join(parts)} on {article(scene.background)} {scene.background} background"


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def attributes(scene: Scene) -> dict[str, Any]:
    """Structured ground truth for the manifest (evaluation only)."""
    return {
        "objects": [o.to_json() for o in scene.objects],
        "background": scene.background,
        "background_rate": round(scene.background_rate, 4),
        "n_objects": len(scene.objects),
        "held_out": scene.held_out,
    }


def vocabularies() -> dict[str, list[str]]:
    return {
        "shape": list(SHAPES),
        "colour": list(COLOURS),
        "size": list(SIZES),
        "motion": list(MOTIONS),
        "background": list(BACKGROUNDS),
    }


def scene_from_attributes(attrs: dict[str, Any]) -> Scene:
    """Rebuild a Scene from a manifest row's `attributes` (e.g. to recompute hit times)."""
    names = [f.name for f in fields(SceneObject)]
    return Scene(
        objects=tuple(SceneObject(**{k: o[k] for k in names}) for o in attrs["objects"]),
        background=attrs["background"],
        background_rate=attrs["background_rate"],
    )
