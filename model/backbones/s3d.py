"""S3D-G video backbone (Xie et al. 2018): Inception-v1 in 3D with separable
spatio-temporal convolutions (1xkxk then kx1x1) and self-gating, laid out as the
official MMV release (full 7x7x7 first conv, separable convs and gating from Conv2d_2c).

Video `[B, T, H, W, 3]` in [0, 1] -> `[B, 1024 * s3d_width_multiplier]`, mean over
time and space. Padding is TensorFlow "SAME" (output = ceil(input / stride)) so any
clip length works, down to the single frame of the deflated image network.

Deflated (image) mode sums every temporal kernel over time (a 7x7x7 kernel becomes a
7x7 one, a 3x1x1 one a 1x1x1) and runs the network on `T = 1`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import VideoConfig

# (branch0 1x1, branch1 1x1, branch1 3x3, branch2 1x1, branch2 3x3, branch3 pool-proj)
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(
    x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int], value: float = 0.0
) -> Tensor:
    t, h, w = x.shape[-3:]
    pt = same_padding(t, kernel[0], stride[0])
    ph = same_padding(h, kernel[1], stride[1])
    pw = same_padding(w, kernel[2], stride[2])
    if not any(pt + ph + pw):
        return x
    return F.pad(x, (*pw, *ph, *pt), value=value)


class ConvBNReLU3d(nn.Module):
    """One 3D conv (no bias) -> BN -> ReLU, SAME padding; temporal kernel summed when
    deflated."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.conv = nn.Conv3d(in_ch, out_ch, kernel, stride=stride, bias=False)
        self.bn = nn.BatchNorm3d(out_ch)

    def forward(self, x: Tensor, deflated: bool) -> Tensor:
        weight = self.conv.weight
        kernel = self.kernel
        if deflated and kernel[0] > 1:
            weight = weight.sum(dim=2, keepdim=True)
            kernel = (1, *kernel[1:])
        x = F.conv3d(pad_same(x, kernel, self.stride), weight, stride=self.stride)
        return F.relu(self.bn(x))


class SelfGating(nn.Module):
    """x * sigmoid(W · mean_{t,h,w}(x) + b), per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * weights[:, :, None, None, None]


class Unit3d(nn.Module):
    """Conv unit: full 3D conv, or separable (1xkxk then kx1x1, each with BN-ReLU) when
    `separable` and the spatial kernel is > 1; optional self-gating after it."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        separable: bool = False,
        gating: bool = False,
    ) -> None:
        super().__init__()
        kt, kh, kw = kernel
        st, sh, sw = stride
        layers: list[ConvBNReLU3d] = []
        if separable and kh > 1:
            layers.append(ConvBNReLU3d(in_ch, out_ch, (1, kh, kw), (1, sh, sw)))
            layers.append(ConvBNReLU3d(out_ch, out_ch, (kt, 1, 1), (st, 1, 1)))
        else:
            layers.append(ConvBNReLU3d(in_ch, out_ch, kernel, stride))
        self.convs = nn.ModuleList(layers)
        self.gating = SelfGating(out_ch) if gating else None

    def forward(self, x: Tensor, deflated: bool) -> Tensor:
        for layer in self.convs:
            x = layer(x, deflated)
        return x if self.gating is None else self.gating(x)


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: Tensor, deflated: bool) -> Tensor:
        del deflated  # pooling over one frame is the identity in time
        x = pad_same(x, self.kernel, self.stride, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionBlock3d(nn.Module):
    def __init__(self, in_ch: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.branch0 = Unit3d(in_ch, c0, gating=True)
        self.branch1a = Unit3d(in_ch, c1a)
        self.branch1b = Unit3d(c1a, c1b, (3, 3, 3), separable=True, gating=True)
        self.branch2a = Unit3d(in_ch, c2a)
        self.branch2b = Unit3d(c2a, c2b, (3, 3, 3), separable=True, gating=True)
        self.branch3_pool = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.branch3 = Unit3d(in_ch, c3, gating=True)
        self.output_dim = c0 + c1b + c2b + c3

    def forward(self, x: Tensor, deflated: bool) -> Tensor:
        b0 = self.branch0(x, deflated)
        b1 = self.branch1b(self.branch1a(x, deflated), deflated)
        b2 = self.branch2b(self.branch2a(x, deflated), deflated)
        b3 = self.branch3(self.branch3_pool(x, deflated), deflated)
        return torch.cat((b0, b1, b2, b3), dim=1)


class S3DG(nn.Module):
    def __init__(self, config: VideoConfig) -> None:
        super().__init__()
        m = config.s3d_width_multiplier
        if m <= 0:
            raise ValueError(f"s3d_width_multiplier must be positive, got {m}")

        def ch(c: int) -> int:
            return max(1, round(c * m))

        layers: dict[str, nn.Module] = {
            "Conv2d_1a_7x7": Unit3d(3, ch(64), (7, 7, 7), (2, 2, 2)),
            "MaxPool_2a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv2d_2b_1x1": Unit3d(ch(64), ch(64)),
            "Conv2d_2c_3x3": Unit3d(ch(64), ch(192), (3, 3, 3), separable=True, gating=True),
            "MaxPool_3a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        }
        in_ch = ch(192)
        for name, channels in INCEPTION_CHANNELS.items():
            if name == "Mixed_4b":
                layers["MaxPool_4a_3x3"] = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                layers["MaxPool_5a_2x2"] = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            block = InceptionBlock3d(in_ch, tuple(ch(c) for c in channels))
            layers[name] = block
            in_ch = block.output_dim
        self.layers = nn.ModuleDict(layers)
        self.output_dim = in_ch
        for mod in self.modules():
            if isinstance(mod, nn.Conv3d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor, deflated: bool = False) -> Tensor:
        """`x`: video `[B, T, H, W, 3]`, or images `[B, H, W, 3]` when `deflated`."""
        if deflated:
            x = x.unsqueeze(1)
        x = x.permute(0, 4, 1, 2, 3)  # [B, 3, T, H, W]
        for layer in self.layers.values():
            x = layer(x, deflated)
        return x.mean(dim=(2, 3, 4))
