"""The active model behind the service: decoded media or texts in, numpy embeddings out.

Every method here is synchronous and CPU-heavy; callers run them in a thread pool
(torch releases the GIL inside its kernels, so pool threads really run in parallel).
Long media arrive as N windows; `model.embedding` averages their embeddings per space
(the evaluation's way), so an item has one vector per (space, modality).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model import MMV, load_model
from model.config import ModelConfig
from model.embedding import embed_media
from model.media import Windows
from model.spaces import space_for, spaces_of


@dataclass(frozen=True)
class ModelHandle:
    version: str
    path: Path


def pick_device(wanted: str) -> torch.device:
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class Embedder:
    def __init__(self, model: MMV, version: str, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.version = version
        self.device = device

    @classmethod
    def load(cls, handle: ModelHandle, device: str = "auto") -> Embedder:
        return cls(load_model(handle.path), handle.version, pick_device(device))

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def space_option(self) -> str:
        return self.config.heads.space

    @property
    def device_kind(self) -> str:
        return "cuda" if self.device.type == "cuda" else "cpu"

    def spaces_of(self, modality: str) -> tuple[str, ...]:
        return spaces_of(self.space_option, modality)

    def space_for(self, query_modality: str, target_modality: str) -> str | None:
        return space_for(self.space_option, query_modality, target_modality)

    def dim(self, space: str) -> int:
        return self.model.embedding_dims[space]

    def indexed_pairs(self) -> list[tuple[str, str]]:
        """Every (space, modality) an item of this model can be found by."""
        return [
            (space, modality)
            for modality in ("video", "audio", "image", "text")
            for space in self.spaces_of(modality)
        ]

    def index_pairs(self) -> list[tuple[str, str]]:
        """Every index of a version: the items' and the segments' of video and audio."""
        from service.indexes import SEGMENTED, segment_index

        segments = [(space, segment_index(m)) for m in SEGMENTED for space in self.spaces_of(m)]
        return self.indexed_pairs() + segments

    # -- embedding -------------------------------------------------------------------
    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        """space -> float32 [len(texts), D], one row per text (normalised by the model)."""
        out = self.model.embed_text(texts)
        return {space: t.float().cpu().numpy() for space, t in out.items()}

    def embed_media(self, windows: Windows, modality: str) -> dict[str, np.ndarray]:
        """One modality of a decoded file -> space -> float32 [D] (windows averaged)."""
        return embed_media(self.model, windows, modality)
