"""Deflation: the video network applied to still images (MMV property iv).

The deflated network is the video backbone in image mode — TSM-ResNet with the
temporal shift off, S3D-G with every temporal kernel summed over time — see
`forward(x, deflated=True)` in model/backbones. Because the video network zero-pads at
clip borders, the deflated network on an image is not the video network on the clip
made of that image repeated. The paper closes the gap by learning new BN γ/β for the
deflated network so that its output on an image matches, in L1, the video network's
output on the repeated-frame clip; running means and variances stay those of the video
network. `calibrate_image_bn` learns such γ/β, but against another target: on a trained
network the static clip is the wrong one (it has learnt motion, and a static clip is
unlike any video it indexes), so a still is fitted to the moving clip it was taken from,
contrastively (docs/training.md, "Images", has the measurements). The γ/β live in
`model.image_bn` (buffers, so saved with the checkpoint and untouched by the trainer's
optimiser), and `deflated_features` uses them once calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm import tqdm

from model.errors import ModelInputError
from model.losses import info_nce

if TYPE_CHECKING:
    from model.mmv import MMV


def batch_norm_names(module: nn.Module) -> list[str]:
    """Names of the BN layers (plain or SyncBatchNorm) of a module, in module order."""
    return [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
    ]


def _key(name: str, which: str) -> str:
    return name.replace(".", "__") + "__" + which


class ImageBatchNorm(nn.Module):
    """γ/β of the deflated network, one pair per BN layer of the video backbone.

    Before calibration (`calibrated` False) the deflated network uses the video γ/β.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.names = batch_norm_names(backbone)
        modules = dict(backbone.named_modules())
        for name in self.names:
            bn = modules[name]
            self.register_buffer(_key(name, "weight"), bn.weight.detach().clone())
            self.register_buffer(_key(name, "bias"), bn.bias.detach().clone())
        self.register_buffer("calibrated", torch.tensor(False))

    def get(self, name: str) -> tuple[Tensor, Tensor]:
        return getattr(self, _key(name, "weight")), getattr(self, _key(name, "bias"))

    def overrides(self) -> dict[str, Tensor]:
        """`{"<bn>.weight": γ, "<bn>.bias": β}` for `functional_call`; empty until calibrated."""
        if not bool(self.calibrated):
            return {}
        out: dict[str, Tensor] = {}
        for name in self.names:
            weight, bias = self.get(name)
            out[f"{name}.weight"] = weight
            out[f"{name}.bias"] = bias
        return out

    @torch.no_grad()
    def set(self, values: dict[str, Tensor]) -> None:
        for name in self.names:
            weight, bias = self.get(name)
            weight.copy_(values[f"{name}.weight"])
            bias.copy_(values[f"{name}.bias"])
        self.calibrated.fill_(True)

    @torch.no_grad()
    def reset(self) -> None:
        """Forget the calibration (after further training it no longer fits)."""
        self.calibrated.fill_(False)


def deflated_features(
    backbone: nn.Module, images: Tensor, bn: dict[str, Tensor] | None = None
) -> Tensor:
    """Backbone features of images `[B, H, W, 3]` through the deflated network, with
    `bn` (name.weight/name.bias -> tensor) replacing the video network's γ/β."""
    if bn:
        return functional_call(backbone, bn, (images,), {"deflated": True}, strict=False)
    return backbone(images, deflated=True)


def repeat_as_clip(images: Tensor, frames: int) -> Tensor:
    """Images `[B, H, W, 3]` -> static clips `[B, frames, H, W, 3]`."""
    return images.unsqueeze(1).expand(-1, frames, -1, -1, -1).contiguous()


@dataclass
class CalibrationReport:
    # The calibration objective (see calibrate_image_bn) on the held-out images: with the
    # video γ/β, then with the learned ones; and the share of held-out images whose own
    # target is their nearest among the held-out targets (first video space).
    loss_before: float
    loss_after: float  # the learned γ/β are kept only when `applied`
    steps: int
    applied: bool  # False when calibration did not improve the objective (model left as it was)
    target: str  # "clip": the moving clips the frames come from; "static": repeated frames
    recall_before: float = 0.0
    recall_after: float = 0.0

    def as_dict(self) -> dict[str, float | bool | str]:
        return {
            "target": self.target,
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "held_out_r1_before": self.recall_before,
            "held_out_r1_after": self.recall_after,
            "applied": self.applied,
        }


def _pixels(x: Tensor) -> Tensor:
    """uint8 or float pixels -> float in [0, 1]."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _as_inputs(model: MMV, frames_or_clips: Tensor) -> tuple[Tensor, Tensor | None]:
    """(images [N, H, W, 3], clips [N, T, H, W, 3] or None), uint8 kept as uint8: a few
    thousand stills of the paper's 200² frames would take 4 GB as floats."""
    x = torch.as_tensor(frames_or_clips)
    if x.ndim == 5:  # clips: their middle frames are the images
        clips: Tensor | None = x.to(model.device)
        images = x[:, x.shape[1] // 2].to(model.device)
    else:
        clips, images = None, x.to(model.device)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ModelInputError(
            f"calibration wants images [N, H, W, 3] or clips [N, T, H, W, 3], got {tuple(x.shape)}"
        )
    return images, clips


@torch.no_grad()
def moment_matched_bn(model: MMV, images: Tensor, frames: int) -> dict[str, Tensor]:
    """Image-mode γ/β that give every BN layer of the deflated network the per-channel
    output mean and variance the video network has on the static clips.

    One video pass records the mean/variance of each BN layer's input; one deflated pass
    then sets each layer's γ/β from its own input statistics, layer after layer, so later
    layers already see corrected inputs. A cheap, data-driven starting point for the L1
    fit: with short clips (S3D-G's temporal strides leave one frame deep in the network,
    so the video net uses only the centre tap where the deflated net sums all taps) the
    plain deflated activations can be orders of magnitude off.
    """
    backbone = model.video_backbone
    modules = dict(backbone.named_modules())
    names = model.image_bn.names
    video_stats: dict[str, tuple[Tensor, Tensor]] = {}

    def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
        dims = [0, *range(2, x.ndim)]
        x = x.double()
        return x.mean(dims), x.var(dims, unbiased=False)

    def record(name: str):
        def hook(_m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            video_stats[name] = channel_stats(inputs[0])

        return hook

    was_training = backbone.training
    backbone.eval()  # running statistics must stay the video network's
    handles = [modules[n].register_forward_pre_hook(record(n)) for n in names]
    try:
        backbone(repeat_as_clip(images, frames))
    finally:
        for h in handles:
            h.remove()

    fitted: dict[str, Tensor] = {}

    def correct(name: str):
        def hook(bn: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> Tensor:
            x = inputs[0]
            mu_d, var_d = channel_stats(x)
            mu_v, var_v = video_stats[name]
            sigma = (bn.running_var.double() + bn.eps).sqrt()
            mean = bn.running_mean.double()
            gamma, beta = bn.weight.double(), bn.bias.double()
            ratio = ((var_v + bn.eps) / (var_d + bn.eps)).sqrt()
            new_gamma = gamma * ratio
            new_beta = beta + gamma * (mu_v - mean) / sigma - new_gamma * (mu_d - mean) / sigma
            fitted[f"{name}.weight"] = new_gamma.to(bn.weight.dtype)
            fitted[f"{name}.bias"] = new_beta.to(bn.bias.dtype)
            return torch.nn.functional.batch_norm(
                x,
                bn.running_mean,
                bn.running_var,
                fitted[f"{name}.weight"],
                fitted[f"{name}.bias"],
                False,
                0.0,
                bn.eps,
            )

        return hook

    handles = [modules[n].register_forward_hook(correct(n)) for n in names]
    try:
        backbone(images, deflated=True)
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    return fitted


def _top1(images: Tensor, targets: Tensor) -> float:
    """Share of images whose own target is the nearest of all targets."""
    nearest = (images @ targets.T).argmax(dim=1)
    return float((nearest == torch.arange(len(images), device=images.device)).float().mean())


def calibrate_image_bn(
    model: MMV,
    frames_or_clips: Tensor,
    steps: int = 400,
    lr: float = 3e-3,
    batch_size: int = 128,
    frames: int | None = None,
    seed: int = 0,
    progress: bool = True,
    clip_targets: dict[str, Tensor] | None = None,
) -> CalibrationReport:
    """Learn the deflated network's BN γ/β so that a still lands where its video does.

    `frames_or_clips`: clips `[N, T, H, W, 3]` (float in [0, 1] or uint8), whose middle
    frames are the stills, or stills `[N, H, W, 3]` alone; use a few hundred or more
    (with a handful the per-channel γ/β memorise them).

    Targets (the video network in eval mode, L2-normalised embeddings in every video
    space): for clips, the clip each still was taken from, *as it moves*; for stills
    alone, the static clip of the still repeated `frames` times (default
    `cfg.video.frames`), the paper's target. The paper's target loses on a trained
    network: it has learnt motion, a static clip is unlike any video it indexes, and
    image → video search with γ/β fitted to static clips scored below an untrained
    network (docs/training.md, "Images"). The objective is InfoNCE, each still against
    its own target with the batch's other targets as negatives (what search needs: its
    target nearest, not merely near), at the model's temperature, averaged over spaces.

    γ/β start from the video network's, or from `moment_matched_bn` (first `batch_size`
    stills) when that scores better; Adam then fits them (only them); the better of
    start and fit is kept, and only if it lowers the objective. With 10 stills or more
    every 5th is held out: the start, the fit and whether to keep the result are judged
    on those, and the report's figures are theirs. Call it after training, before saving.

    `clip_targets` (space -> `[N, D]`, L2-normalised): the embeddings of the clips the
    stills `[N, H, W, 3]` were taken from, when those were computed already (the clips
    themselves then need not be held in memory; model/training/calibration.py).
    """
    images, clips = _as_inputs(model, frames_or_clips)
    frames = frames or model.config.video.frames
    temperature = model.config.loss.temperature
    backbone = model.video_backbone
    # Every 5th image is held out to choose between candidates: γ/β fitted to a few
    # images can lower their loss while moving other images away (seen on small sets).
    held = torch.zeros(images.shape[0], dtype=torch.bool)
    if images.shape[0] >= 10:
        held[::5] = True
    fit_idx = (~held).nonzero().flatten() if held.any() else torch.arange(images.shape[0])
    val_idx = held.nonzero().flatten() if held.any() else fit_idx
    was_training = model.training
    # Only γ/β are learned: stop autograd from computing any weight gradient.
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    model.eval()
    try:

        def outputs(features: Tensor) -> list[Tensor]:
            z = model.heads.video(features)
            return [F.normalize(z[space].float(), dim=-1) for space in sorted(z)]

        def target_outputs(rows: Tensor) -> list[Tensor]:
            if clips is not None:
                return outputs(backbone(_pixels(clips[rows])))
            return outputs(backbone(repeat_as_clip(_pixels(images[rows]), frames)))

        with torch.no_grad():
            every = torch.arange(images.shape[0])
            targets = (
                [clip_targets[space].to(images.device).float() for space in sorted(clip_targets)]
                if clip_targets is not None
                else [
                    torch.cat(parts)
                    for parts in zip(
                        *(target_outputs(rows) for rows in every.split(batch_size)), strict=True
                    )
                ]
            )

        def objective(out: list[Tensor], idx: Tensor) -> Tensor:
            parts = [info_nce(o, t[idx], temperature) for o, t in zip(out, targets, strict=True)]
            return torch.stack(parts).mean()

        def validation(bn_params: dict[str, Tensor] | None) -> tuple[float, float]:
            with torch.no_grad():
                outs = [
                    outputs(deflated_features(backbone, _pixels(images[rows]), bn_params))
                    for rows in val_idx.split(batch_size)
                ]
                joined = [torch.cat(p) for p in zip(*outs, strict=True)]
                return float(objective(joined, val_idx)), _top1(joined[0], targets[0][val_idx])

        modules = dict(backbone.named_modules())
        video_bn = {
            f"{n}.{w}": getattr(modules[n], w).detach()
            for n in model.image_bn.names
            for w in ("weight", "bias")
        }
        before, recall_before = validation(None)
        matched = moment_matched_bn(model, _pixels(images[fit_idx[:batch_size]]), frames)
        at_matched, recall_matched = validation(matched)
        if at_matched < before:
            start, at_start, recall_start = matched, at_matched, recall_matched
        else:
            start, at_start, recall_start = video_bn, before, recall_before
        params = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}

        optimizer = torch.optim.Adam(list(params.values()), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in tqdm(range(steps), desc="image BN calibration", disable=not progress):
            pick = torch.randperm(fit_idx.numel(), generator=generator)[:batch_size]
            idx = fit_idx[pick]
            stills = _pixels(images[idx])
            loss = objective(outputs(deflated_features(backbone, stills, params)), idx)
            grads = torch.autograd.grad(loss, list(params.values()))
            for p, g in zip(params.values(), grads, strict=True):
                p.grad = g
            optimizer.step()
        after, recall_after = validation(params)
        best = params
        if after > at_start:  # Adam may overshoot the start
            best, after, recall_after = start, at_start, recall_start
        applied = after < before
        if applied:
            model.image_bn.set({k: v.detach() for k, v in best.items()})
        else:
            after, recall_after = before, recall_before
        target = "static" if clips is None and clip_targets is None else "clip"
        return CalibrationReport(before, after, steps, applied, target, recall_before, recall_after)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad[name])
        model.train(was_training)
