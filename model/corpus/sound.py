"""The sound track: each object's sound, the background's ambience, and the narrator.

What the sound carries (colour is visual only):
- shape → timbre: ball a pure boing, cube a woody knock, triangle a metal bell,
  star a bright FM chime, ring a hollow square-wave buzz;
- motion → when and how it sounds, from the same trajectories the renderer draws:
  bouncing hits at each floor contact, sliding ticks at a rate that follows its speed,
  floating hums at a pitch that follows its height, spinning whirrs with a swell each
  time the shape looks the same again (4 per turn for a cube, 5 for a star);
- size → big is louder and an octave lower;
- background → its ambience: checkered hum, striped wind, noisy hiss, wavy surf
  (swelling with the waves), dotted rain.
The narrator is mixed on top with the effects ducked under speech, as in an edited video.

Everything is synthesised at 22,050 Hz (espeak-ng's rate, and well above the 8 kHz the
model hears at 16 kHz); files are stored at 44,100 Hz like ordinary recordings: ffmpeg
resamples the clips' sound for aac, `upsample_2x` the audio-only wavs.
"""

from __future__ import annotations

import numpy as np

from model.corpus import motion
from model.corpus.world import Scene, SceneObject

SAMPLE_RATE = 22050  # synthesis rate
FILE_RATE = 44100  # rate of stored sound (aac in clips, wav items)
HIT_PEAK = {"small": 0.26, "big": 0.42}  # peak of one hit
TONE_RMS = {"small": 0.05, "big": 0.085}  # level of a continuous tone
AMBIENCE_RMS = 0.02
ROOM_NOISE_RMS = 0.003
SPEECH_RMS = 0.15  # narrator level: well above the effects, like a voice-over
SPEECH_LIMIT = 0.85  # the voice's rare peaks are rounded off (tanh) below this
DUCK_GAIN = 0.25  # effects level while the narrator speaks
DUCK_MARGIN_S = 0.08
TICK_GAIN = 0.55  # a slide tick relative to a bounce hit
# Turns after which a spinning shape looks the same: the ball's band, the ring's bead.
SYMMETRY = {"ball": 2, "cube": 4, "triangle": 3, "star": 5, "ring": 1}

# Inharmonic partials of a struck metal bar (ratios, weights, decay in seconds).
_BELL = ((1.0, 1.0, 0.5), (2.76, 0.6, 0.35), (5.40, 0.4, 0.25), (8.93, 0.25, 0.15))
_SQUARE = tuple((k, 1.0 / k) for k in (1, 3, 5, 7, 9))


def _cycles(freq: np.ndarray) -> np.ndarray:
    """Phase in cycles (float64, not wrapped) of a per-sample frequency track."""
    return np.cumsum(freq) / SAMPLE_RATE


def _sine(cycles: np.ndarray | float) -> np.ndarray:
    """sin(2π · cycles), wrapped first so float32 keeps its precision (float32 sin is
    ~10× faster than float64 here, and sines are most of the synthesis time)."""
    cycles = np.asarray(cycles)
    return np.sin((2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32))


def _normalise_peak(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x)))
    return x / peak if peak > 0 else x


def _normalise_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x * x)))
    return x / rms if rms > 0 else x


def hit(shape: str, f0: float, rng: np.random.Generator, short: bool = False) -> np.ndarray:
    """One percussive sound of `shape`, peak 1. `short`: the quicker tick of sliding."""
    decay = 0.4 if short else 1.0
    n = round(SAMPLE_RATE * (0.25 if short else 0.6))
    t = np.arange(n) / SAMPLE_RATE
    if shape == "ball":  # a boing: pitch drops onto f0
        c = _cycles(f0 * (1.0 + 0.8 * np.exp(-t / 0.025)))
        x = (_sine(c) + 0.2 * _sine(2 * c)) * np.exp(-t / (0.14 * decay))
    elif shape == "cube":  # a wood block: damped modes and a click of noise
        x = _sine(f0 * t) * np.exp(-t / (0.06 * decay))
        x += 0.5 * _sine(2.4 * f0 * t) * np.exp(-t / (0.03 * decay))
        x += 0.6 * rng.standard_normal(n) * np.exp(-t / 0.006)
    elif shape == "triangle":  # a struck metal bar
        x = sum(w * _sine(r * f0 * t) * np.exp(-t / (d * decay)) for r, w, d in _BELL)
    elif shape == "star":  # a bright FM chime whose brightness fades
        index = 4.0 * np.exp(-t / 0.1)
        x = _sine(f0 * t + index * _sine(f0 * t) / (2 * np.pi)) * np.exp(-t / (0.2 * decay))
    else:  # ring: a hollow square-wave pluck
        x = sum(w * _sine(k * f0 * t) for k, w in _SQUARE) * np.exp(-t / (0.18 * decay))
    attack = np.minimum(1.0, t / 0.002)
    return _normalise_peak(x * attack)


def tone(shape: str, freq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A continuous sound of `shape` following the per-sample pitch `freq`, RMS 1."""
    c = _cycles(freq)
    if shape == "ball":
        x = _sine(c) + 0.15 * _sine(2 * c)
    elif shape == "cube":  # a rattly band of close partials: a wooden rumble
        ratios = rng.uniform(0.85, 1.18, 5)
        offsets = rng.uniform(0, 1, 5)
        x = 0.6 * _sine(c) + sum(_sine(r * c + o) for r, o in zip(ratios, offsets, strict=True))
    elif shape == "triangle":
        x = sum(w * _sine(r * c) for r, w, _ in _BELL)
    elif shape == "star":
        x = _sine(c + 2.5 * _sine(c) / (2 * np.pi))
    else:
        x = sum(w * _sine(k * c) for k, w in _SQUARE)
    return _normalise_rms(x)


def object_sound(obj: SceneObject, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """The sound one object makes over the clip, synchronised with its motion (float32)."""
    out = np.zeros(n_samples, dtype=np.float32)
    duration = n_samples / SAMPLE_RATE
    t = np.arange(n_samples) / SAMPLE_RATE
    if obj.motion in ("bouncing", "sliding"):
        short = obj.motion == "sliding"
        gain = HIT_PEAK[obj.size] * (TICK_GAIN if short else 1.0)
        one = (hit(obj.shape, obj.pitch_hz, rng, short=short) * gain).astype(np.float32)
        for time in motion.hit_times(obj, duration):
            start = round(time * SAMPLE_RATE)
            end = min(n_samples, start + one.size)
            out[start:end] += one[: end - start]
    elif obj.motion == "floating":  # pitch follows height: up to half an octave each way
        freq = obj.pitch_hz * 2.0 ** (0.5 * motion.height(obj, t))
        out = tone(obj.shape, freq, rng) * TONE_RMS[obj.size]
    else:  # spinning: a whirr that swells each time the shape looks the same again
        turns = (motion.angle(obj, t) - obj.tilt) * obj.direction / (2 * np.pi)
        swell = 0.3 + 0.7 * (0.5 + 0.5 * _sine(SYMMETRY[obj.shape] * turns + 0.25))
        out = tone(obj.shape, np.full(n_samples, obj.pitch_hz), rng) * swell
        out *= TONE_RMS[obj.size] / 0.65  # the swell averages 0.65
    fade = np.minimum(1.0, np.minimum(t, duration - t) / 0.01).astype(np.float32)
    return out * fade  # no click at the ends


def _smooth_noise(rng: np.random.Generator, n: int, knots_per_s: float) -> np.ndarray:
    """Noise with most of its energy below `knots_per_s / 2` Hz, RMS 1: random values at
    `knots_per_s`, joined by straight lines (a cheap low-pass, no FFT)."""
    step = knots_per_s / SAMPLE_RATE
    values = rng.standard_normal(int(n * step) + 2)
    return _normalise_rms(np.interp(np.arange(n) * step, np.arange(values.size), values))


def ambience(scene: Scene, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """The background's ambient sound, RMS about AMBIENCE_RMS."""
    t = np.arange(n_samples) / SAMPLE_RATE
    kind = scene.background
    if kind == "checkered":  # mains hum with harmonics over a little room tone
        c = rng.uniform(95, 125) * t
        x = _sine(c) + 0.6 * _sine(2 * c) + 0.4 * _sine(3 * c) + 0.25 * _sine(4 * c)
        x = _normalise_rms(x) + 0.3 * _smooth_noise(rng, n_samples, 800)
    elif kind == "striped":  # wind: low rumbling noise with slow gusts
        x = _smooth_noise(rng, n_samples, 500)
        gust_rate = rng.uniform(0.2, 0.5)
        x *= 0.6 + 0.4 * _sine(gust_rate * t + rng.uniform())
    elif kind == "noisy":  # static: broadband hiss
        x = rng.standard_normal(n_samples)
    elif kind == "wavy":  # surf: mid noise swelling with the waves on screen
        x = _smooth_noise(rng, n_samples, 3000) - 0.7 * _smooth_noise(rng, n_samples, 400)
        x *= 0.25 + 0.75 * (0.5 + 0.5 * _sine(scene.background_rate * t))
    else:  # dotted: rain, many small high drops
        x = np.zeros(n_samples)
        drop_len = round(0.004 * SAMPLE_RATE)
        dt = np.arange(drop_len) / SAMPLE_RATE
        count = int(25 * n_samples / SAMPLE_RATE)
        starts = rng.integers(0, n_samples - drop_len, count)
        pitches = rng.uniform(2000, 5000, count)
        gains = rng.uniform(0.3, 1.0, count)
        drops = _sine(pitches[:, None] * dt) * np.exp(-dt / 0.001) * gains[:, None]
        np.add.at(x, starts[:, None] + np.arange(drop_len), drops)
        x = _normalise_rms(x) + 0.2 * rng.standard_normal(n_samples)
    return _normalise_rms(x) * AMBIENCE_RMS * rng.uniform(0.7, 1.4)


def scene_sound(scene: Scene, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Objects + ambience + faint room noise (no narration), float32."""
    out = ambience(scene, n_samples, rng).astype(np.float32)
    for obj in scene.objects:
        out += object_sound(obj, n_samples, rng)
    out += rng.standard_normal(n_samples, dtype=np.float32) * ROOM_NOISE_RMS
    return out


def upsample_2x(x: np.ndarray) -> np.ndarray:
    """SAMPLE_RATE to FILE_RATE: the original samples stay, the new ones in between come
    from a windowed-sinc interpolator (half-band: no mirror image above 11 kHz)."""
    taps = np.arange(-31, 32, 2)  # odd offsets, in half-samples
    kernel = np.sinc(taps / 2) * np.hamming(taps.size + 2)[1:-1]
    kernel /= kernel.sum()
    out = np.empty(2 * x.size, dtype=np.float64)
    out[0::2] = x
    out[1::2] = np.convolve(x, kernel, mode="full")[taps.size // 2 : taps.size // 2 + x.size]
    return out


def duck_envelope(n_samples: int, spans: list[tuple[float, float]]) -> np.ndarray:
    """1 outside speech, DUCK_GAIN during it, with short ramps."""
    gain = np.ones(n_samples)
    ramp = round(0.05 * SAMPLE_RATE)
    for start_s, end_s in spans:
        start = max(0, round((start_s - DUCK_MARGIN_S) * SAMPLE_RATE))
        end = min(n_samples, round((end_s + DUCK_MARGIN_S) * SAMPLE_RATE))
        gain[start:end] = DUCK_GAIN
        down = np.linspace(1.0, DUCK_GAIN, ramp)
        lo = max(0, start - ramp)
        gain[lo:start] = np.minimum(gain[lo:start], down[ramp - (start - lo) :])
        hi = min(n_samples, end + ramp)
        gain[end:hi] = np.minimum(gain[end:hi], down[::-1][: hi - end])
    return gain


def mix(
    effects: np.ndarray, speech: list[tuple[float, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Effects ducked under the narrator's sentences, each placed at its start time.

    Returns (mix as float32 in [-1, 1], the speech track alone) — the second for tests
    and for measuring how far the voice stands above the rest.
    """
    voice = np.zeros_like(effects)
    spans = []
    for start_s, sentence in speech:
        start = round(start_s * SAMPLE_RATE)
        end = min(effects.size, start + sentence.size)
        level = _normalise_rms(sentence[: end - start]) * SPEECH_RMS
        voice[start:end] += np.tanh(level / SPEECH_LIMIT) * SPEECH_LIMIT
        spans.append((start_s, start_s + sentence.size / SAMPLE_RATE))
    out = effects * duck_envelope(effects.size, spans) + voice
    return np.clip(out, -1.0, 1.0).astype(np.float32), voice
