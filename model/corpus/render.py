"""Frames drawn with numpy: textured backgrounds and anti-aliased, outlined shapes.

Geometry is in fractions of the frame, so stills (224 px) and clips (112 px) draw the
same scene. Objects are saturated colours with a dark outline and a little shading over
grey textures, so colour and shape stay clear after the model's resize to 64 px. Ball
and ring carry a light mark so that spinning shows on them too.
"""

from __future__ import annotations

import math

import numpy as np

from model.corpus import motion
from model.corpus.world import Scene, SceneObject

VIDEO_SIZE = 112  # square: the model's short-side resize and centre crop keep all of it
FPS = 8  # the model samples 4 fps: every other frame
STILL_SIZE = 224

COLOUR_RGB = {
    "red": (0.90, 0.12, 0.12),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (0.98, 0.88, 0.10),
    "green": (0.10, 0.75, 0.20),
    "blue": (0.15, 0.35, 0.95),
    "purple": (0.62, 0.18, 0.85),
}
_STAR_POINTS = 5


def render_frames(
    scene: Scene, duration_s: float, rng: np.random.Generator, size: int = VIDEO_SIZE
) -> np.ndarray:
    """uint8 [T, size, size, 3] at FPS for `duration_s` seconds."""
    times = np.arange(round(duration_s * FPS)) / FPS
    return _render(scene, times, rng, size)


def render_still(
    scene: Scene, time_s: float, rng: np.random.Generator, size: int = STILL_SIZE
) -> np.ndarray:
    """uint8 [size, size, 3]: the scene at one moment."""
    return _render(scene, np.array([time_s]), rng, size)[0]


def _render(scene: Scene, times: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    frames = background(scene, times, rng, size)
    for obj in scene.objects:
        _draw(frames, obj, times, size)
    return frames


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _tinted(grey: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """uint8 grey [...] to uint8 RGB [..., 3] shifted by `tint` (a few levels).

    uint8 addition wraps modulo 256, so adding (256 - k) subtracts k; backgrounds stay
    between ~40 and ~160, far from both ends.
    """
    out = np.empty((*grey.shape, 3), dtype=np.uint8)
    for channel in range(3):
        np.add(grey, np.uint8(round(float(tint[channel]) * 255) % 256), out=out[..., channel])
    return out


def background(scene: Scene, times: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [T, size, size, 3]: a grey texture with a faint per-clip tint."""
    scale = size / VIDEO_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    base = rng.uniform(0.27, 0.36)
    tint = rng.uniform(-0.03, 0.03, 3).astype(np.float32)
    frames = np.empty((times.size, size, size, 3), dtype=np.uint8)
    kind = scene.background
    if kind == "noisy":  # fresh grey static every frame
        low, high = round((base - 0.12) * 255), round((base + 0.12) * 255)
        return _tinted(rng.integers(low, high + 1, (times.size, size, size), dtype=np.uint8), tint)
    if kind == "wavy":  # bands that roll across the frame at the background's rate
        period = 18 * scale * rng.uniform(0.85, 1.2)
        bend = 0.25 * np.sin(2 * math.pi * xx / (40 * scale) + rng.uniform(0, 2 * math.pi))
        phase = 2 * math.pi * (yy / period + bend)
        roll = (2 * math.pi * scene.background_rate * times).astype(np.float32)
        # sin(phase - roll) = sin(phase) cos(roll) - cos(phase) sin(roll): two maps, mixed
        wave = np.sin(phase)[None] * np.cos(roll)[:, None, None]
        wave -= np.cos(phase)[None] * np.sin(roll)[:, None, None]
        return _tinted(_to_uint8(base + 0.08 * wave), tint)
    if kind == "checkered":
        cell = 14 * scale * rng.uniform(0.85, 1.2)
        ox, oy = rng.uniform(0, 2 * cell, 2)
        checks = (np.floor((xx + ox) / cell) + np.floor((yy + oy) / cell)) % 2
        grey = base - 0.06 + 0.12 * checks
    elif kind == "striped":
        period = 16 * scale * rng.uniform(0.8, 1.2)
        theta = rng.choice((0.0, 0.25, 0.5, 0.75)) * math.pi + rng.uniform(-0.1, 0.1)
        proj = xx * math.cos(theta) + yy * math.sin(theta)
        stripes = np.mod(proj / period + rng.uniform(), 1.0) < 0.5
        grey = base - 0.06 + 0.12 * stripes
    else:  # dotted: light dots on a hexagonal grid
        spacing = 14 * scale * rng.uniform(0.85, 1.2)
        ox, oy = rng.uniform(0, spacing, 2)
        row = np.floor((yy + oy) / spacing)
        gx = np.mod(xx + ox + 0.5 * spacing * (row % 2), spacing) - spacing / 2
        gy = np.mod(yy + oy, spacing) - spacing / 2
        dots = np.clip(2.6 * scale + 0.5 - np.hypot(gx, gy), 0, 1)
        grey = base - 0.03 + 0.16 * dots
    frames[:] = _to_uint8(grey.astype(np.float32)[..., None] + tint)  # static: one picture
    return frames


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Approximate distance in pixels to the shape's edge (negative inside).

    (u, v) are pixel offsets in the object's own rotated frame, v pointing down.
    """
    if shape == "ball":
        return np.hypot(u, v) - r
    if shape == "cube":
        return np.maximum(np.abs(u), np.abs(v)) - 0.86 * r
    if shape == "triangle":  # equilateral, pointing up, circumradius 1.15 r
        normals = [math.pi / 2 + 2 * math.pi * k / 3 for k in range(3)]
        edges = [u * math.cos(a) + v * math.sin(a) for a in normals]
        return np.maximum(np.maximum(edges[0], edges[1]), edges[2]) - 1.15 * r / 2
    if shape == "star":  # five points, one up; fold each point onto its sector
        outer, inner = 1.15 * r, 0.5 * r
        sector = 2 * math.pi / _STAR_POINTS
        a = np.abs(np.mod(np.arctan2(v, u) + math.pi / 2 + sector / 2, sector) - sector / 2)
        rho = np.hypot(u, v)
        px, py = rho * np.cos(a), rho * np.sin(a)
        ex, ey = inner * math.cos(sector / 2) - outer, inner * math.sin(sector / 2)
        return (ey * (px - outer) - ex * py) / math.hypot(ex, ey)
    # ring
    rho = np.hypot(u, v)
    return np.maximum(rho - 1.05 * r, 0.55 * r - rho)


def _draw(frames: np.ndarray, obj: SceneObject, times: np.ndarray, size: int) -> None:
    """Composite one object onto uint8 frames [T, H, W, 3] in place.

    The object is computed for all frames at once in a box that follows it; only the
    blending into each frame is a loop.
    """
    scale = size / VIDEO_SIZE
    r = obj.radius * size
    reach = 1.2 * r + 2
    box = math.ceil(2 * reach) + 1
    xs, ys, angles = motion.pose(obj, times)
    cx, cy = xs * size, ys * size
    x0 = np.floor(cx - reach).astype(int)
    y0 = np.floor(cy - reach).astype(int)
    grid = np.arange(box, dtype=np.float32) + 0.5
    dx = ((x0[:, None] + grid[None, :]) - cx[:, None]).astype(np.float32)[:, None, :]
    dy = ((y0[:, None] + grid[None, :]) - cy[:, None]).astype(np.float32)[:, :, None]
    cos = np.cos(angles).astype(np.float32)[:, None, None]
    sin = np.sin(angles).astype(np.float32)[:, None, None]
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    d = _signed_distance(obj.shape, u, v, r)
    alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]
    shade = np.clip(1.0 - 0.18 * dy / r, 0.75, 1.1)[..., None]  # lit from above
    colour = np.minimum(np.asarray(COLOUR_RGB[obj.colour], np.float32) * shade, 1.0)
    colour = np.broadcast_to(colour, (*d.shape, 3))
    if obj.shape == "ball":  # a light band through the middle, like a beach ball
        colour = np.where((np.abs(v) < 0.22 * r)[..., None], colour * 0.55 + 0.45, colour)
    elif obj.shape == "ring":  # a light bead on the ring
        colour = np.where(
            (np.abs(np.arctan2(v, u)) < 0.45)[..., None], colour * 0.55 + 0.45, colour
        )
    edge = np.clip((d + 1.3 * scale) / scale, 0.0, 1.0)[..., None]  # dark outline
    paint = colour * (1.0 - 0.65 * edge) * alpha * 255.0
    keep = 1.0 - alpha
    for k in range(times.size):
        fx0, fx1 = max(0, x0[k]), min(size, x0[k] + box)
        fy0, fy1 = max(0, y0[k]), min(size, y0[k] + box)
        if fx0 >= fx1 or fy0 >= fy1:
            continue
        bx, by = slice(fx0 - x0[k], fx1 - x0[k]), slice(fy0 - y0[k], fy1 - y0[k])
        region = frames[k, fy0:fy1, fx0:fx1]
        blended = region * keep[k, by, bx] + paint[k, by, bx] + 0.5
        region[:] = np.minimum(blended, 255.0).astype(np.uint8)
