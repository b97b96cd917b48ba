"""Frames of the unseen world: new background textures and six emblem shapes, in numpy.

Backgrounds are muted, low-contrast textures (bricks, drifting clouds, a gradient,
zigzag bands, a thin grid) none of which the corpus draws; the object is a saturated or
plain (black, white) emblem with a dark outline and a little shading, so its colour and
silhouette survive h264 and the model's resize to 64 px. The object grows for a
moment at each note of its sound (`PULSE`), so picture and sound keep time.
"""

from __future__ import annotations

import math

import numpy as np

from model.corpus.render import _to_uint8
from model.corpus.unseen.things import ClipPlan

VIDEO_SIZE = 96  # square: the model's short-side resize to 64 and centre crop keep it all
FPS = 8  # the model samples 4 fps: every other frame
PULSE = 0.14  # how much the object grows at a note
PULSE_DECAY_S = 0.12


def frame_times(duration_s: float) -> np.ndarray:
    return np.arange(round(duration_s * FPS)) / FPS


def render_clip(
    plan: ClipPlan, duration_s: float, rng: np.random.Generator, size: int = VIDEO_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [T, size, size, 3] at FPS, and the object's coverage [T, size, size]
    in [0, 1] (1: the pixel is all object; for tests and checks)."""
    times = frame_times(duration_s)
    frames = background(plan.background, times, rng, size)
    coverage = _draw(frames, plan, times, duration_s, size)
    return frames, coverage


def _tint(grey: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """Grey [..., H, W] float to uint8 RGB with a faint colour cast."""
    return _to_uint8(grey[..., None] + tint)


def background(kind: str, times: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [T, size, size, 3]: one of the world's textures, muted, with a random cast."""
    scale = size / VIDEO_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    base = float(rng.uniform(0.30, 0.46))
    tint = rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    n = times.size
    if kind == "clouds":  # soft blobs drifting sideways
        grey = np.zeros((n, size, size), np.float32)
        drift = rng.uniform(2.0, 5.0) * scale * rng.choice((-1, 1))  # px per second
        for _ in range(4):
            wavelength = rng.uniform(28, 64) * scale
            a = rng.uniform(0, 2 * math.pi)
            kx, ky = math.cos(a) * 2 * math.pi / wavelength, math.sin(a) * 2 * math.pi / wavelength
            phase = rng.uniform(0, 2 * math.pi)
            shift = (kx * drift * times).astype(np.float32)[:, None, None]
            grey += np.sin(kx * xx + ky * yy + phase)[None] * np.cos(shift)
            grey -= np.cos(kx * xx + ky * yy + phase)[None] * np.sin(shift)
        return _tint(base + 0.05 * grey, tint)
    if kind == "bricks":
        width = 24 * scale * rng.uniform(0.85, 1.2)
        height = width / rng.uniform(2.0, 2.6)
        ox, oy = rng.uniform(0, 2 * width), rng.uniform(0, 2 * height)
        row = np.floor((yy + oy) / height)
        xs = xx + ox + (row % 2) * width / 2
        col = np.floor(xs / width)
        shades = rng.uniform(-0.04, 0.04, (64, 64))
        brick = shades[row.astype(int) % 64, col.astype(int) % 64]
        mortar = (np.mod(xs, width) < 1.6 * scale) | (np.mod(yy + oy, height) < 1.6 * scale)
        grey = np.where(mortar, base + 0.12, base + brick)
    elif kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        proj = ((xx - size / 2) * math.cos(a) + (yy - size / 2) * math.sin(a)) / size
        vignette = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / size**2
        grey = base + 0.2 * proj - 0.12 * vignette
    elif kind == "zigzag":
        period = 16 * scale * rng.uniform(0.85, 1.2)
        tooth = period * rng.uniform(1.0, 1.8)
        depth = period * rng.uniform(0.4, 0.8)
        u, v = (xx, yy) if rng.random() < 0.5 else (yy, xx)
        zig = depth * (2 * np.abs(np.mod(u / tooth + rng.uniform(), 1.0) - 0.5))
        bands = np.mod((v + zig) / period + rng.uniform(), 1.0) < 0.5
        grey = base - 0.045 + 0.09 * bands
    else:  # grid: thin light lines
        spacing = 15 * scale * rng.uniform(0.85, 1.2)
        ox, oy = rng.uniform(0, spacing, 2)
        gx = np.abs(np.mod(xx + ox, spacing) - spacing / 2)
        gy = np.abs(np.mod(yy + oy, spacing) - spacing / 2)
        edge = spacing / 2 - 0.7 * scale
        line = np.clip(np.maximum(gx, gy) - edge + 0.5, 0.0, 1.0)
        grey = base - 0.02 + 0.14 * line
    picture = _tint(grey.astype(np.float32), tint)
    return np.repeat(picture[None], n, axis=0)  # static


def _convex(u: np.ndarray, v: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    """Signed distance (exact inside, approximate outside) to a convex polygon whose
    corners go round in either direction."""
    cu = sum(c[0] for c in corners) / len(corners)
    cv = sum(c[1] for c in corners) / len(corners)
    out = None
    for (u0, v0), (u1, v1) in zip(corners, corners[1:] + corners[:1], strict=True):
        nu, nv = v1 - v0, -(u1 - u0)
        norm = math.hypot(nu, nv)
        nu, nv = nu / norm, nv / norm
        if (cu - u0) * nu + (cv - v0) * nv > 0:  # point the normal outwards
            nu, nv = -nu, -nv
        d = (u - u0) * nu + (v - v0) * nv
        out = d if out is None else np.maximum(out, d)
    assert out is not None
    return out


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def signed_distance(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Distance in pixels to the shape's edge, negative inside; (u, v) offsets in the
    object's own rotated frame (v down), in units of pixels; r the radius in pixels
    (broadcast against u, v)."""
    # Work in units of r, then scale back to pixels.
    p, q = u / r, v / r
    if shape == "crescent":  # a disc with an offset disc bitten out, horns to the right
        d = np.maximum(np.hypot(p, q) - 1.0, 0.78 - np.hypot(p - 0.5, q + 0.12))
    elif shape == "arrow":  # pointing right: a shaft and a head
        shaft = _box(p + 0.4, q, 0.62, 0.27)
        head = _convex(p, q, [(1.1, 0.0), (0.05, -0.85), (0.05, 0.85)])
        d = np.minimum(shaft, head)
    elif shape == "cross":  # a plus sign
        d = np.minimum(_box(p, q, 0.95, 0.3), _box(p, q, 0.3, 0.95))
    elif shape == "heart":  # two lobes over a point
        lobes = np.minimum(np.hypot(p + 0.45, q + 0.3), np.hypot(p - 0.45, q + 0.3)) - 0.52
        point = _convex(p, q, [(-0.93, -0.12), (0.93, -0.12), (0.0, 0.98)])
        d = np.minimum(lobes, point)
    elif shape == "diamond":  # a tall rhombus
        a, b = 0.8, 1.15
        d = (np.abs(p) * b + np.abs(q) * a - a * b) / math.hypot(a, b)
    elif shape == "hexagon":  # flat top and bottom
        corners = [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]
        d = _convex(p, q, corners)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return d * r


def pulse(onsets_s: tuple[float, ...], times: np.ndarray) -> np.ndarray:
    """1 + how much the object has grown at each time (a decaying bump per note)."""
    out = np.ones_like(times, dtype=np.float64)
    for onset in onsets_s:
        after = times - onset
        out += np.where(after >= 0, PULSE * np.exp(-np.maximum(after, 0) / PULSE_DECAY_S), 0.0)
    return out


def _draw(
    frames: np.ndarray, plan: ClipPlan, times: np.ndarray, duration_s: float, size: int
) -> np.ndarray:
    """Composite the object onto uint8 frames [T, H, W, 3] in place; its coverage."""
    scale = size / VIDEO_SIZE
    xs, ys, angles = plan.motion.pose(times, duration_s)
    r = (plan.radius * size * pulse(plan.onsets_s, times)).astype(np.float32)[:, None, None]
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - (xs * size).astype(np.float32)[:, None, None]
    dy = grid[None, :, None] - (ys * size).astype(np.float32)[:, None, None]
    cos = np.cos(angles).astype(np.float32)[:, None, None]
    sin = np.sin(angles).astype(np.float32)[:, None, None]
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    d = signed_distance(plan.combination.shape, u, v, r)
    alpha = np.clip(0.5 - d, 0.0, 1.0)
    shade = np.clip(1.0 - 0.12 * v / r, 0.85, 1.1)[..., None]  # lit from above
    colour = np.minimum(np.asarray(plan.combination.rgb, np.float32) * shade, 1.0)
    edge = np.clip((d + 1.2 * scale) / scale, 0.0, 1.0)[..., None]  # dark outline
    paint = colour * (1.0 - 0.6 * edge) * alpha[..., None] * 255.0
    blended = frames * (1.0 - alpha[..., None]) + paint + 0.5
    frames[:] = np.minimum(blended, 255.0).astype(np.uint8)
    return alpha
