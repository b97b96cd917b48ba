"""Model configs: plain dataclasses, stored as JSON (named configs in model/configs/).

A config holds everything needed to rebuild a model *and* to prepare its inputs
(fps, frames, crop size, sample rate, mel settings, max words): preprocessing
parameters live here and nowhere else, and travel with every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from model.errors import ModelError

CONFIG_DIR = Path(__file__).parent / "configs"

SpaceOption = Literal["shared", "disjoint", "fac"]
Modality = Literal["video", "audio", "image", "text"]
MODALITIES: tuple[str, ...] = ("video", "audio", "image", "text")


class ConfigError(ModelError, ValueError):
    """A config file or name that cannot be turned into a model."""


@dataclass
class VideoConfig:
    backbone: Literal["tsm_resnet", "s3d"] = "tsm_resnet"
    depth: int = 18  # ResNet depth (18, 34, 50); ignored by S3D-G
    width: int = 16  # channels of the stem; 64 = ResNet50, 128 = ResNet50x2
    s3d_width_multiplier: float = 1.0  # channel scale for S3D-G (1.0 = paper)
    frames: int = 8  # frames per clip fed to the network
    fps: float = 4.0  # frames are sampled at this rate: clip span = frames / fps
    crop_size: int = 64  # square crop side, pixels
    shift_fraction: float = 0.125  # TSM: share of channels shifted (1/8 each way total)


@dataclass
class AudioConfig:
    sample_rate: int = 16000
    n_mels: int = 64
    win_ms: float = 42.0
    hop_ms: float = 21.0
    depth: int = 18
    width: int = 16
    f_min: float = 0.0  # lowest mel filter edge, Hz
    f_max: float | None = None  # highest mel filter edge, Hz; None = sample_rate / 2
    log_offset: float = 1e-6  # log(mel magnitude + offset): keeps silence finite


@dataclass
class TextConfig:
    vocab_size: int = 5000  # upper bound of learned vocabulary (incl. PAD and UNK)
    embed_dim: int = 128  # word2vec is 300
    hidden_dim: int = 512  # per-word linear output (paper: 2048)
    max_words: int = 16
    word_vectors: str | None = None  # path of a word2vec/GloVe file; None = learned
    freeze_embeddings: bool = False  # True when word_vectors is set (paper: frozen)
    # Unknown words (UNK) left out of the max over words. The shipped configs set it;
    # a checkpoint saved without it keeps UNK, as it was trained and its stored text
    # vectors were made (a learned UNK row is never trained where the vocabulary holds
    # every training word, and pulled every query with an unseen word one way).
    ignore_unknown: bool = False


@dataclass
class HeadConfig:
    space: SpaceOption = "fac"
    va_dim: int = 512  # S_va (fine); also the shared space's size
    vat_dim: int = 256  # S_vat (coarse); also S_vt for disjoint
    bn_momentum: float = 0.1  # torch convention (= 1 - decay 0.9)
    bn_eps: float = 1e-5


@dataclass
class LossConfig:
    temperature: float = 0.07
    lambda_va: float = 1.0
    lambda_vt: float = 1.0
    num_positives: int = 3  # K narrations nearest in time per clip (MIL-NCE)


@dataclass
class TrainConfig:
    batch_size: int = 32
    steps: int = 2000
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    num_workers: int = 1
    eval_every: int = 500
    save_every: int = 100
    # "auto": bf16 autocast on CUDA and on CPUs with native bf16, else float32
    # (model/training/precision.py); "bf16" or "float32" force one.
    precision: str = "auto"


@dataclass
class ModelConfig:
    name: str = "tiny"
    format_version: int = 1
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    heads: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    notes: str = ""  # how this config departs from the paper, in words

    @property
    def clip_seconds(self) -> float:
        """Span of one training/inference window; audio covers the same span as video."""
        return self.video.frames / self.video.fps

    @property
    def audio_samples(self) -> int:
        return round(self.clip_seconds * self.audio.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def replace(self, **sections: Any) -> ModelConfig:
        """A copy with fields or sections changed: replace(heads={"space": "shared"})."""
        out = ModelConfig.from_dict(self.to_dict())
        for key, value in sections.items():
            current = getattr(out, key)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                setattr(out, key, dataclasses.replace(current, **value))
            else:
                setattr(out, key, value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        sections = {
            "video": VideoConfig,
            "audio": AudioConfig,
            "text": TextConfig,
            "heads": HeadConfig,
            "loss": LossConfig,
            "train": TrainConfig,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                section_cls = sections[key]
                allowed = {f.name for f in dataclasses.fields(section_cls)}
                bad = set(value) - allowed
                if bad:
                    raise ConfigError(f"unknown keys in config section '{key}': {sorted(bad)}")
                kwargs[key] = section_cls(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> ModelConfig:
    """A named config (`tiny`, `s3d`, `tsm-r50`, `tsm-r50x2`) or a path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ConfigError(
            f"no config '{name_or_path}': expected one of {available_configs()} or a JSON file"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config {path} is not valid JSON: {exc}") from exc
    return ModelConfig.from_dict(data)
