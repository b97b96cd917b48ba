"""Pre-activation ResNet (v2) trunk shared by the video (TSM) and audio backbones.

One code path for every size: depth picks the block type and counts, `width` is the
stem's channel count (64 = ResNet50, 128 = ResNet50x2, 16 = the tiny CPU config).
Blocks follow He et al. 2016 ("Identity Mappings"): BN -> ReLU before each conv, the
projection shortcut reads the pre-activated input. A block may shift part of its
pre-activated channels in time (TSM, Lin et al. 2019) before its first conv, as the
official MMV TSM-ResNet does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCKS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def temporal_shift(x: Tensor, num_frames: int, fraction: float) -> Tensor:
    """Shift channels in time: `[B*T, C, H, W]` -> same shape and memory layout.

    `int(C * fraction)` channels take the next frame's values and as many take the
    previous frame's (the official release: 1/8 each way); the rest stay. Clip borders
    are zero-padded, so a clip of one repeated frame is *not* exactly a still image:
    that gap is what BN re-calibration (model/deflation.py) closes.
    """
    nt, c, h, w = x.shape
    n = int(c * fraction)
    if n == 0:
        return x
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # The trunk's maps: shift on the [B, T, H, W, C] view they already are (no copy
        # to make it, and the result needs no reorder before the next conv).
        y = x.permute(0, 2, 3, 1).view(nt // num_frames, num_frames, h, w, c)
        # F.pad pads the last dims first: (C, W, H, T) pairs; T gets one zero frame.
        from_next = F.pad(y[:, 1:, ..., :n], (0, 0, 0, 0, 0, 0, 0, 1))
        from_prev = F.pad(y[:, :-1, ..., n : 2 * n], (0, 0, 0, 0, 0, 0, 1, 0))
        out = torch.cat((from_next, from_prev, y[..., 2 * n :]), dim=-1)
        return out.view(nt, h, w, c).permute(0, 3, 1, 2)
    z = x.reshape(nt // num_frames, num_frames, c, h, w)
    # Here the pairs are (W, H, C, T).
    from_next = F.pad(z[:, 1:, :n], (0, 0, 0, 0, 0, 0, 0, 1))
    from_prev = F.pad(z[:, :-1, n : 2 * n], (0, 0, 0, 0, 0, 0, 1, 0))
    return torch.cat((from_next, from_prev, z[:, :, 2 * n :]), dim=2).view(nt, c, h, w)


def max_pool_3x3_stride2(x: Tensor) -> Tensor:
    """`nn.MaxPool2d(3, stride=2, padding=1)`, run channels-last on CPU; the result has
    the input's memory layout.

    PyTorch's CPU pooling kernels are slow on contiguous NCHW maps and fast on NHWC
    (256x16x32x32, 2 cores, forward + backward: 33 ms NCHW, 10 ms NHWC). Strided slices
    with `torch.maximum` were as fast forward but 120 ms with the backward, which routes
    through masks.
    """
    if x.device.type != "cpu":
        return F.max_pool2d(x, 3, 2, 1)
    pooled = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, 2, 1)
    return pooled if not x.is_contiguous() else pooled.contiguous()


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)


class PreActBlock(nn.Module):
    """Basic block (ResNet18/34): two 3x3 convs."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, shift_fraction: float) -> None:
        super().__init__()
        self.shift_fraction = shift_fraction
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv(in_ch, out_ch, 3, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3)
        self.shortcut = conv(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: Tensor, num_frames: int | None) -> Tensor:
        preact = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(preact)
        if num_frames is not None and self.shift_fraction > 0:
            preact = temporal_shift(preact, num_frames, self.shift_fraction)
        r = self.conv1(preact)
        r = self.conv2(F.relu(self.bn2(r)))
        return shortcut + r


class PreActBottleneck(nn.Module):
    """Bottleneck block (ResNet50+): 1x1 -> 3x3 (strided) -> 1x1, inner width out/4."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, shift_fraction: float) -> None:
        super().__init__()
        mid = out_ch // 4
        self.shift_fraction = shift_fraction
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv(in_ch, mid, 1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = conv(mid, mid, 3, stride)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = conv(mid, out_ch, 1)
        self.shortcut = conv(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: Tensor, num_frames: int | None) -> Tensor:
        preact = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(preact)
        if num_frames is not None and self.shift_fraction > 0:
            preact = temporal_shift(preact, num_frames, self.shift_fraction)
        r = self.conv1(preact)
        r = self.conv2(F.relu(self.bn2(r)))
        r = self.conv3(F.relu(self.bn3(r)))
        return shortcut + r


class ResNetV2Trunk(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max pool) -> 4 stages -> BN -> ReLU: `[N, C, H, W]` maps.

    `num_frames` turns the temporal shift on (input is `[B*T, C, H, W]`); `None` runs
    the same weights frame by frame with no shift (the deflated image network, and the
    audio network which never shifts).
    """

    def __init__(
        self, in_channels: int, depth: int, width: int, shift_fraction: float = 0.0
    ) -> None:
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        if width < 1:
            raise ValueError(f"ResNet width must be positive, got {width}")
        bottleneck = depth >= 50
        block_cls = PreActBottleneck if bottleneck else PreActBlock
        stage_channels = [width * (4 if bottleneck else 1) * 2**i for i in range(4)]
        self.stem = conv(in_channels, width, 7, 2)
        blocks: list[nn.Module] = []
        in_ch = width
        for stage, (count, out_ch) in enumerate(
            zip(BLOCKS_PER_STAGE[depth], stage_channels, strict=True)
        ):
            for i in range(count):
                stride = 2 if (i == 0 and stage > 0) else 1
                blocks.append(block_cls(in_ch, out_ch, stride, shift_fraction))
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.final_bn = nn.BatchNorm2d(in_ch)
        self.output_dim = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Trained on contiguous NCHW maps: the recipe's run with channels-last trunks
        # learned measurably slower (the same seed, data and first step: loss 9.22
        # against 8.76 at step 150, test video->audio R@10 0.872 against 0.978 after
        # 2,500 steps; docs/training.md), while NCHW reproduces the default model's
        # run loss for loss. Inference, whose features agree to 1e-4, runs channels-last
        # (model/embedding.py freeze_for_inference).
        self.set_memory_format(torch.contiguous_format)

    def set_memory_format(self, memory_format: torch.memory_format) -> None:
        """The layout of the weights and maps: contiguous NCHW (the default, as trained)
        or channels-last. oneDNN's CPU convolutions are faster channels-last at these
        channel counts (bench/train.py and bench/embed.py measure one beside the other),
        which frozen inference copies use. Weights loaded later keep the layout
        (load_state_dict copies into it)."""
        self.memory_format = memory_format
        self.to(memory_format=memory_format)

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        x = max_pool_3x3_stride2(self.stem(x.contiguous(memory_format=self.memory_format)))
        for block in self.blocks:
            x = block(x, num_frames)
        return F.relu(self.final_bn(x))


def set_trunk_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    """Every ResNet trunk inside `model` on `memory_format` (benchmarks measure NCHW, the
    layout before channels-last, beside it)."""
    for module in model.modules():
        if isinstance(module, ResNetV2Trunk):
            module.set_memory_format(memory_format)
