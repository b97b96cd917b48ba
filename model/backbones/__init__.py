"""Backbones: video (TSM-ResNet v2, S3D-G), audio (ResNet v2 on log-mel), text."""

from __future__ import annotations

from torch import nn

from model.backbones.audio_resnet import AudioResNet
from model.backbones.s3d import S3DG
from model.backbones.text import TextEncoder
from model.backbones.tsm_resnet import TSMResNet
from model.config import VideoConfig

__all__ = ["S3DG", "AudioResNet", "TSMResNet", "TextEncoder", "build_video_backbone"]


def build_video_backbone(config: VideoConfig) -> nn.Module:
    """TSM-ResNet or S3D-G; both take `(x, deflated=False)` and expose `output_dim`."""
    if config.backbone == "tsm_resnet":
        return TSMResNet(config)
    if config.backbone == "s3d":
        return S3DG(config)
    raise ValueError(f"unknown video backbone '{config.backbone}' (tsm_resnet or s3d)")
