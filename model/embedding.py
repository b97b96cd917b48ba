"""From decoded windows to embeddings: batched through the model, then averaged per file.

The paper embeds a file as the mean of the embeddings of uniformly spaced windows,
L2-normalised again; the service, the evaluation and re-indexing all do it here, so a
file gets the same vector whichever of them embeds it.

    windows = load_windows(path, model.config)           # model.media
    vectors = embed_media(model, windows, "video")       # {space: float32 [D]}
    per_item = embed_windows(model, "audio", x, owner, n)  # {space: float32 [n, D]}

A process that embeds with a model it never changes again (the service's media
workers) calls `freeze_for_inference(model)` once: its video and audio towers are then
traced and frozen (batch norm folded into the convolutions before it, no Python per
layer), which gives the same vectors to ~1e-6 in less CPU time (checked when frozen:
a tower further than FROZEN_TOLERANCE from the model is not used). Everything it
embeds, uploads and re-indexing alike, goes through the frozen towers.
"""

from __future__ import annotations

import logging
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.backbones.resnet_v2 import set_trunk_memory_format
from model.errors import ModelError, ModelInputError
from model.media.segments import Span, window_members
from model.media.windows import Windows
from model.mmv import MMV

log = logging.getLogger(__name__)

# Windows per forward pass on CPU: small batches keep a layer's activations in the
# core's caches. Re-indexing with frozen towers, 2 workers on 2 cores (bench/reindex.py
# stages), items per CPU-s at 8/16/32/64 windows a pass: 113/117/113/109. On a GPU,
# more at once.
EMBED_BATCH = 16
EMBED_BATCH_GPU = 64
FROZEN_TOLERANCE = 1e-5  # a frozen tower further than this from the model is not used


def in_batches(
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], x: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """fn over x in slices of `batch_size`; each output key's rows concatenated (float32)."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), batch_size):
        part = x[i : i + batch_size]
        if not (part.flags.c_contiguous and part.flags.writeable):
            part = np.array(part)  # a read-only memory map, which torch will not wrap
        out = fn(torch.from_numpy(part))
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


class _Tower(nn.Module):
    """One modality's way from input to L2-normalised embeddings, as `MMV.embed_*` on
    CPU: video uint8 [B, T, H, W, 3] (divided by 255 here), audio float32 [B, S]."""

    def __init__(self, model: MMV, modality: str) -> None:
        super().__init__()
        self.modality = modality
        self.backbone = model.video_backbone if modality == "video" else model.audio_backbone
        self.heads = model.heads
        self.spaces = model.spaces_of(modality)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.modality == "video":
            z = self.heads.video(self.backbone(x.float() / 255.0))
        else:
            z = self.heads.audio(self.backbone(x), coarse=True)
        return tuple(F.normalize(z[space].float(), dim=-1) for space in self.spaces)


class _Frozen:
    """A traced and frozen tower, called like `MMV.embed_*` on the inputs it was traced
    for; anything else (another dtype or shape) goes to the model's own method."""

    def __init__(self, model: MMV, modality: str) -> None:
        tower = _Tower(model, modality).eval()
        cfg = model.config
        v = cfg.video
        example = (
            torch.randint(0, 256, (3, v.frames, v.crop_size, v.crop_size, 3), dtype=torch.uint8)
            if modality == "video"
            else torch.rand(3, cfg.audio_samples) * 2 - 1
        )
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # sizes become constants
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: still the way
            self.fn = torch.jit.freeze(torch.jit.trace(tower, example[:2], check_trace=False))
        self.spaces = tower.spaces
        self.dtype, self.shape = example.dtype, example.shape[1:]
        self.modality = modality
        self.model = weakref.ref(model)  # a strong one would keep the model alive forever
        # The frozen copy must give what the model gives (another batch size than traced).
        want, got = _eager_fn(model, modality)(example), self(example)
        gap = max(float((want[space] - got[space]).abs().max()) for space in want)
        if gap > FROZEN_TOLERANCE:
            raise ModelError(f"the frozen {modality} tower is {gap:.1e} away from the model's")

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        if x.dtype != self.dtype or x.shape[1:] != self.shape or len(x) == 0:
            model = self.model()
            assert model is not None
            return _eager_fn(model, self.modality)(x)
        with torch.inference_mode(), _executor():
            return dict(zip(self.spaces, self.fn(x), strict=True))


def _executor() -> Any:
    """Run frozen graphs as they are: the profiling executor's re-specialising on each new
    batch size made first calls 2x slower and saved nothing after (measured)."""
    return torch.jit.optimized_execution(False)


_frozen: weakref.WeakKeyDictionary[MMV, dict[str, _Frozen]] = weakref.WeakKeyDictionary()
_frozen_lock = threading.Lock()


def freeze_for_inference(model: MMV) -> None:
    """From now on, embed `model`'s video and audio windows through traced, frozen
    copies of its towers (CPU only; a no-op elsewhere). Only for a model whose weights
    never change again: the copies would not follow them. Put in eval mode."""
    model.eval()
    if model.device.type != "cpu":
        return
    with _frozen_lock:
        if model in _frozen:
            return
        # Channels-last for inference: 1.47x the batched video embedding on 2 cores,
        # features within 1e-4 of the NCHW maps the model trains on.
        set_trunk_memory_format(model, torch.channels_last)
        towers: dict[str, _Frozen] = {}
        for modality in ("video", "audio"):
            try:
                towers[modality] = _Frozen(model, modality)
            except Exception as exc:  # the model's own method (slower) serves instead
                log.warning("embedding %s through the model itself: %s", modality, exc)
        _frozen[model] = towers


def is_frozen(model: MMV) -> bool:
    return model in _frozen


def _embed_fn(model: MMV, modality: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    frozen = _frozen.get(model)
    if frozen is not None and modality in frozen:
        return frozen[modality]
    return _eager_fn(model, modality)


def _eager_fn(model: MMV, modality: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
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
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Windows of one modality -> {space: float32 [n, D]}, averaged per owner.

    x: video uint8 [W, T, H, W, 3], audio float32 [W, S], image uint8 [W, H, W, 3].
    owner int [W] (default: every window belongs to file 0). batch_size: windows per
    forward pass (default EMBED_BATCH on CPU, EMBED_BATCH_GPU elsewhere)."""
    if batch_size is None:
        batch_size = EMBED_BATCH if model.device.type == "cpu" else EMBED_BATCH_GPU
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
def embed_segments(
    model: MMV, windows: Windows, modality: str, spans: list[Span]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A long file's embedding and its segments' from one pass over its windows:
    ({space: float32 [D]} over all windows, {space: float32 [len(spans), D]}, each
    segment the mean of the windows inside it, L2-normalised; model/media/segments.py)."""
    x = media_windows(windows, modality)
    batch = EMBED_BATCH if model.device.type == "cpu" else EMBED_BATCH_GPU
    z = in_batches(_embed_fn(model, modality), x, batch)
    members = window_members(windows.starts_s, model.config.clip_seconds, spans)
    owner = np.concatenate([np.full(len(m), k) for k, m in enumerate(members)])
    rows = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
    whole = {
        space: average_windows(v, np.zeros(len(v), dtype=np.int64), 1)[0] for space, v in z.items()
    }
    parts = {space: average_windows(v[rows], owner, len(spans)) for space, v in z.items()}
    return whole, parts


@torch.inference_mode()
def embed_texts(model: MMV, texts: Sequence[str], batch_size: int = 512) -> dict[str, np.ndarray]:
    """{space: float32 [len(texts), D]}, one row per text."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(texts), batch_size):
        for space, z in model.embed_text(list(texts[i : i + batch_size])).items():
            parts.setdefault(space, []).append(z.float().cpu().numpy())
    return {space: np.concatenate(p) for space, p in parts.items()}
