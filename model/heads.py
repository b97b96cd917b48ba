"""Projection heads from backbone features into the embedding spaces.

Forms follow the official release (config `fac_relu`):
- video -> fine space: MLP  Linear(d, D) -> BN -> ReLU -> Linear(D, D, no bias) -> BN
- audio -> fine space, text -> its space: Linear (with bias), no BN
- FAC  g_va->vat: ReLU -> Linear(D_va, D_vat, no bias) -> BN, applied to the
  un-normalised fine embedding of video (training and inference) and of audio
  (inference only: keeps audio out of that head's BN statistics during training) —
  until `audio_bridge`, audio's own copy of g fitted after training, is calibrated
  (model/audio_bridge.py).
- disjoint video -> vt: Linear (no bias) -> BN on the backbone features (the release's
  `vid2txt` head); shared: one head per modality into the single space `vat`.

Every head returns un-normalised embeddings; MMV L2-normalises them.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from model.audio_bridge import AudioBridge
from model.config import HeadConfig
from model.spaces import SPACES


def _bn(dim: int, config: HeadConfig) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(dim, eps=config.bn_eps, momentum=config.bn_momentum)


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, config: HeadConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.bn1 = _bn(out_dim, config)
        self.fc2 = nn.Linear(out_dim, out_dim, bias=False)
        self.bn2 = _bn(out_dim, config)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn2(self.fc2(F.relu(self.bn1(self.fc1(x)))))


class LinearBNHead(nn.Module):
    """Linear (no bias: BN follows) -> BN, optionally after a ReLU on the input."""

    def __init__(
        self, in_dim: int, out_dim: int, config: HeadConfig, relu_first: bool = False
    ) -> None:
        super().__init__()
        self.relu_first = relu_first
        self.fc = nn.Linear(in_dim, out_dim, bias=False)
        self.bn = _bn(out_dim, config)

    def forward(self, x: Tensor) -> Tensor:
        if self.relu_first:
            x = F.relu(x)
        return self.bn(self.fc(x))


class ProjectionHeads(nn.Module):
    """Base: `video(h)`, `audio(h, coarse=...)`, `text(h)` -> dict space -> [N, D]."""

    option: str

    @property
    def spaces(self) -> tuple[str, ...]:
        return SPACES[self.option]

    def video(self, h: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def audio(self, h: Tensor, coarse: bool = True) -> dict[str, Tensor]:
        raise NotImplementedError

    def text(self, h: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


class FACHeads(ProjectionHeads):
    option = "fac"

    def __init__(self, video_dim: int, audio_dim: int, text_dim: int, config: HeadConfig) -> None:
        super().__init__()
        self.video_to_va = MLPHead(video_dim, config.va_dim, config)
        self.audio_to_va = nn.Linear(audio_dim, config.va_dim)
        self.va_to_vat = LinearBNHead(config.va_dim, config.vat_dim, config, relu_first=True)
        self.text_to_vat = nn.Linear(text_dim, config.vat_dim)
        # Audio's own way into vat once fitted after training (model/audio_bridge.py).
        self.audio_bridge = AudioBridge(config.va_dim, config.vat_dim, config.bn_eps)

    def video(self, h: Tensor) -> dict[str, Tensor]:
        va = self.video_to_va(h)
        return {"va": va, "vat": self.va_to_vat(va)}

    def audio(self, h: Tensor, coarse: bool = True) -> dict[str, Tensor]:
        va = self.audio_to_va(h)
        out = {"va": va}
        if coarse:
            bridge = self.audio_bridge if self.audio_bridge.is_calibrated else self.va_to_vat
            out["vat"] = bridge(va)
        return out

    def text(self, h: Tensor) -> dict[str, Tensor]:
        return {"vat": self.text_to_vat(h)}


class SharedHeads(ProjectionHeads):
    option = "shared"

    def __init__(self, video_dim: int, audio_dim: int, text_dim: int, config: HeadConfig) -> None:
        super().__init__()
        self.video_to_vat = MLPHead(video_dim, config.va_dim, config)
        self.audio_to_vat = nn.Linear(audio_dim, config.va_dim)
        self.text_to_vat = nn.Linear(text_dim, config.va_dim)

    def video(self, h: Tensor) -> dict[str, Tensor]:
        return {"vat": self.video_to_vat(h)}

    def audio(self, h: Tensor, coarse: bool = True) -> dict[str, Tensor]:
        return {"vat": self.audio_to_vat(h)}

    def text(self, h: Tensor) -> dict[str, Tensor]:
        return {"vat": self.text_to_vat(h)}


class DisjointHeads(ProjectionHeads):
    option = "disjoint"

    def __init__(self, video_dim: int, audio_dim: int, text_dim: int, config: HeadConfig) -> None:
        super().__init__()
        self.video_to_va = MLPHead(video_dim, config.va_dim, config)
        self.video_to_vt = LinearBNHead(video_dim, config.vat_dim, config)
        self.audio_to_va = nn.Linear(audio_dim, config.va_dim)
        self.text_to_vt = nn.Linear(text_dim, config.vat_dim)

    def video(self, h: Tensor) -> dict[str, Tensor]:
        return {"va": self.video_to_va(h), "vt": self.video_to_vt(h)}

    def audio(self, h: Tensor, coarse: bool = True) -> dict[str, Tensor]:
        return {"va": self.audio_to_va(h)}

    def text(self, h: Tensor) -> dict[str, Tensor]:
        return {"vt": self.text_to_vt(h)}


HEADS: dict[str, type[ProjectionHeads]] = {
    "fac": FACHeads,
    "shared": SharedHeads,
    "disjoint": DisjointHeads,
}


def build_heads(
    config: HeadConfig, video_dim: int, audio_dim: int, text_dim: int
) -> ProjectionHeads:
    if config.space not in HEADS:
        raise ValueError(f"unknown space option '{config.space}': expected one of {sorted(HEADS)}")
    return HEADS[config.space](video_dim, audio_dim, text_dim, config)  # type: ignore[call-arg]
