"""Checkpoints: one directory per model version.

    weights.safetensors   every parameter and persistent buffer (incl. BN statistics
                          and the image-mode BN γ/β)
    config.json           the ModelConfig: architecture, sizes, space option and every
                          preprocessing parameter (fps, frames, crop, sample rate, mel
                          settings, max words); `load_config` reads it too
    vocab.json            the tokenizer's vocabulary, stop-words and max words
    metrics.json          whatever the trainer measured (free-form JSON object)

`load` rebuilds the model exactly (same outputs, bit for bit, on CPU) or raises
`CheckpointError` naming what it cannot honour.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.atomic_files import atomic_path, write_atomic
from model.config import ConfigError, ModelConfig
from model.errors import ModelError
from model.factory import build_model
from model.mmv import MMV
from model.tokenizer import Tokenizer, TokenizerError

FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.json"
METRICS = "metrics.json"
REQUIRED = (WEIGHTS, CONFIG, VOCAB, METRICS)
# State keys an older checkpoint may lack (load leaves them at their defaults).
OPTIONAL_PREFIXES = ("heads.audio_bridge.",)


class CheckpointError(ModelError):
    """A checkpoint directory this code cannot load."""


def save(model: MMV, directory: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write the four files (each via temp file + fsync + rename); returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if model.config.format_version != FORMAT_VERSION:
        raise CheckpointError(
            f"config format_version {model.config.format_version} is not {FORMAT_VERSION}"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(
            state,
            str(tmp),
            metadata={"format_version": str(FORMAT_VERSION), "space": model.config.heads.space},
        )
    write_atomic(out / CONFIG, model.config.to_json())
    write_atomic(out / VOCAB, json.dumps(model.tokenizer.to_dict(), ensure_ascii=False) + "\n")
    write_atomic(out / METRICS, json.dumps(metrics or {}, indent=2) + "\n")
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path.name} in {path.parent} is not valid JSON: {exc}") from exc


def load(directory: str | Path, map_location: str | torch.device = "cpu") -> MMV:
    """Rebuild the model saved in `directory` (eval mode)."""
    src = Path(directory)
    if not src.is_dir():
        raise CheckpointError(f"checkpoint directory {src} does not exist")
    missing = [name for name in REQUIRED if not (src / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {src} is missing {', '.join(missing)}")

    data = _read_json(src / CONFIG)
    if not isinstance(data, dict):
        raise CheckpointError(f"{src / CONFIG} does not hold a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {src} has format_version {version!r}; this code reads version "
            f"{FORMAT_VERSION}"
        )
    try:
        config = ModelConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"config.json of {src} cannot be used: {exc}") from exc
    try:
        tokenizer = Tokenizer.load(src / VOCAB)
    except TokenizerError as exc:
        raise CheckpointError(f"vocabulary of {src} cannot be used: {exc}") from exc
    if tokenizer.max_words != config.text.max_words:
        raise CheckpointError(
            f"vocab.json keeps {tokenizer.max_words} words but config.json says "
            f"text.max_words={config.text.max_words}"
        )
    if not isinstance(_read_json(src / METRICS), dict):
        raise CheckpointError(f"{src / METRICS} does not hold a JSON object")

    try:
        state = load_file(str(src / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{src / WEIGHTS} cannot be read: {exc}") from exc
    try:
        model = build_model(config, tokenizer, load_word_vectors=False)
    except (ConfigError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {src} describes a model this code cannot build: {exc}"
        ) from exc
    expected = model.state_dict()
    # Checkpoints from before the audio bridge lack it: it then stays uncalibrated, and
    # audio reaches S_vat through g_va→vat as before.
    optional = {k for k in expected if k.startswith(OPTIONAL_PREFIXES)}
    absent = sorted(set(expected) - set(state) - optional)
    extra = sorted(set(state) - set(expected))
    if absent or extra:
        raise CheckpointError(
            f"weights of {src} do not match config.json: missing {absent[:5]}"
            f"{'...' if len(absent) > 5 else ''}, unexpected {extra[:5]}"
            f"{'...' if len(extra) > 5 else ''}"
        )
    for key, value in expected.items():
        if key not in state:
            continue
        if tuple(value.shape) != tuple(state[key].shape):
            raise CheckpointError(
                f"weights of {src}: '{key}' has shape {tuple(state[key].shape)}, the model "
                f"built from config.json and vocab.json expects {tuple(value.shape)}"
            )
    missing_optional = optional - set(state)
    model.load_state_dict(state, strict=not missing_optional)
    model.to(map_location)
    model.eval()
    return model


def read_metrics(directory: str | Path) -> dict[str, Any]:
    data = _read_json(Path(directory) / METRICS)
    return data if isinstance(data, dict) else {}
