"""A run that survives a kill: its whole state saved every few steps, and a finished run
recognised, so the same command continues it or has nothing to do.

Every `train.save_every` steps the weights, optimiser, history, vocabulary and random
states go to OUT/train_state.pt, with a fingerprint of what must match for another
command to continue it (config, data, steps, seed, init, processes). When the run ends
OUT is a checkpoint (metrics.json, config.json) and the state file is gone.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.atomic_files import atomic_path
from model.config import ModelConfig
from model.mmv import MMV
from model.training.errors import StaleRunState, TrainError
from model.training.history import TrainingHistory
from model.training.options import TrainOptions

STATE_FILE = "train_state.pt"
STATE_VERSION = 1
# Bumped when a change makes the trainer learn differently from the same settings and
# seed, so a run's numbers belong to one trainer: 2 since the trunks train on NCHW maps
# again (49e623c; the channels-last trunks before it learned measurably slower). A run
# that records none was trained before revisions were recorded.
TRAINER_REVISION = 2
# Settings that change how a finished run was watched or described, not the model it made.
_BOOKKEEPING = frozenset(
    {"train.steps", "train.eval_every", "train.save_every", "train.num_workers", "notes"}
)


def run_fingerprint(
    cfg: ModelConfig, options: TrainOptions, steps: int, world_size: int
) -> dict[str, Any]:
    """What must match for a saved state to be continued by this command."""
    return {
        "config": cfg.to_dict(),
        "data": str(options.data.resolve()),
        "steps": steps,
        "seed": options.seed,
        "init": str(options.init) if options.init else None,
        "world_size": world_size,
        "trainer_revision": TRAINER_REVISION,
    }


def save_state(
    path: Path,
    model: MMV,
    optimizer: torch.optim.Optimizer,
    step: int,
    fingerprint: dict[str, Any],
    history: TrainingHistory,
    extra: dict[str, Any],
) -> None:
    """Atomically write the run state (temp file + rename: a kill never leaves half a file)."""
    state = {
        "version": STATE_VERSION,
        "step": step,
        "fingerprint": fingerprint,
        "vocabulary": model.tokenizer.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "history": history.rows,
        "extra": extra,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != STATE_VERSION:
        raise TrainError(f"{path} was written by another trainer version; delete it to restart")
    revision = state["fingerprint"].get("trainer_revision")
    if revision != TRAINER_REVISION:
        raise StaleRunState(
            f"{path.parent} holds a run started by another trainer ({revision_name(revision)}, "
            f"this one is revision {TRAINER_REVISION}): its steps cannot be continued by this "
            "one; delete it to start over"
        )
    differ = settings_differences(state["fingerprint"], fingerprint)
    if differ:
        raise TrainError(
            f"{path.parent} holds a different run (it differs in {', '.join(differ)}): use "
            "another --out, or delete it to start over"
        )
    return state


def discard_stale_state(out: Path) -> bool:
    """Remove OUT's saved state when another trainer revision wrote it (the trainer would
    refuse it: StaleRunState); True when it did. For a caller that starts the run over
    rather than fail, before any training process starts (ranks must not race on it)."""
    path = out / STATE_FILE
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return False  # unreadable: the trainer says so, in its own words
    if state.get("fingerprint", {}).get("trainer_revision") == TRAINER_REVISION:
        return False
    path.unlink(missing_ok=True)
    return True


def revision_name(revision: object) -> str:
    """How a run's recorded trainer revision reads in a message."""
    return "no revision recorded" if revision is None else f"revision {revision}"


def finished_run(out: Path, steps: int, cfg: ModelConfig) -> dict[str, Any] | None:
    """The metrics of a finished run of `steps` steps with `cfg` in `out`, else None."""
    metrics_path = out / "metrics.json"
    if (out / STATE_FILE).exists() or not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("train", {}).get("steps") != steps:
        raise TrainError(
            f"{out} already holds a model trained for {metrics.get('train', {}).get('steps')} "
            f"steps; choose another --out (or --init {out} to fine-tune it)"
        )
    saved_path = out / "config.json"
    if not saved_path.is_file():
        raise TrainError(
            f"{out} has a metrics.json but no config.json: it is not a finished run this "
            "trainer wrote; choose another --out"
        )
    saved, wanted = json.loads(saved_path.read_text()), cfg.to_dict()
    differ = settings_differences(saved, wanted, ignore=_BOOKKEEPING)
    if differ:
        flat_saved, flat_wanted = _flatten(saved), _flatten(wanted)
        shown = ", ".join(
            f"{k} {flat_saved.get(k)!r} there, {flat_wanted.get(k)!r} now" for k in differ[:4]
        )
        raise TrainError(
            f"{out} already holds a model trained with other settings ({shown}); "
            "choose another --out"
        )
    return metrics


def settings_differences(
    saved: dict[str, Any], wanted: dict[str, Any], ignore: frozenset[str] = frozenset()
) -> list[str]:
    """Dotted names of the settings that differ, nested sections flattened
    (["config.train.batch_size"]), leaving out those in `ignore`."""
    a, b = _flatten(saved), _flatten(wanted)
    return sorted(k for k in a.keys() | b.keys() if k not in ignore and a.get(k) != b.get(k))


def _flatten(sections: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 2e-3}} -> {"train.lr": 2e-3}, at any depth."""
    flat: dict[str, Any] = {}
    for name, value in sections.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat
