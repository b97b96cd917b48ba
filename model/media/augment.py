"""Training augmentation of decoded clips: random crop with scale jitter, horizontal
flip, colour jitter (the MMV paper's list; temporal jitter is the window start,
chosen by the caller). One draw per clip, so every frame of a clip gets the same crop,
flip and colour change.

Frames arrive a little larger than the model's crop (`VideoAugment.decode_scale`), so
a random crop still has room to move; the same larger frames are what the training
cache stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# RGB <-> YIQ: hue is a rotation of the (I, Q) plane, a cheap exact-enough hue shift.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class VideoAugment:
    """Ranges of the random changes; defaults follow the paper (colour: brightness
    32/255, saturation 0.4, contrast 0.4, hue 0.2)."""

    decode_scale: float = 1.25  # frames are decoded this much larger than the crop
    crop_fraction: tuple[float, float] = (0.8, 1.0)  # crop side / short side (scale jitter)
    flip_p: float = 0.5
    brightness: float = 32 / 255  # add U(-b, b)
    contrast: float = 0.4  # scale around the mean by U(1-c, 1+c)
    saturation: float = 0.4  # scale chroma by U(1-s, 1+s)
    hue: float = 0.2  # rotate hue by U(-h, h) turns

    def decode_side(self, size: int) -> int:
        """Short side the decoder should produce for a crop of `size`."""
        return max(size, math.ceil(size * self.decode_scale))


def augment_clip(
    frames: np.ndarray, size: int, augment: VideoAugment, rng: np.random.Generator
) -> torch.Tensor:
    """Random crop, resize to `size`, flip and colour-jitter `frames` (uint8
    [T, H, W, 3]). Returns float32 [T, size, size, 3] in [0, 1]."""
    _, h, w, _ = frames.shape
    short = min(h, w)
    lo, hi = augment.crop_fraction
    side = max(1, min(short, round(short * rng.uniform(lo, hi))))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    flip = bool(rng.random() < augment.flip_p)
    # Draw every factor even when unused, so the stream of random numbers (and so
    # the whole sample) does not depend on earlier branches.
    brightness = rng.uniform(-augment.brightness, augment.brightness)
    contrast = rng.uniform(1 - augment.contrast, 1 + augment.contrast)
    saturation = rng.uniform(1 - augment.saturation, 1 + augment.saturation)
    hue = rng.uniform(-augment.hue, augment.hue)

    # Resize the uint8 frames (torch's vectorised uint8 path, ~7x faster than on floats;
    # it rounds to whole levels, at most 1/255 from the float result), then convert.
    clip = _tensor(frames[:, y : y + side, x : x + side]).permute(0, 3, 1, 2)  # [T, 3, s, s]
    if side != size:
        clip = F.interpolate(
            clip, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False
        )
    if flip:
        clip = clip.flip(-1)
    clip = clip.permute(0, 2, 3, 1).float().div_(255)  # [T, size, size, 3]
    # Brightness, contrast (around each frame's per-channel mean, as TF does),
    # saturation and hue are all affine in RGB, so they apply as one 3x3 matrix and one
    # bias per frame: x -> (k x + (1 - k) mean + b) M.
    matrix = colour_matrix(saturation, hue)
    mean = clip.mean(dim=(1, 2), keepdim=True)  # [T, 1, 1, 3]
    bias = ((1 - contrast) * mean + brightness) @ matrix.T
    clip = torch.baddbmm(
        bias.reshape(len(clip), 1, 3),
        clip.reshape(len(clip), -1, 3),
        matrix.T.expand(len(clip), 3, 3),
        alpha=contrast,
    ).reshape(clip.shape)
    return clip.clamp_(0.0, 1.0).contiguous()


def colour_matrix(saturation: float, hue: float) -> torch.Tensor:
    """The 3x3 RGB matrix of a saturation scale (around luma) then a hue rotation (in
    YIQ), applied as `rgb @ matrix.T`."""
    grey = _LUMA.expand(3, 3)  # each output channel takes the pixel's luma
    scale = torch.eye(3) * saturation + grey * (1 - saturation)
    return _hue_matrix(hue) @ scale


def centre_clip(frames: np.ndarray, size: int) -> torch.Tensor:
    """The evaluation view of the same larger frames: centre square, resized to
    `size`. Float32 [T, size, size, 3] in [0, 1]."""
    _, h, w, _ = frames.shape
    short = min(h, w)
    y, x = (h - short) // 2, (w - short) // 2
    clip = _tensor(frames[:, y : y + short, x : x + short])
    clip = clip.permute(0, 3, 1, 2).float().div_(255)
    if short != size:
        clip = F.interpolate(
            clip, size=(size, size), mode="bilinear", antialias=short > size, align_corners=False
        )
    return clip.permute(0, 2, 3, 1).clamp_(0.0, 1.0).contiguous()


def to_uint8(clip: torch.Tensor) -> np.ndarray:
    return clip.mul(255).round_().to(torch.uint8).numpy()


def _tensor(frames: np.ndarray) -> torch.Tensor:
    """A tensor over a contiguous, writable copy when needed (cached frames are
    read-only memory maps, which torch warns about)."""
    array = np.ascontiguousarray(frames)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def _hue_matrix(turns: float) -> torch.Tensor:
    if turns == 0:
        return torch.eye(3)
    angle = 2 * math.pi * turns
    c, s = math.cos(angle), math.sin(angle)
    rotate = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return _YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ
