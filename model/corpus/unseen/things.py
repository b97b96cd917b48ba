"""What the unseen world contains, and what each clip of it will be before it is made.

48 things: 6 emblem shapes × 8 colours. The shape fixes the timbre of the thing's sound
and the colour its pitch register, so the picture alone, the sound alone and the
narration each name both factors. None of the words that name a thing is a word of
the corpus's world (model/corpus/world.py) or of its narrations
(`model.corpus.narration.narration_vocabulary()`).

A clip is a pure function of (seed, combination, role, index): `plan_clip` draws its
motion, size, background, pitch, rhythm, sentence and voice from independent random
streams, so changing one stage never reshuffles another, and an upload looks the same
whichever worker makes it and however many clips the world has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.corpus.narration import Voice
from model.corpus.world import article

WORLD_VERSION = "1.0"

SHAPES = ("crescent", "arrow", "cross", "heart", "diamond", "hexagon")
# shape → the sound it makes (its timbre; see timbre.py)
SOUND_OF_SHAPE = {
    "crescent": "whistle",
    "arrow": "twang",
    "cross": "rattle",
    "heart": "drum",
    "diamond": "clang",
    "hexagon": "honk",
}
# sound → (third person, -ing form), for sentences and queries
SOUND_VERBS = {
    "whistle": ("whistles", "whistling"),
    "twang": ("twangs", "twanging"),
    "rattle": ("rattles", "rattling"),
    "drum": ("drums", "drumming"),
    "clang": ("clangs", "clanging"),
    "honk": ("honks", "honking"),
}
COLOUR_RGB = {
    "pink": (1.00, 0.55, 0.78),
    "teal": (0.00, 0.50, 0.50),
    "brown": (0.50, 0.29, 0.10),
    "white": (0.96, 0.96, 0.94),
    "black": (0.07, 0.07, 0.08),
    "lime": (0.62, 0.95, 0.12),
    "navy": (0.10, 0.14, 0.48),
    "cyan": (0.30, 0.88, 0.96),
}
COLOURS = tuple(COLOUR_RGB)
# colour → pitch register: 8 pitches from 200 Hz to 3 kHz equally spaced on the (HTK) mel
# scale, 5.2 bands apart on the model's 64-band mel scale at 16 kHz; with the per-clip
# jitter (±PITCH_JITTER) neighbours stay at least 4.5 bands apart.
LOWEST_HZ, HIGHEST_HZ = 200.0, 3000.0


def _mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _hz(mel: float) -> float:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


_MEL_STEP = (_mel(HIGHEST_HZ) - _mel(LOWEST_HZ)) / (len(COLOURS) - 1)
REGISTER_HZ = {c: round(_hz(_mel(LOWEST_HZ) + k * _MEL_STEP)) * 1.0 for k, c in enumerate(COLOURS)}
PITCH_JITTER = 0.04
NOTE_JITTER = 0.01
BACKGROUNDS = ("bricks", "clouds", "gradient", "zigzag", "grid")
PATHS = ("orbit", "figure-eight", "swing", "drift")
# espeak-ng en-us variants: two of the corpus's narrators and four it never used.
VOICES = ("en-us", "en-us+m1", "en-us+m2", "en-us+m5", "en-us+f2", "en-us+f4")

N_COMBINATIONS = len(SHAPES) * len(COLOURS)
MIN_DURATION_S = 4.0
DURATION_STEP_S = 0.5  # whole frames at 8 fps, whole samples at 22.05 kHz
SPEECH_START_S = (0.2, 0.8)
TAIL_S = (0.3, 0.7)
MAX_DURATION_S = 8.0  # enough for the longest sentence at the slowest voice
RADIUS = (0.15, 0.21)  # object radius, fraction of the frame side

Role = Literal["upload", "test"]
ROLES: tuple[Role, ...] = ("upload", "test")
_ROLE_CODES = {"upload": 1, "test": 2}
_WORLD_CODE = 0x5EE  # keeps these streams apart from the corpus's item_rng streams

# Sentences a narrator says over a clip; {a} is the article before the colour word.
SENTENCES = (
    "{a} {colour} {shape} {verb}",
    "here the {colour} {shape} is {ing}",
    "this {shape} is {colour} and it {verb}",
    "you can hear {a} {colour} {shape} {ing}",
    "{ing} away there goes the {colour} {shape}",
    "watch the {colour} {shape} as it {verb}",
    "now {a} {colour} {shape} that {verb} again and again",
    "look at this {colour} {shape} {ing}",
)
# What a user would type to find a thing: never a narration sentence.
QUERIES = (
    "{colour} {shape} {sound}",
    "{a_shape} {shape} in {colour} that {verb}",
    "{ing} {colour} {shape}",
)


class Purpose:
    """Independent random streams of one clip."""

    PATH = 0
    BACKGROUND = 1
    PITCH = 2
    RHYTHM = 3
    SENTENCE = 4
    VOICE = 5
    PLACEMENT = 6
    SOUND = 7
    NAME = 8
    TEXTURE = 9


@dataclass(frozen=True)
class Combination:
    """One thing of the world: its shape, colour and the sound they fix."""

    index: int
    shape: str
    colour: str

    @property
    def id(self) -> str:
        return f"{self.colour}-{self.shape}"

    @property
    def sound(self) -> str:
        return SOUND_OF_SHAPE[self.shape]

    @property
    def register_hz(self) -> float:
        return REGISTER_HZ[self.colour]

    @property
    def rgb(self) -> tuple[float, float, float]:
        return COLOUR_RGB[self.colour]

    def words(self) -> dict[str, str]:
        verb, ing = SOUND_VERBS[self.sound]
        return {
            "shape": self.shape,
            "colour": self.colour,
            "sound": self.sound,
            "verb": verb,
            "ing": ing,
            "a": article(self.colour),
            "a_shape": article(self.shape),
        }

    def queries(self) -> tuple[str, ...]:
        words = self.words()
        return tuple(q.format(**words) for q in QUERIES)


def combinations(n: int = N_COMBINATIONS) -> tuple[Combination, ...]:
    """The first `n` things in a fixed order that spreads over shapes and colours.

    Thing k has shape k mod 6 and colour (k + k div 24) mod 8: the first 24 are the pairs
    whose shape and colour indices have the same parity, the next 24 the others, so all
    48 pairs occur once; any first 8 or more cover every colour, any first 6 every shape.
    """
    if not 1 <= n <= N_COMBINATIONS:
        raise ValueError(f"the world has 1 to {N_COMBINATIONS} combinations, not {n}")
    return tuple(
        Combination(k, SHAPES[k % len(SHAPES)], COLOURS[(k + k // 24) % len(COLOURS)])
        for k in range(n)
    )


def clip_rng(
    seed: int, combination: int, role: Role, index: int, purpose: int
) -> np.random.Generator:
    return np.random.default_rng(
        [seed, _WORLD_CODE, combination, _ROLE_CODES[role], index, purpose]
    )


@dataclass(frozen=True)
class Motion:
    """Where the object is over time; positions are fractions of the frame (y down).

    orbit: an ellipse; figure-eight: a Lissajous 1:2 curve; swing: a pendulum arc that
    tilts the object with it; drift: a straight line from (x, y) by (ax, ay) over the
    clip. `rate` is cycles per second (drift: unused), `spin` radians per second."""

    path: str
    x: float
    y: float
    ax: float
    ay: float
    rate: float
    phase: float
    direction: int
    tilt: float
    spin: float

    def pose(self, t: np.ndarray, duration_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre x, centre y and angle (radians) at times t."""
        t = np.asarray(t, dtype=np.float64)
        theta = 2 * math.pi * (self.rate * t + self.phase)
        angle = self.tilt + self.spin * t
        if self.path == "orbit":
            x = self.x + self.ax * np.cos(theta) * self.direction
            y = self.y + self.ay * np.sin(theta)
        elif self.path == "figure-eight":
            x = self.x + self.ax * np.sin(theta) * self.direction
            y = self.y + self.ay * np.sin(2 * theta)
        elif self.path == "swing":
            swing = np.sin(theta) * self.direction
            x = self.x + self.ax * swing
            y = self.y - self.ay * swing**2  # lowest mid-swing, higher at both ends
            angle = angle - 0.35 * swing
        else:  # drift
            s = t / duration_s
            x = self.x + self.ax * s
            y = self.y + self.ay * s
        return x, y, angle


@dataclass(frozen=True)
class ClipPlan:
    """Everything one clip will be, except the speech samples and the exact length
    (both come from espeak-ng when the clip is built)."""

    combination: Combination
    role: Role
    index: int
    name: str  # file stem, opaque: the name does not give the thing away
    motion: Motion
    radius: float
    background: str
    pitch_hz: float
    period_s: float  # mean time between notes
    onsets_s: tuple[float, ...]  # note onsets up to MAX_DURATION_S
    note_pitches: tuple[float, ...]  # one per onset, jittered around pitch_hz
    sentence: str
    voice: Voice
    speech_start_s: float
    tail_s: float

    @property
    def folder(self) -> str:
        return "uploads" if self.role == "upload" else "tests"


def compose_sentence(rng: np.random.Generator, combination: Combination) -> str:
    template = SENTENCES[int(rng.integers(len(SENTENCES)))]
    text = template.format(**combination.words())
    return text[0].upper() + text[1:] + "."


def _motion(rng: np.random.Generator, radius: float) -> Motion:
    margin = 1.15 * radius + 0.03  # the centre stays this far inside the frame
    room = 0.5 - margin  # largest offset from the middle
    path = PATHS[int(rng.integers(len(PATHS)))]
    direction = int(rng.choice((-1, 1)))
    tilt = float(rng.uniform(-0.35, 0.35))
    spin = float(rng.choice((0.0, 0.0, rng.uniform(-0.6, 0.6))))
    phase = float(rng.uniform())
    rate = float(rng.uniform(0.15, 0.35))  # ≥ 11 model frames (4 fps) per cycle
    if path == "drift":
        x0, y0 = rng.uniform(margin, 1 - margin, 2)
        x1, y1 = rng.uniform(margin, 1 - margin, 2)
        return Motion(path, x0, y0, x1 - x0, y1 - y0, 0.0, phase, direction, tilt, spin)
    ax = float(rng.uniform(0.35, 1.0) * room)
    ay = float(rng.uniform(0.35, 1.0) * room)
    if path == "swing":  # the arc rises by ay at both ends: keep it inside the frame
        y = float(rng.uniform(0.5 - room + ay, 0.5 + room))
        x = float(rng.uniform(0.5 - room + ax, 0.5 + room - ax))
    else:
        x = float(rng.uniform(0.5 - room + ax, 0.5 + room - ax))
        y = float(rng.uniform(0.5 - room + ay, 0.5 + room - ay))
    return Motion(path, x, y, ax, ay, rate, phase, direction, tilt, spin)


def _name(seed: int, combination: Combination, role: Role, index: int) -> str:
    rng = clip_rng(seed, combination.index, role, index, Purpose.NAME)
    return f"{role}-{int(rng.integers(16**8)):08x}"


def plan_clip(seed: int, combination: Combination, role: Role, index: int) -> ClipPlan:
    def rng(purpose: int) -> np.random.Generator:
        return clip_rng(seed, combination.index, role, index, purpose)

    path_rng = rng(Purpose.PATH)
    radius = float(path_rng.uniform(*RADIUS))
    motion = _motion(path_rng, radius)
    background = BACKGROUNDS[int(rng(Purpose.BACKGROUND).integers(len(BACKGROUNDS)))]
    pitch = combination.register_hz * (1 + float(rng(Purpose.PITCH).uniform(-1, 1)) * PITCH_JITTER)
    rhythm = rng(Purpose.RHYTHM)
    period = float(rhythm.uniform(0.45, 0.8))
    onsets = [float(rhythm.uniform(0.05, 0.4))]
    while True:
        nxt = onsets[-1] + period * float(rhythm.uniform(0.8, 1.2))
        if nxt >= MAX_DURATION_S - 0.3:
            break
        onsets.append(nxt)
    notes = pitch * (1 + rhythm.uniform(-1, 1, len(onsets)) * NOTE_JITTER)
    voice_rng = rng(Purpose.VOICE)
    voice = Voice(
        name=VOICES[int(voice_rng.integers(len(VOICES)))],
        words_per_minute=int(voice_rng.integers(145, 186)),
        pitch=int(voice_rng.integers(30, 66)),
    )
    placement = rng(Purpose.PLACEMENT)
    return ClipPlan(
        combination=combination,
        role=role,
        index=index,
        name=_name(seed, combination, role, index),
        motion=motion,
        radius=radius,
        background=background,
        pitch_hz=round(pitch, 2),
        period_s=period,
        onsets_s=tuple(round(o, 4) for o in onsets),
        note_pitches=tuple(float(round(p, 2)) for p in notes),
        sentence=compose_sentence(rng(Purpose.SENTENCE), combination),
        voice=voice,
        speech_start_s=round(float(placement.uniform(*SPEECH_START_S)), 3),
        tail_s=float(placement.uniform(*TAIL_S)),
    )


def vocabulary() -> dict[str, list[str]]:
    """The words that name things, by factor (what world.json lists)."""
    return {
        "shape": list(SHAPES),
        "colour": list(COLOURS),
        "sound": [SOUND_OF_SHAPE[s] for s in SHAPES],
        "sound_verbs": [w for s in SHAPES for w in SOUND_VERBS[SOUND_OF_SHAPE[s]]],
        "background": list(BACKGROUNDS),
        "path": list(PATHS),
    }
