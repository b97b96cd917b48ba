"""Audio's way into the coarse space S_vat (FAC), fitted after training.

In FAC, text meets audio only through g_va→vat, the projection trained on *video*'s
fine embeddings (ReLU -> Linear -> BN). Audio never goes through it in training (the
paper's design: its BN statistics stay video's), and nothing keeps audio's un-normalised
fine embeddings on video's scale: NCE compares directions only. In the default model
they sat at half video's norm (7.1 against 15.9 on the validation clips), so g's BN,
normalising with video's statistics, bent audio's coarse embeddings away from the text
they should meet, and text → audio was the weakest direction (docs/training.md,
"Text → audio").

`AudioBridge` is audio's own copy of g (ReLU -> Linear -> BN with fixed statistics);
`calibrate_audio_bridge` fits it, with the rest of the model frozen, so that a clip's
sound lands in S_vat next to the clip's narration (where it has one) and the clip's
video: InfoNCE against both, in-batch negatives, every 5th clip held out to decide. Once
calibrated, `FACHeads.audio` takes audio into S_vat through the bridge; before, through
g as the paper does. The fine space S_va (audio ↔ video) is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from model.losses import info_nce


class AudioBridge(nn.Module):
    """ReLU -> Linear(D_va, D_vat, no bias) -> BN (fixed statistics), all buffers: saved
    with the checkpoint, never touched by the trainer's optimiser."""

    def __init__(self, va_dim: int, vat_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.zeros(vat_dim, va_dim))
        self.register_buffer("mean", torch.zeros(vat_dim))
        self.register_buffer("var", torch.ones(vat_dim))
        self.register_buffer("gamma", torch.ones(vat_dim))
        self.register_buffer("beta", torch.zeros(vat_dim))
        self.register_buffer("calibrated", torch.tensor(False))

    @property
    def is_calibrated(self) -> bool:
        return bool(self.calibrated)

    def forward(self, va: Tensor) -> Tensor:
        return bridge(va, self.parameters_dict(), self.eps)

    def parameters_dict(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in ("weight", "mean", "var", "gamma", "beta")}

    @torch.no_grad()
    def set(self, values: dict[str, Tensor]) -> None:
        for key, value in values.items():
            getattr(self, key).copy_(value)
        self.calibrated.fill_(True)

    @torch.no_grad()
    def reset(self) -> None:
        """Back to g_va→vat (after further training the bridge no longer fits)."""
        self.calibrated.fill_(False)


def bridge(va: Tensor, p: dict[str, Tensor], eps: float) -> Tensor:
    pre = F.linear(F.relu(va), p["weight"].to(va.dtype))
    scale = p["gamma"] / (p["var"] + eps).sqrt()
    return (pre - p["mean"]) * scale + p["beta"]


@dataclass
class BridgeReport:
    # The objective (mean InfoNCE to narration and to video, see calibrate_audio_bridge)
    # on the held-out clips, through g_va→vat and through the kept bridge; and the share
    # of held-out clips with narration whose own narration is the sound's nearest.
    loss_before: float
    loss_after: float
    text_r1_before: float
    text_r1_after: float
    steps: int
    applied: bool

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "held_out_text_r1_before": self.text_r1_before,
            "held_out_text_r1_after": self.text_r1_after,
            "applied": self.applied,
        }


def calibrate_audio_bridge(
    model: nn.Module,
    audio_va: Tensor,
    video_vat: Tensor,
    text_vat: Tensor,
    has_text: Tensor,
    steps: int = 400,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> BridgeReport | None:
    """Fit `model.heads.audio_bridge` (FAC only; None for other heads).

    audio_va: the clips' un-normalised fine audio embeddings `[N, D_va]`; video_vat and
    text_vat: L2-normalised coarse embeddings of the same clips' video and narration
    `[N, D_vat]` (text rows where `has_text` is False are ignored). Use a few thousand
    clips: the bridge has D_va × D_vat weights. The bridge starts as g_va→vat with BN
    statistics of audio's own; Adam fits it; every 5th clip is held out, and the bridge
    is kept only when it beats g_va→vat there.
    """
    heads = model.heads
    if not hasattr(heads, "audio_bridge"):
        return None
    g = heads.va_to_vat
    temperature = model.config.loss.temperature
    eps = heads.audio_bridge.eps
    audio_va, video_vat, text_vat = audio_va.float(), video_vat.float(), text_vat.float()
    has_text = has_text.bool()
    n = audio_va.shape[0]
    held = torch.zeros(n, dtype=torch.bool)
    if n >= 10:
        held[::5] = True
    fit_idx = (~held).nonzero().flatten() if held.any() else torch.arange(n)
    val_idx = held.nonzero().flatten() if held.any() else fit_idx

    def objective(z: Tensor, idx: Tensor) -> Tensor:
        z = F.normalize(z, dim=-1)
        loss = info_nce(z, video_vat[idx], temperature)
        spoken = has_text[idx]
        if int(spoken.sum()) > 1:
            loss = loss + info_nce(z[spoken], text_vat[idx][spoken], temperature)
        return loss

    def text_r1(z: Tensor, idx: Tensor) -> float:
        spoken = idx[has_text[idx]]
        if len(spoken) == 0:
            return 0.0
        z = F.normalize(z[has_text[idx]], dim=-1)
        nearest = (z @ text_vat[spoken].T).argmax(dim=1)
        return float((nearest == torch.arange(len(spoken))).float().mean())

    with torch.no_grad():
        was_training = g.training
        g.eval()
        through_g = g(audio_va[val_idx]).float()
        g.train(was_training)
        before = float(objective(through_g, val_idx))
        r1_before = text_r1(through_g, val_idx)
        pre = F.linear(F.relu(audio_va[fit_idx]), g.fc.weight.float())
        start = {
            "weight": g.fc.weight.detach().float().clone(),
            "mean": pre.mean(0),
            "var": pre.var(0, unbiased=False),
            "gamma": g.bn.weight.detach().float().clone(),
            "beta": g.bn.bias.detach().float().clone(),
        }
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="audio bridge calibration", disable=not progress):
        idx = fit_idx[torch.randperm(fit_idx.numel(), generator=generator)[:batch_size]]
        fitted = {**params, "var": params["var"].clamp_min(0.0)}
        loss = objective(bridge(audio_va[idx], fitted, eps), idx)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fitted = {k: v.detach().clone() for k, v in params.items()}
        fitted["var"] = fitted["var"].clamp_min(0.0)
        candidates = [(start, bridge(audio_va[val_idx], start, eps))]
        candidates.append((fitted, bridge(audio_va[val_idx], fitted, eps)))
        scored = [(float(objective(z, val_idx)), text_r1(z, val_idx), p) for p, z in candidates]
        after, r1_after, best = min(scored, key=lambda s: s[0])
    applied = after < before
    if applied:
        heads.audio_bridge.set(best)
    else:
        after, r1_after = before, r1_before
    return BridgeReport(before, after, r1_before, r1_after, steps, applied)
