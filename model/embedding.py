"""From decoded windows to embeddings: batched through the model, then averaged per file.

The paper embeds a file as the mean of the embeddings of uniformly spaced windows,
L2-normalised again; the service, the evaluation and re-indexing all do it here, so a
file gets the same vector whichever of them embeds it.

    windows = load_windows(path, model.config)           # model.media
    vectors = embed_media(model, windows, "video")       # {space: float32 [D]}
    per_item = embed_windows(model, "audio", x, owner, n)  # {space: float32 [n, D]}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from model.errors import ModelInputError
from model.media.windows import Windows
from model.mmv import MMV

EMBED_BATCH = 64  # windows per forward pass: past this, CPU throughput stays flat


def in_batches(
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], x: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """fn over x in slices of `batch_size`; each output key's rows concatenated (float32)."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), batch_size):
        # A copy: x may be a read-only memory map, which torch will not wrap.
        out = fn(torch.from_numpy(np.array(x[i : i + batch_size])))
        for key, z in out.items():
            parts.setdefault(key, []).append(z.detach().float().cpu().numpy())
    return {key: np.concatenate(p) for key, p in parts.items()}


def average_windows(z: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per-file mean of window embeddings, L2-normalised again: float32 [n, D].
    Window w belongs to file owner[w]; sums in float64 so the order does not matter."""
    total = np.zeros((n, z.shape[1]), dtype=np.float64)
    np.add.at(total, owner, z)
    norms = np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
    return (total / norms).astype(np.float32)


def _embed_fn(model: MMV, modality: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    if modality == "video":
        return model.embed_video
    if modality == "audio":
        return model.embed_audio
    if modality == "image":
        return model.embed_image
    raise ModelInputError(f"windows of media cannot have modality {modality!r}")


@torch.inference_mode()
def embed_windows(
    model: MMV,
    modality: str,
    x: np.ndarray,
    owner: np.ndarray | None = None,
    n: int | None = None,
    batch_size: int = EMBED_BATCH,
) -> dict[str, np.ndarray]:
    """Windows of one modality -> {space: float32 [n, D]}, averaged per owner.

    x: video uint8 [W, T, H, W, 3], audio float32 [W, S], image uint8 [W, H, W, 3].
    owner int [W] (default: every window belongs to file 0)."""
    z = in_batches(_embed_fn(model, modality), x, batch_size)
    if owner is None:
        owner, n = np.zeros(len(x), dtype=np.int64), 1
    count = int(owner.max()) + 1 if n is None else n
    return {space: average_windows(v, owner, count) for space, v in z.items()}


def media_windows(windows: Windows, modality: str) -> np.ndarray:
    """The windows of one modality of a decoded file (an image: its one picture)."""
    if modality in ("video", "image"):
        if windows.video is None:
            raise ModelInputError(f"{windows.info.kind} file has no pictures to embed")
        return windows.video[:, 0] if modality == "image" else windows.video
    if modality == "audio":
        if windows.audio is None:
            raise ModelInputError(f"{windows.info.kind} file has no sound to embed")
        return windows.audio
    raise ModelInputError(f"media cannot have modality {modality!r}")


def embed_media(model: MMV, windows: Windows, modality: str) -> dict[str, np.ndarray]:
    """One file's embedding of one modality: {space: float32 [D]}, windows averaged."""
    out = embed_windows(model, modality, media_windows(windows, modality))
    return {space: v[0] for space, v in out.items()}


@torch.inference_mode()
def embed_texts(model: MMV, texts: Sequence[str], batch_size: int = 512) -> dict[str, np.ndarray]:
    """{space: float32 [len(texts), D]}, one row per text."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(texts), batch_size):
        for space, z in model.embed_text(list(texts[i : i + batch_size])).items():
            parts.setdefault(space, []).append(z.float().cpu().numpy())
    return {space: np.concatenate(p) for space, p in parts.items()}
