"""The unseen world's sounds: one timbre per shape, pitched in the colour's register.

Six timbres, none of them the corpus's (boing, wood knock, metal-bar bell, FM chime,
square-wave buzz):
- whistle (crescent): a sine with a small upward scoop, 5.5 Hz vibrato and breath noise;
- twang (arrow): a plucked string, harmonics from a pluck near the end, the higher ones
  dying sooner, starting a little sharp;
- rattle (cross): a burst of 25-32 uneven clicks a second, each a short ping at the pitch;
- drum (heart): a tuned membrane, its inharmonic modes (1, 1.59, 2.14, 2.30, 2.65)
  with a quick pitch drop and a noise slap;
- clang (diamond): a gong, slowly beating inharmonic partials that ring for over a
  second with a shimmer;
- honk (hexagon): a short reedy horn note, all harmonics with a growl at 30 Hz.
In every timbre the fundamental is the strongest partial, so the peak of a clip's
spectrum away from the speech is its pitch (the colour's register).

Notes fall at a per-clip rhythm (`ClipPlan.onsets_s`); the narrator is mixed on top by
`model.corpus.sound.mix`, the effects ducked under speech as in the corpus.
"""

from __future__ import annotations

import numpy as np

from model.corpus.sound import (
    ROOM_NOISE_RMS,
    SAMPLE_RATE,
    _cycles,
    _normalise_peak,
    _sine,
)
from model.corpus.unseen.things import ClipPlan

NOTE_PEAK = 0.4  # peak of one note, like the corpus's big objects' hits
TOP_HZ = 9500.0  # partials above this are left out (no aliasing at 22.05 kHz)

_MEMBRANE = ((1.0, 1.0, 0.22), (1.59, 0.45, 0.12), (2.14, 0.3, 0.09), (2.30, 0.2, 0.08))
_MEMBRANE += ((2.65, 0.15, 0.06),)
_GONG = ((1.0, 1.0, 1.2), (1.52, 0.5, 0.7), (2.27, 0.35, 0.5), (2.93, 0.25, 0.35))
_GONG += ((3.61, 0.15, 0.25),)


def _time(seconds: float) -> np.ndarray:
    return np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _envelope(t: np.ndarray, attack: float, release: float) -> np.ndarray:
    end = t[-1] if t.size else 0.0
    return np.minimum(1.0, np.minimum(t / attack, (end - t) / release)).clip(0.0, 1.0)


def whistle(f0: float, rng: np.random.Generator) -> np.ndarray:
    t = _time(0.42)
    freq = f0 * (1 - 0.06 * np.exp(-t / 0.03)) * (1 + 0.012 * _sine(5.5 * t + rng.uniform()))
    breath = np.diff(rng.standard_normal(t.size + 1))  # white noise tilted up: airy
    x = _sine(_cycles(freq)) + 0.04 * _sine(2 * _cycles(freq)) + 0.05 * breath
    return x * _envelope(t, 0.03, 0.06)


def twang(f0: float, rng: np.random.Generator) -> np.ndarray:
    t = _time(0.9)
    bend = 1 + 0.03 * np.exp(-t / 0.05)
    x = np.zeros(t.size)
    for k in range(1, 13):
        partial = k * f0 * (1 + 0.0005 * k * k)  # a stiff string: a little inharmonic
        if partial > TOP_HZ:
            break
        weight = abs(np.sin(np.pi * k * 0.18)) / k
        decay = 0.5 / (1 + 0.6 * (k - 1))
        x += weight * _sine(_cycles(partial * bend) + rng.uniform()) * np.exp(-t / decay)
    return x * np.minimum(1.0, t / 0.002)


def rattle(f0: float, rng: np.random.Generator) -> np.ndarray:
    length = 0.36
    t = _time(length)
    x = np.zeros(t.size)
    rate = rng.uniform(25, 32)
    times = np.arange(0, length - 0.04, 1 / rate)
    times += rng.uniform(-0.3, 0.3, times.size) / rate  # uneven, like a real rattle
    click_t = _time(0.05)
    tau = max(0.008, 6.0 / f0)  # each click rings for a few cycles of the pitch
    for when in times:
        start = max(0, round(when * SAMPLE_RATE))
        pitch = f0 * (1 + rng.uniform(-0.01, 0.01))
        click = _sine(pitch * click_t + rng.uniform()) * np.exp(-click_t / tau)
        click += 0.3 * rng.standard_normal(click_t.size) * np.exp(-click_t / 0.0015)
        end = min(t.size, start + click.size)
        x[start:end] += rng.uniform(0.5, 1.0) * click[: end - start]
    return x * _envelope(t, 0.01, 0.08)


def drum(f0: float, rng: np.random.Generator) -> np.ndarray:
    t = _time(0.6)
    drop = 1 + 0.3 * np.exp(-t / 0.02)
    x = np.zeros(t.size)
    for ratio, weight, decay in _MEMBRANE:
        if ratio * f0 > TOP_HZ:
            break
        x += weight * _sine(_cycles(ratio * f0 * drop)) * np.exp(-t / decay)
    x += 0.25 * rng.standard_normal(t.size) * np.exp(-t / 0.01)
    return x * np.minimum(1.0, t / 0.001)


def clang(f0: float, rng: np.random.Generator) -> np.ndarray:
    t = _time(1.6)
    x = np.zeros(t.size)
    for ratio, weight, decay in _GONG:
        if ratio * f0 > TOP_HZ:
            break
        beat = rng.uniform(1.0, 3.0)  # each partial is a pair a few Hz apart: it beats
        pair = _sine(ratio * f0 * t + rng.uniform()) + 0.6 * _sine((ratio * f0 + beat) * t)
        x += weight * pair * np.exp(-t / decay)
    shimmer = 1 + 0.15 * _sine(rng.uniform(4, 6) * t)
    return x * shimmer * np.minimum(1.0, t / 0.015)


def honk(f0: float, rng: np.random.Generator) -> np.ndarray:
    t = _time(0.3)
    freq = f0 * (1 - 0.03 * t / t[-1])  # sags a little
    c = _cycles(freq)
    x = np.zeros(t.size)
    for k in range(1, 16):
        if k * f0 > TOP_HZ:
            break
        weight = (1.0, 0.75, 0.6, 0.45)[k - 1] if k <= 4 else 1.6 / k
        x += weight * _sine(k * c + rng.uniform())
    growl = 1 + 0.25 * _sine(30 * t)
    return x * growl * _envelope(t, 0.015, 0.04)


TIMBRES = {
    "whistle": whistle,
    "twang": twang,
    "rattle": rattle,
    "drum": drum,
    "clang": clang,
    "honk": honk,
}


def note(sound: str, f0: float, rng: np.random.Generator) -> np.ndarray:
    """One note of `sound` at `f0`, peak 1, float32."""
    return _normalise_peak(TIMBRES[sound](f0, rng)).astype(np.float32)


def thing_sound(plan: ClipPlan, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """The thing's notes at the plan's onsets over faint room noise (no narration)."""
    out = rng.standard_normal(n_samples, dtype=np.float32) * ROOM_NOISE_RMS
    sound = plan.combination.sound
    for onset, pitch in zip(plan.onsets_s, plan.note_pitches, strict=True):
        one = note(sound, pitch, rng) * NOTE_PEAK * np.float32(rng.uniform(0.8, 1.0))
        start = round(onset * SAMPLE_RATE)
        if start >= n_samples:
            break
        end = min(n_samples, start + one.size)
        out[start:end] += one[: end - start]
    t = np.arange(n_samples) / SAMPLE_RATE
    fade = np.minimum(1.0, np.minimum(t, n_samples / SAMPLE_RATE - t) / 0.01)
    return (out * fade).astype(np.float32)  # no click at the ends
