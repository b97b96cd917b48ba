"""Helpers shared by the model tests: a text list, small configs and inputs."""

from __future__ import annotations

import torch

from model import MMV, load_config
from model.config import ModelConfig

TEXTS = [
    "a red ball bounces on the floor",
    "the drum rolls loudly",
    "a dog barks at the red ball",
    "someone plays the piano slowly",
    "water splashes in a blue pool",
    "the cat jumps over a box",
]


def small_config(space: str = "fac") -> ModelConfig:
    """The tiny config with shorter clips (4 frames of 32x32, 1 s of audio): fast tests."""
    return load_config("tiny").replace(
        video={"frames": 4, "crop_size": 32, "fps": 4.0}, heads={"space": space}
    )


def small_inputs(config: ModelConfig, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    v = config.video
    video = torch.rand(batch, v.frames, v.crop_size, v.crop_size, 3, generator=g)
    audio = torch.rand(batch, config.audio_samples, generator=g) * 2 - 1
    return video, audio


def warm_batch_norm(model: MMV, config: ModelConfig, rounds: int = 3) -> None:
    """A few train-mode forwards so BN running statistics are not the init values."""
    model.train()
    with torch.no_grad():
        for i in range(rounds):
            video, audio = small_inputs(config, batch=4, seed=100 + i)
            model(video, audio)
    model.eval()
