"""Deflation: the video network applied to still images (MMV property iv).

The deflated network is the video backbone in image mode — TSM-ResNet with the
temporal shift off, S3D-G with every temporal kernel summed over time — see
`forward(x, deflated=True)` in model/backbones. Because the video network zero-pads at
clip borders, the deflated network on an image is not the video network on the clip
made of that image repeated. The paper closes the gap by learning new BN γ/β for the
deflated network so that its output on an image matches, in L1, the video network's
output on the repeated-frame clip; running means and variances stay those of the video
network. `calibrate_image_bn` does that; the γ/β live in `model.image_bn` (buffers, so
saved with the checkpoint and untouched by the trainer's optimiser), and
`deflated_features` uses them once calibrated.
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
    # The calibration objective (relative L1 of features and embeddings, see
    # calibrate_image_bn) on the held-out images: with the video γ/β, then with the learned.
    l1_before: float
    l1_after: float  # the learned γ/β are kept only when `applied`
    steps: int
    applied: bool  # False when calibration did not improve L1 (model left as it was)


def _as_images(model: MMV, frames_or_images: Tensor) -> Tensor:
    x = torch.as_tensor(frames_or_images)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.ndim == 5:  # clips: calibrate on their middle frames
        x = x[:, x.shape[1] // 2]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ModelInputError(
            f"calibration wants images [N, H, W, 3] or clips [N, T, H, W, 3], got {tuple(x.shape)}"
        )
    return x.float().to(model.device)


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


def calibrate_image_bn(
    model: MMV,
    frames_or_images: Tensor,
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 32,
    frames: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CalibrationReport:
    """Learn the deflated network's BN γ/β so images match their static clips.

    `frames_or_images`: float images in [0, 1] `[N, H, W, 3]` (or uint8), or clips
    `[N, T, H, W, 3]` whose middle frames are used; use a few hundred (with a handful
    the per-channel γ/β memorise them). Targets: the video network in eval mode on each
    image repeated `frames` times (default `cfg.video.frames`). The objective is L1, as
    in the paper, on the backbone features *and* on the L2-normalised embeddings of every
    video space (what search compares; matching features alone sometimes moved the
    embeddings apart), each part divided by its targets' mean magnitude. γ/β start from
    the video network's, or from `moment_matched_bn` (first `batch_size` images) when
    that scores better; Adam then fits them (only them); the better of start and fit is
    kept, and only if it lowers the objective over all the given images. Call it after
    training, before saving. With 10 images or more every 5th is held out: the start,
    the fit and whether to keep the result are judged on those, and the report's L1
    values are theirs.
    """
    images = _as_images(model, frames_or_images)
    frames = frames or model.config.video.frames
    backbone = model.video_backbone
    # Every 5th image is held out to choose between candidates: γ/β fitted to a few
    # images can lower their L1 while moving other images away (seen on small sets).
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
            return [features] + [F.normalize(z[space].float(), dim=-1) for space in sorted(z)]

        with torch.no_grad():
            targets = [
                torch.cat(parts)
                for parts in zip(
                    *(
                        outputs(backbone(repeat_as_clip(chunk, frames)))
                        for chunk in images.split(batch_size)
                    ),
                    strict=True,
                )
            ]
        scales = [t.abs().mean().clamp_min(1e-12) for t in targets]

        def objective(out: list[Tensor], idx: Tensor) -> Tensor:
            parts = [
                (o - t[idx]).abs().mean() / s for o, t, s in zip(out, targets, scales, strict=True)
            ]
            return torch.stack(parts).mean()

        def validation(bn_params: dict[str, Tensor] | None) -> float:
            with torch.no_grad():
                outs = [
                    outputs(deflated_features(backbone, images[chunk], bn_params))
                    for chunk in val_idx.split(batch_size)
                ]
                return float(objective([torch.cat(p) for p in zip(*outs, strict=True)], val_idx))

        modules = dict(backbone.named_modules())
        video_bn = {
            f"{n}.{w}": getattr(modules[n], w).detach()
            for n in model.image_bn.names
            for w in ("weight", "bias")
        }
        before = validation(None)
        matched = moment_matched_bn(model, images[fit_idx[:batch_size]], frames)
        at_matched = validation(matched)
        start, at_start = (matched, at_matched) if at_matched < before else (video_bn, before)
        params = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}

        optimizer = torch.optim.Adam(list(params.values()), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in tqdm(range(steps), desc="image BN calibration", disable=not progress):
            pick = torch.randperm(fit_idx.numel(), generator=generator)[:batch_size]
            idx = fit_idx[pick]
            loss = objective(outputs(deflated_features(backbone, images[idx], params)), idx)
            grads = torch.autograd.grad(loss, list(params.values()))
            for p, g in zip(params.values(), grads, strict=True):
                p.grad = g
            optimizer.step()
        after = validation(params)
        best = params if after <= at_start else start  # Adam may overshoot the start
        after = min(after, at_start)
        applied = after < before
        if applied:
            model.image_bn.set({k: v.detach() for k, v in best.items()})
        return CalibrationReport(before, after, steps, applied)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad[name])
        model.train(was_training)
