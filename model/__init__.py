"""MMV in PyTorch: build, embed, train, save and load (see docs/architecture.md).

The names below are imported on first use (PEP 562), so `import model.media` or
`model.corpus` does not pull in the network code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, tuple[str, str]] = {
    "CheckpointError": ("model.checkpoint", "CheckpointError"),
    "load_model": ("model.checkpoint", "load"),
    "save_model": ("model.checkpoint", "save"),
    "ConfigError": ("model.config", "ConfigError"),
    "ModelConfig": ("model.config", "ModelConfig"),
    "available_configs": ("model.config", "available_configs"),
    "load_config": ("model.config", "load_config"),
    "CalibrationReport": ("model.deflation", "CalibrationReport"),
    "calibrate_image_bn": ("model.deflation", "calibrate_image_bn"),
    "ModelError": ("model.errors", "ModelError"),
    "ModelInputError": ("model.errors", "ModelInputError"),
    "build_model": ("model.factory", "build_model"),
    "ContrastiveBatch": ("model.losses", "ContrastiveBatch"),
    "MMVLoss": ("model.losses", "MMVLoss"),
    "gather_with_grad": ("model.losses", "gather_with_grad"),
    "mil_nce": ("model.losses", "mil_nce"),
    "nce": ("model.losses", "nce"),
    "MMV": ("model.mmv", "MMV"),
    "SPACES": ("model.spaces", "SPACES"),
    "space_for": ("model.spaces", "space_for"),
    "spaces_of": ("model.spaces", "spaces_of"),
    "Tokenizer": ("model.tokenizer", "Tokenizer"),
    "TokenizerError": ("model.tokenizer", "TokenizerError"),
    "WordVectors": ("model.word_vectors", "WordVectors"),
    "WordVectorsError": ("model.word_vectors", "WordVectorsError"),
    "read_word_vectors": ("model.word_vectors", "read_word_vectors"),
}

__all__ = [
    "MMV",
    "SPACES",
    "CalibrationReport",
    "CheckpointError",
    "ConfigError",
    "ContrastiveBatch",
    "MMVLoss",
    "ModelConfig",
    "ModelError",
    "ModelInputError",
    "Tokenizer",
    "TokenizerError",
    "WordVectors",
    "WordVectorsError",
    "available_configs",
    "build_model",
    "calibrate_image_bn",
    "gather_with_grad",
    "load_config",
    "load_model",
    "mil_nce",
    "nce",
    "read_word_vectors",
    "save_model",
    "space_for",
    "spaces_of",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from model.checkpoint import CheckpointError
    from model.checkpoint import load as load_model
    from model.checkpoint import save as save_model
    from model.config import ConfigError, ModelConfig, available_configs, load_config
    from model.deflation import CalibrationReport, calibrate_image_bn
    from model.errors import ModelError, ModelInputError
    from model.factory import build_model
    from model.losses import ContrastiveBatch, MMVLoss, gather_with_grad, mil_nce, nce
    from model.mmv import MMV
    from model.spaces import SPACES, space_for, spaces_of
    from model.tokenizer import Tokenizer, TokenizerError
    from model.word_vectors import WordVectors, WordVectorsError, read_word_vectors
