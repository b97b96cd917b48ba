"""Training samples stacked into the batch MMVLoss takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch


class TextEncoder(Protocol):
    """What collate_batch needs of a tokenizer (model.Tokenizer is one)."""

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


def collate_batch(
    samples: Sequence[dict[str, Any]], tokenizer: TextEncoder, num_positives: int
) -> dict[str, Any]:
    """Stack samples into a batch for MMVLoss.

    video [B, T, H, W, 3], audio [B, S], text_ids / text_mask [B, K, L],
    positive_mask [B, K] (True where a narration is present and has at least one
    known token), has_text [B] (any positive), has_audio [B], start_s [B],
    ids list[str].
    K = num_positives; missing narrations are padded (and masked out).
    """
    k = num_positives
    texts: list[str] = []
    present: list[list[bool]] = []
    for sample in samples:
        own = list(sample["texts"][:k])
        texts.extend(own + [""] * (k - len(own)))
        present.append([True] * len(own) + [False] * (k - len(own)))
    ids, mask = tokenizer.encode(texts)
    b = len(samples)
    ids = ids.reshape(b, k, -1)
    mask = mask.reshape(b, k, -1)
    positive = torch.tensor(present, dtype=torch.bool).reshape(b, k) & mask.any(dim=-1)
    mask = mask & positive.unsqueeze(-1)
    return {
        "video": torch.stack([s["video"] for s in samples]),
        "audio": torch.stack([s["audio"] for s in samples]),
        "text_ids": ids,
        "text_mask": mask,
        "positive_mask": positive,
        "has_text": positive.any(dim=-1),
        "has_audio": torch.tensor([bool(s.get("has_audio", True)) for s in samples]),
        "start_s": torch.tensor([float(s.get("start_s", 0.0)) for s in samples]),
        "ids": [s["id"] for s in samples],
    }
