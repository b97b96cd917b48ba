"""How each motion moves an object, and when it makes a sound.

One place for the trajectories: the renderer draws from `pose` and the synthesiser
sounds from `hit_times` / `height` / `angle`, so sound and picture cannot drift apart.
Times are seconds from the start of the clip; positions are fractions of the frame.
"""

from __future__ import annotations

import math

import numpy as np

from model.corpus.world import SceneObject

SLIDE_TICK_SPACING = 0.08  # a sliding object ticks every 8% of the frame it travels


def _cycle(obj: SceneObject, t: np.ndarray) -> np.ndarray:
    """Position in the motion cycle, in cycles (not wrapped)."""
    return obj.rate * t + obj.phase


def _triangle_wave(cycles: np.ndarray) -> np.ndarray:
    """-1 → 1 → -1 linearly over one cycle: constant speed, reverses at both ends."""
    frac = np.mod(cycles, 1.0)
    return 1.0 - 4.0 * np.abs(frac - 0.5)


def pose(obj: SceneObject, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, centre y and angle (radians) at times t."""
    t = np.asarray(t, dtype=np.float64)
    x = np.full_like(t, obj.x)
    y = np.full_like(t, obj.y)
    if obj.motion == "bouncing":
        s = np.mod(_cycle(obj, t), 1.0)
        y = obj.y - obj.amplitude * 4.0 * s * (1.0 - s)  # a parabola: free fall between hits
    elif obj.motion == "sliding":
        x = obj.x + obj.direction * obj.amplitude * _triangle_wave(_cycle(obj, t))
    elif obj.motion == "floating":
        y = obj.y - obj.amplitude * np.sin(2 * math.pi * _cycle(obj, t))
    return x, y, angle(obj, t)


def angle(obj: SceneObject, t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if obj.motion == "spinning":
        return obj.tilt + obj.direction * 2 * math.pi * _cycle(obj, t)
    return np.full_like(t, obj.tilt)


def height(obj: SceneObject, t: np.ndarray) -> np.ndarray:
    """Height relative to the middle of the motion, in [-1, 1] (up is +1)."""
    t = np.asarray(t, dtype=np.float64)
    if obj.motion == "floating":
        return np.sin(2 * math.pi * _cycle(obj, t))
    if obj.motion == "bouncing":
        s = np.mod(_cycle(obj, t), 1.0)
        return 8.0 * s * (1.0 - s) - 1.0
    return np.zeros_like(t)


def slide_speed(obj: SceneObject) -> float:
    """Frame widths per second of a sliding object."""
    return 4.0 * obj.amplitude * obj.rate


def hit_times(obj: SceneObject, duration_s: float) -> np.ndarray:
    """When the object makes a percussive sound.

    Bouncing: each floor contact (cycle position an integer). Sliding: each time it has
    travelled another SLIDE_TICK_SPACING, so the tick rate follows its speed. Floating
    and spinning sound continuously and have no hits.
    """
    if obj.motion == "bouncing":
        first = math.ceil(obj.phase)
        last = math.floor(obj.rate * duration_s + obj.phase)
        cycles = np.arange(first, last + 1, dtype=np.float64)
        times = (cycles - obj.phase) / obj.rate
    elif obj.motion == "sliding":
        speed = slide_speed(obj)
        travelled_at_0 = obj.phase * 4.0 * obj.amplitude
        first = math.floor(travelled_at_0 / SLIDE_TICK_SPACING) + 1
        last = math.floor((travelled_at_0 + speed * duration_s) / SLIDE_TICK_SPACING)
        ticks = np.arange(first, last + 1, dtype=np.float64)
        times = (ticks * SLIDE_TICK_SPACING - travelled_at_0) / speed
    else:
        return np.zeros(0)
    return times[(times >= 0.0) & (times < duration_s)]
