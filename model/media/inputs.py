"""From decoded numpy arrays to the model's float tensors (docs/architecture.md), and
one call that takes any file to the inputs of a given model config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.config import ModelConfig
from model.media.decode import decode_image
from model.media.errors import MediaLimits
from model.media.media_info import MediaInfo, read_media_info
from model.media.windows import load_windows


def to_model_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 [..., T, H, W, 3] → float32 [..., T, H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)


def to_model_image(picture: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] → float32 [..., H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(picture)).float().div_(255.0)


def to_model_audio(waveform: np.ndarray) -> torch.Tensor:
    """float32 [..., S] in [-1, 1] → the same as a tensor."""
    return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))


@dataclass
class ModelInputs:
    """Everything a model embeds for one file. Batch dimension = windows:
    video [N, T, H, W, 3], audio [N, S], image [1, H, W, 3]; absent ones are None.
    Embeddings over the N windows are averaged by the caller."""

    info: MediaInfo
    video: torch.Tensor | None
    audio: torch.Tensor | None
    image: torch.Tensor | None
    starts_s: np.ndarray


def decode_for_model(
    path: str | Path,
    config: ModelConfig,
    *,
    n_windows: int | None = None,
    info: MediaInfo | None = None,
    limits: MediaLimits | None = None,
) -> ModelInputs:
    """Probe (unless `info` is given) and decode `path` for a model with `config`:
    an image → `image`; a video → `video` windows (+ `audio` when it has sound);
    an audio file → `audio` windows."""
    info = info or read_media_info(path, limits)
    if info.kind == "image":
        picture = decode_image(path, size=config.video.crop_size, limits=limits, info=info)
        return ModelInputs(
            info=info,
            video=None,
            audio=None,
            image=to_model_image(picture[None]),
            starts_s=np.zeros(1),
        )
    windows = load_windows(path, config, n_windows, info, limits=limits)
    return ModelInputs(
        info=info,
        video=to_model_video(windows.video) if windows.video is not None else None,
        audio=to_model_audio(windows.audio) if windows.audio is not None else None,
        image=None,
        starts_s=windows.starts_s,
    )
