"""Audio backbone: log-mel spectrogram (computed in the model) -> 2D ResNet v2 -> mean.

Waveform `[B, S]` -> `[B, D]`. The spectrogram is a one-channel image, time x mel.
"""

from __future__ import annotations

from torch import Tensor, nn

from model.audio_features import LogMelSpectrogram
from model.backbones.resnet_v2 import ResNetV2Trunk
from model.config import AudioConfig


class AudioResNet(nn.Module):
    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.features = LogMelSpectrogram(config)
        self.trunk = ResNetV2Trunk(1, config.depth, config.width, shift_fraction=0.0)
        self.output_dim = self.trunk.output_dim

    def forward(self, waveform: Tensor) -> Tensor:
        spectrogram = self.features(waveform).unsqueeze(1)  # [B, 1, frames, mels]
        return self.trunk(spectrogram, num_frames=None).mean(dim=(2, 3))
