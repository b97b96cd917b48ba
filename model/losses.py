"""Contrastive losses: NCE (video-audio) and MIL-NCE (video-text), and their sum.

For a batch of n clips with L2-normalised embeddings and temperature τ, write
s(x, y) = x·y / τ. The loss of clip i is, as in docs/mmv.md,

    NCE_i     = -log( e^{s(v_i,a_i)} / (e^{s(v_i,a_i)} + Σ_{N_i} e^{s}) )
    MIL-NCE_i = -log( Σ_{P_i} e^{s(v_i,t)} / (Σ_{P_i} e^{s(v_i,t)} + Σ_{N_i} e^{s}) )

with the negatives N_i = every other pair in the batch that involves clip i, in both
directions (as in the MIL-NCE reference): (v_i, a_j) and (v_j, a_i) for j ≠ i — for
text, (v_i, t) for every valid narration t of another clip j, and (v_j, t) for every
valid narration t of clip i. P_i is the set of clip i's valid narrations (K slots,
padded slots masked out). Each loss is the mean over its clips. With one narration per
clip MIL-NCE equals NCE.

Under torch.distributed the batch is the global batch: `gather_with_grad` all-gathers
every rank's embeddings keeping the gradient path to each rank's own part, and every
rank computes the same global loss (DDP's gradient averaging then gives the gradient of
that loss). Local batches must have the same size on every rank (drop_last=True).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import LossConfig


@dataclass
class ContrastiveBatch:
    """What `MMV.forward` returns and `MMVLoss` consumes; embeddings L2-normalised.

    video_va, audio_va: [B, D_va] in the video-audio space (`va`; `vat` for shared)
    video_vt: [B, D_vt] in the video-text space (`vat`; `vt` for disjoint)
    text_vt: [B, K, D_vt] or None (no text in this batch)
    positive_mask: [B, K] bool, which narration slots are real
    has_text: [B] bool, clips that take part in MIL-NCE
    has_audio: [B] bool, clips that take part in NCE
    """

    video_va: Tensor
    audio_va: Tensor
    video_vt: Tensor
    text_vt: Tensor | None
    positive_mask: Tensor | None
    has_text: Tensor
    has_audio: Tensor


def _full_precision(x: Tensor) -> Tensor:
    """bf16/fp16 embeddings (autocast) -> float32; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss depends on every rank's slice
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` from every rank along dim 0 (rank order), differentiably.

    The identity when torch.distributed is not initialised or has one process.
    """
    if not _distributed():
        return x
    return _AllGatherWithGrad.apply(x)


def gather_no_grad(x: Tensor) -> Tensor:
    """all_gather for masks and other tensors that need no gradient."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def nce(video: Tensor, audio: Tensor, temperature: float) -> Tensor:
    """Symmetric-negative NCE over a batch of matching pairs `[n, D]`, mean over clips."""
    n = video.shape[0]
    s = (video @ audio.T) / temperature  # s[i, j] = s(v_i, a_j)
    # Row i: (v_i, a_j) for all j (positive included); column i without the diagonal:
    # (v_j, a_i), j ≠ i — so the positive is counted once.
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=s.device)
    cols = s.T.masked_fill(~off_diagonal, float("-inf"))
    denominator = torch.logsumexp(torch.cat((s, cols), dim=1), dim=1)
    return (denominator - s.diagonal()).mean()


def info_nce(queries: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """One-way InfoNCE: row i of `queries` against its own target i, the other targets
    as negatives; mean over rows. What the after-training fits use (model/deflation.py,
    model/audio_bridge.py), where only the queries' side learns."""
    logits = queries @ targets.T / temperature
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


def mil_nce(video: Tensor, text: Tensor, positive_mask: Tensor, temperature: float) -> Tensor:
    """MIL-NCE: video `[n, D]`, text `[n, K, D]`, positive_mask `[n, K]` (every clip must
    have at least one valid narration). Mean over clips."""
    n, k, _ = text.shape
    s = torch.einsum("id,jkd->ijk", video, text) / temperature  # s[i, j, k] = s(v_i, t_jk)
    valid = positive_mask[None, :, :].expand(n, n, k)
    s = s.masked_fill(~valid, float("-inf"))
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    positives = torch.logsumexp(s[eye], dim=1)  # s[i, i, :] -> [n, K]
    rows = s.reshape(n, n * k)  # (v_i, t_jk) for all j, k
    cols = s.transpose(0, 1).masked_fill(eye[:, :, None], float("-inf"))  # (v_j, t_ik), j ≠ i
    denominator = torch.logsumexp(torch.cat((rows, cols.reshape(n, n * k)), dim=1), dim=1)
    return (denominator - positives).mean()


class MMVLoss(nn.Module):
    """λ_va · NCE(video, audio) + λ_vt · MIL-NCE(video, text) over the (global) batch.

    Returns `(total, {"nce_va": ..., "mil_nce_vt": ...})`. Clips without text
    (`has_text` False, or no valid narration) take part in NCE only; clips without
    audio (`has_audio` False) in MIL-NCE only. A term with no clip is 0.
    """

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        if config.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {config.temperature}")
        self.temperature = config.temperature
        self.lambda_va = config.lambda_va
        self.lambda_vt = config.lambda_vt

    def forward(self, batch: ContrastiveBatch) -> tuple[Tensor, dict[str, Tensor]]:
        # Similarities and log-sum-exps in float32 even inside a bf16 autocast region.
        with torch.autocast(device_type=batch.video_va.device.type, enabled=False):
            return self._loss(batch)

    def _loss(self, batch: ContrastiveBatch) -> tuple[Tensor, dict[str, Tensor]]:
        video_va = gather_with_grad(_full_precision(batch.video_va))
        zero = video_va.sum() * 0.0  # keeps the graph connected when a term is empty
        terms: dict[str, Tensor] = {"nce_va": zero, "mil_nce_vt": zero}

        if self.lambda_va != 0:
            audio_va = gather_with_grad(_full_precision(batch.audio_va))
            has_audio = gather_no_grad(batch.has_audio.to(torch.uint8)).bool()
            if int(has_audio.sum()) > 0:
                terms["nce_va"] = nce(video_va[has_audio], audio_va[has_audio], self.temperature)

        if self.lambda_vt != 0 and batch.text_vt is not None:
            assert batch.positive_mask is not None
            video_vt = gather_with_grad(_full_precision(batch.video_vt))
            text_vt = gather_with_grad(_full_precision(batch.text_vt))
            positive = gather_no_grad(batch.positive_mask.to(torch.uint8)).bool()
            has_text = gather_no_grad(batch.has_text.to(torch.uint8)).bool()
            use = has_text & positive.any(dim=1)
            if int(use.sum()) > 0:
                terms["mil_nce_vt"] = mil_nce(
                    video_vt[use], text_vt[use], positive[use], self.temperature
                )

        total = self.lambda_va * terms["nce_va"] + self.lambda_vt * terms["mil_nce_vt"]
        # Touch every local embedding (with weight 0) so that every parameter gets a
        # gradient on every step, even when a batch has no text or no audio: DDP then
        # needs no find_unused_parameters.
        local = [batch.video_va, batch.audio_va, batch.video_vt]
        if batch.text_vt is not None:
            local.append(batch.text_vt)
        total = total + 0.0 * sum(x.float().sum() for x in local)
        return total, terms
