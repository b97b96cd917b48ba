"""TSM-ResNet v2 video backbone: a 2D pre-activation ResNet run on every frame, with
part of the channels shifted in time inside each block (paper: ResNet50 / ResNet50x2,
1/8 of the channels each way).

Video `[B, T, H, W, 3]` in [0, 1] -> `[B, D]`: mean over space, then over time.
Deflated (image) mode switches the shift off: the same weights on single frames.
"""

from __future__ import annotations

from torch import Tensor, nn

from model.backbones.resnet_v2 import ResNetV2Trunk
from model.config import VideoConfig


class TSMResNet(nn.Module):
    def __init__(self, config: VideoConfig) -> None:
        super().__init__()
        self.trunk = ResNetV2Trunk(3, config.depth, config.width, config.shift_fraction)
        self.output_dim = self.trunk.output_dim

    def forward(self, x: Tensor, deflated: bool = False) -> Tensor:
        """`x`: video `[B, T, H, W, 3]`, or images `[B, H, W, 3]` when `deflated`."""
        if deflated:
            frames = x.permute(0, 3, 1, 2)
            return self.trunk(frames, num_frames=None).mean(dim=(2, 3))
        b, t, h, w, c = x.shape
        frames = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        features = self.trunk(frames, num_frames=t).mean(dim=(2, 3))
        return features.view(b, t, -1).mean(dim=1)
