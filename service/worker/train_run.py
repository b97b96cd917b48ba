"""One training run of a job, in its own process: `python -m service.worker.train_run`.

The worker starts it (or, with MMV_TRAIN_NPROC > 1, torchrun starts one per rank) with
the job's run folder, which holds `spec.json` (the clips, written by the worker) and
`run.json` (how to train). Rank 0 reports on stdout, one line per event, prefixed
`@@mmv `: `{"event": "progress", step, steps, loss, clips_per_s, eta_s}`; anything else
it prints is log text. Exit status 0: the run folder holds the new checkpoint;
STOPPED_EXIT: it stopped early (the worker asked, or died); 1 and a last
`{"event": "error"}` line: it failed.

It stops at the next step when the run folder's STOP file appears or the worker process
is gone (a worker killed with SIGKILL cannot clean up after itself); the trainer saves
its state first, so a job taken up again continues from there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

MARK = "@@mmv "
STOP_FILE = "STOP"
STOPPED_EXIT = 3


def emit(event: str, **fields: Any) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(MARK + json.dumps({"event": event, **fields}), flush=True)


def _worker_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's (cannot happen here, but not gone)
        return False
    return False


def main(run_dir: Path) -> int:
    from model.media import MediaLimits
    from model.training.clip_dataset import ClipDataset, ClipItem
    from model.training.errors import TrainError
    from model.training.options import TrainOptions
    from model.training.train import TRAIN_AUGMENT, TrainProgress, train
    from service.worker.training_set import TrainingSet

    run = json.loads((run_dir / "run.json").read_text())
    spec = TrainingSet.read(run_dir / "spec.json")
    worker_pid = int(run["worker_pid"])
    stop_file = run_dir / STOP_FILE
    options = TrainOptions(
        data=run_dir / "spec.json",
        out=run_dir / "model",
        config=Path(run["config"]),
        steps=int(run["steps"]),
        init=Path(run["init"]) if run["init"] else None,
        seed=int(run["seed"]),
        overrides=run["overrides"],
        device=run["device"],
        progress=False,
    )
    from model.config import load_config

    config = load_config(options.config)
    limits = MediaLimits(max_duration_s=float(run["max_duration_s"]))

    def items(clips: list[Any]) -> list[ClipItem]:
        return [
            ClipItem(c.id, Path(c.path), c.transcript(), c.duration_s, c.content_hash)
            for c in clips
        ]

    cache_dir = Path(run["cache_dir"])
    train_data = ClipDataset(
        items(spec.train), config, seed=options.seed, cache_dir=cache_dir,
        augment=TRAIN_AUGMENT, limits=limits, show_progress=False,
    )  # fmt: skip
    val_data = ClipDataset(
        items(spec.val), config, seed=options.seed, cache_dir=cache_dir, augment=False,
        limits=limits, show_progress=False,
    )  # fmt: skip
    last_report = 0.0

    def on_progress(p: TrainProgress) -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= 0.5 or p.step == p.steps:  # the worker keeps a curve
            last_report = now
            emit("progress", **asdict(p))
        if p.step == p.steps:  # image-BN calibration, validation and saving come next
            emit("stage", stage="finishing")

    def should_stop() -> bool:
        return stop_file.exists() or _worker_gone(worker_pid)

    emit("stage", stage="training")
    try:
        result = train(
            options, datasets=(train_data, val_data), on_progress=on_progress,
            should_stop=should_stop,
        )  # fmt: skip
    except (TrainError, OSError, ValueError) as exc:
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    if result.stopped:
        emit("stopped")
        return STOPPED_EXIT
    emit("done", metrics=result.metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
