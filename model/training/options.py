"""What a training run is asked to do: TrainOptions, from the command line or a caller,
and the run's config (a named config or checkpoint, with `--set` overrides)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import ConfigError, ModelConfig, load_config
from model.training.errors import TrainError

ARCHITECTURE = ("video", "audio", "text", "heads")  # config sections a fine-tune keeps


@dataclass
class TrainOptions:
    data: Path  # a corpus folder (manifest.jsonl) or a folder of videos with transcripts
    out: Path  # becomes the checkpoint; holds the resume state while training
    config: str | Path = "tiny"  # named config or JSON path (with --init: train/loss only)
    steps: int | None = None  # None: the config's train.steps
    init: Path | None = None  # fine-tune from this checkpoint
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)  # {"heads.space": "shared"}
    device: str | None = None  # None: CUDA when available
    num_workers: int | None = None  # None: default_loader_workers()
    progress: bool = True
    calibrate: bool = True


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["heads.space=shared", "train.batch_size=8"] -> {"heads.space": "shared", ...}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise TrainError(
                f"--set wants SECTION.KEY=VALUE (e.g. heads.space=shared), got '{item}'"
            )
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # a bare word: a string
    return out


def apply_overrides(cfg: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    try:
        return cfg.replace(**sections)
    except (TypeError, AttributeError) as exc:
        raise ConfigError(f"bad config override {overrides}: {exc}") from exc


def resolve_config(options: TrainOptions) -> ModelConfig:
    """The run's config: the init checkpoint's model with --config's train/loss sections,
    or --config itself; then the overrides."""
    run_cfg = load_config(options.config)
    if options.init is not None:
        config_path = options.init / "config.json"
        if not config_path.is_file():
            raise TrainError(f"--init {options.init} is not a checkpoint (no config.json)")
        init_cfg = load_config(config_path)
        run_cfg = init_cfg.replace(train=run_cfg.to_dict()["train"], loss=run_cfg.to_dict()["loss"])
        cfg = apply_overrides(run_cfg, options.overrides)
        changed = [s for s in ARCHITECTURE if getattr(cfg, s) != getattr(init_cfg, s)]
        if changed:
            raise TrainError(
                f"fine-tuning keeps the architecture of {options.init}: cannot change "
                f"{', '.join(changed)}"
            )
        return cfg
    return apply_overrides(run_cfg, options.overrides)


def parse_args(argv: list[str] | None = None) -> TrainOptions:
    p = argparse.ArgumentParser(
        prog="python -m model.training",
        description="The trainer: MMV from scratch (or fine-tuned), self-supervised, on "
        "narrated clips.",
    )
    p.add_argument("--config", default="tiny", help="named config or JSON file (default tiny)")
    p.add_argument("--data", required=True, type=Path, help="corpus folder or folder of videos")
    p.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    p.add_argument("--steps", type=int, default=None, help="default: the config's train.steps")
    p.add_argument("--init", type=Path, default=None, help="checkpoint to fine-tune from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set heads.space=shared --set train.batch_size=16",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--no-calibration",
        "--no-image-calibration",  # the older name, which said less than it did
        dest="no_calibration",
        action="store_true",
        help="skip the fits after training: the image-mode BN γ/β and the audio bridge",
    )
    a = p.parse_args(argv)
    if a.steps is not None and a.steps < 1:
        raise TrainError("--steps must be at least 1")
    return TrainOptions(
        data=a.data,
        out=a.out,
        config=a.config,
        steps=a.steps,
        init=a.init,
        seed=a.seed,
        overrides=parse_overrides(a.overrides),
        device=a.device,
        num_workers=a.workers,
        progress=not a.no_progress,
        calibrate=not a.no_calibration,
    )
