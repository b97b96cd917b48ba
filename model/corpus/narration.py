"""Narrations: varied wording of a scene, spoken with espeak-ng and placed in the track.

Wording varies the way narrators talk over a video: synonyms ("ball", "sphere"),
word order ("on a striped background, a big ball bounces"), filler openers ("okay so",
"here we have") and one to three sentences. Every attribute a narration names is in the
scene it describes. Speech uses only en-us voices (the recogniser is an en-us model).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from model.corpus.errors import ToolError
from model.corpus.world import Scene, SceneObject, article

SHAPE_WORDS = {
    "ball": ("ball", "ball", "sphere", "circle"),
    "cube": ("cube", "box", "block", "square"),
    "triangle": ("triangle", "triangle", "pyramid", "wedge"),
    "star": ("star", "star", "star shape"),
    "ring": ("ring", "ring", "donut", "hoop"),
}
COLOUR_WORDS = {
    "red": ("red", "red", "scarlet"),
    "orange": ("orange",),
    "yellow": ("yellow", "yellow", "golden"),
    "green": ("green", "green", "bright green"),
    "blue": ("blue", "blue", "bright blue"),
    "purple": ("purple", "purple", "violet"),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "big": ("big", "large", "huge")}
MOTION_ING = {
    "bouncing": ("bouncing", "bouncing up and down", "hopping"),
    "sliding": ("sliding", "sliding sideways", "gliding back and forth"),
    "floating": ("floating", "floating up and down", "drifting", "hovering"),
    "spinning": ("spinning", "spinning around", "rotating", "turning"),
}
MOTION_VERB = {
    "bouncing": ("bounces", "bounces up and down", "hops", "keeps bouncing"),
    "sliding": ("slides", "slides sideways", "glides back and forth"),
    "floating": ("floats", "floats up and down", "drifts", "hovers"),
    "spinning": ("spins", "spins around", "rotates", "keeps turning"),
}
BACKGROUND_NOUNS = {
    "checkered": ("a checkered background", "a checkerboard", "a checkered pattern"),
    "striped": ("a striped background", "stripes", "a striped pattern"),
    "noisy": ("a noisy background", "grainy static", "a grainy background"),
    "wavy": ("a wavy background", "waves", "a rippled background"),
    "dotted": ("a dotted background", "dots", "a spotted background", "polka dots"),
}
BACKGROUND_PATTERNS = {
    "checkered": ("a checkerboard pattern", "checkered squares"),
    "striped": ("stripes", "a striped pattern"),
    "noisy": ("grainy static", "noise"),
    "wavy": ("waves", "wavy lines"),
    "dotted": ("dots", "polka dots"),
}
BACKGROUND_ADJECTIVES = {
    "checkered": ("checkered",),
    "striped": ("striped",),
    "noisy": ("noisy", "grainy"),
    "wavy": ("wavy", "rippled"),
    "dotted": ("dotted", "spotted"),
}
PREPOSITIONS = ("on", "over", "against")
# Openers followed by a noun phrase ("so here we have a ball ...") ...
NOUN_OPENERS = (
    "here we have",
    "so here is",
    "okay here is",
    "you can see",
    "so we have",
    "now we have",
    "look there is",
    "there is",
)
# ... and openers followed by a whole clause ("okay, a ball bounces ...").
CLAUSE_OPENERS = ("", "", "so", "okay", "okay so", "alright", "now")
ALSO = ("there is also", "and also", "next to it", "we also have")
WATCH = ("watch how", "see how", "look how")
DEGREE = ("", "pretty", "quite", "really")

# espeak-ng voices: en-us with a few variants, all recognisable by an en-us recogniser.
VOICES = ("en-us", "en-us+m1", "en-us+m3", "en-us+m7")
SPEECH_RATE = 22050  # what espeak-ng writes; the same as sound.SAMPLE_RATE


@dataclass(frozen=True)
class Voice:
    name: str
    words_per_minute: int
    pitch: int  # espeak-ng -p, 0..99


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _noun_phrase(rng: np.random.Generator, obj: SceneObject, with_size: bool = True) -> str:
    words = [_pick(rng, SIZE_WORDS[obj.size])] if with_size else []
    words += [_pick(rng, COLOUR_WORDS[obj.colour]), _pick(rng, SHAPE_WORDS[obj.shape])]
    return f"{article(words[0])} {' '.join(words)}"


def _background_place(rng: np.random.Generator, scene: Scene) -> str:
    return f"{_pick(rng, PREPOSITIONS)} {_pick(rng, BACKGROUND_NOUNS[scene.background])}"


def _background_sentence(rng: np.random.Generator, scene: Scene) -> str:
    pronoun = "them" if len(scene.objects) > 1 else "it"
    form = int(rng.integers(3))
    if form == 0:
        return f"the background is {_pick(rng, BACKGROUND_ADJECTIVES[scene.background])}"
    if form == 1:
        return f"behind {pronoun} you see {_pick(rng, BACKGROUND_NOUNS[scene.background])}"
    return f"and the background has {_pick(rng, BACKGROUND_PATTERNS[scene.background])}"


def _one_object(rng: np.random.Generator, scene: Scene) -> list[str]:
    obj = scene.objects[0]
    np_open, cl_open = _pick(rng, NOUN_OPENERS), _pick(rng, CLAUSE_OPENERS)
    ing, verb = _pick(rng, MOTION_ING[obj.motion]), _pick(rng, MOTION_VERB[obj.motion])
    template = int(rng.integers(8))
    if template == 0:
        return [_join(np_open, _noun_phrase(rng, obj), ing, _background_place(rng, scene))]
    if template == 1:
        return [_join(cl_open, _noun_phrase(rng, obj), "is", ing, _background_place(rng, scene))]
    if template == 2:
        return [_join(cl_open, _noun_phrase(rng, obj), verb, _background_place(rng, scene))]
    if template == 3:  # the place first
        return [_join(_background_place(rng, scene), _noun_phrase(rng, obj), verb)]
    if template == 4:
        return [
            _join(np_open, _noun_phrase(rng, obj)),
            f"it is {ing}",
            _background_sentence(rng, scene),
        ]
    if template == 5:  # size said on its own
        size = _join(_pick(rng, DEGREE), _pick(rng, SIZE_WORDS[obj.size]))
        return [
            _join(np_open, _noun_phrase(rng, obj, with_size=False)),
            f"it is {size} and it {verb}",
            _background_sentence(rng, scene),
        ]
    if template == 6:
        return [
            _join(np_open, _noun_phrase(rng, obj), _background_place(rng, scene)),
            f"{_pick(rng, WATCH)} it {verb}",
        ]
    # template 7: attributes after the noun
    shape = _pick(rng, SHAPE_WORDS[obj.shape])
    size, colour = _pick(rng, SIZE_WORDS[obj.size]), _pick(rng, COLOUR_WORDS[obj.colour])
    first, second = (size, colour) if rng.random() < 0.5 else (colour, size)
    return [
        _join(cl_open, f"the {shape} here is {first} and {second}"),
        f"it {verb} {_background_place(rng, scene)}",
    ]


def _two_objects(rng: np.random.Generator, scene: Scene) -> list[str]:
    a, b = (scene.objects[0], scene.objects[1])
    if rng.random() < 0.5:  # narrators name objects in either order
        a, b = b, a
    np_open, cl_open = _pick(rng, NOUN_OPENERS), _pick(rng, CLAUSE_OPENERS)
    template = int(rng.integers(4))
    if template == 0:
        return [
            _join(
                np_open,
                _noun_phrase(rng, a),
                _pick(rng, MOTION_ING[a.motion]),
                "and",
                _noun_phrase(rng, b),
                _pick(rng, MOTION_ING[b.motion]),
                _background_place(rng, scene),
            )
        ]
    if template == 1:
        return [
            _join(
                np_open,
                _noun_phrase(rng, a),
                _pick(rng, MOTION_ING[a.motion]),
                _background_place(rng, scene),
            ),
            _join(_pick(rng, ALSO), _noun_phrase(rng, b), _pick(rng, MOTION_ING[b.motion])),
        ]
    if template == 2:
        return [
            _join(cl_open, _noun_phrase(rng, a), _pick(rng, MOTION_VERB[a.motion])),
            _join("and", _noun_phrase(rng, b), _pick(rng, MOTION_VERB[b.motion])),
            _background_sentence(rng, scene),
        ]
    return [
        _join(
            cl_open,
            _noun_phrase(rng, a),
            _pick(rng, MOTION_VERB[a.motion]),
            "and",
            _noun_phrase(rng, b),
            _pick(rng, MOTION_VERB[b.motion]),
        ),
        _background_sentence(rng, scene),
    ]


def compose(rng: np.random.Generator, scene: Scene) -> list[str]:
    """One to three sentences describing `scene`, capitalised and with a full stop."""
    raw = _one_object(rng, scene) if len(scene.objects) == 1 else _two_objects(rng, scene)
    return [s[0].upper() + s[1:] + "." for s in raw]


def pick_voice(rng: np.random.Generator, n_words: int) -> Voice:
    # Long narrations are spoken a little faster, so clips stay a few seconds long.
    base = 160 if n_words < 12 else 175
    return Voice(
        name=_pick(rng, VOICES),
        words_per_minute=int(base + rng.integers(0, 21)),
        pitch=int(rng.integers(35, 61)),
    )


def _phrase_words() -> Iterator[str]:
    tables = (SHAPE_WORDS, COLOUR_WORDS, SIZE_WORDS, MOTION_ING, MOTION_VERB)
    for table in (*tables, BACKGROUND_NOUNS, BACKGROUND_PATTERNS, BACKGROUND_ADJECTIVES):
        for options in table.values():
            for option in options:
                yield from option.split()
    for options in (PREPOSITIONS, NOUN_OPENERS, CLAUSE_OPENERS, ALSO, WATCH, DEGREE):
        for option in options:
            yield from option.split()
    fixed = "a an the and it is here them behind you see background has"
    yield from fixed.split()


def narration_vocabulary() -> list[str]:
    """Every word a narration can contain (lowercase), e.g. for a recogniser's dictionary."""
    return sorted({w for w in _phrase_words() if re.fullmatch(r"[a-z]+", w)})


def espeak_version() -> str:
    try:
        out = subprocess.run(
            ["espeak-ng", "--version"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"espeak-ng is needed for narrations and did not run: {exc}") from exc
    return out.split(" Data at")[0].strip()


def require_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        raise ToolError(
            "espeak-ng is not installed: narrations are spoken with it "
            "(install the Debian package 'espeak-ng', or run `make system-deps`)"
        )


def speak(sentence: str, voice: Voice) -> np.ndarray:
    """espeak-ng's speech for one sentence, float32 at SPEECH_RATE, silence trimmed."""
    command = [
        "espeak-ng",
        "--stdout",
        "-v",
        voice.name,
        "-s",
        str(voice.words_per_minute),
        "-p",
        str(voice.pitch),
        sentence,
    ]
    try:
        done = subprocess.run(command, capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"espeak-ng failed on {sentence!r}: {exc}") from exc
    # --stdout writes a 44-byte WAV header with placeholder sizes, then 16-bit mono PCM.
    pcm = np.frombuffer(done.stdout[44 : 44 + (len(done.stdout) - 44) // 2 * 2], np.int16)
    samples = pcm.astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    if loud.size == 0:
        raise ToolError(f"espeak-ng produced silence for {sentence!r}")
    return samples[loud[0] : loud[-1] + 1]
