"""The worker's side of a training run: start it, follow it, stop it.

One process (`python -m service.worker.train_run RUN_DIR`), or with `nproc` > 1 one per
rank under torchrun (`--standalone` on one host; with torchrun's own rendezvous
variables — PET_NNODES, PET_RDZV_ENDPOINT, … — set, those decide). Its `@@mmv` lines
become `RunState` (progress and a loss curve); the rest goes to the worker's log.
`stop()` asks it to stop at its next step (the STOP file); `kill()` ends it outright,
the whole process group, torchrun's ranks included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.usable_cpus import usable_cpus
from service.worker.train_run import MARK, STOP_FILE, STOPPED_EXIT

log = logging.getLogger("service.worker")

CURVE_POINTS = 200  # the loss curve kept on the job: at most this many (step, loss) pairs


@dataclass
class RunState:
    """What the run has reported so far (read by the heartbeat thread)."""

    progress: dict[str, Any] = field(default_factory=dict)
    curve: list[list[float]] = field(default_factory=list)
    error: str | None = None
    metrics: dict[str, Any] | None = None
    log_tail: list[str] = field(default_factory=list)

    def add_point(self, step: int, loss: float) -> None:
        self.curve = thin_curve([*self.curve, [step, round(loss, 5)]])


def resumed_curve(earlier: list[list[float]], curve: list[list[float]]) -> list[list[float]]:
    """A job's loss curve when its run was taken up again: a resumed run reports the
    steps after its last save, so the earlier claim's points before those stay (a run
    started over drops them all); with nothing new yet, the earlier curve."""
    if not curve:
        return earlier
    return thin_curve([p for p in earlier if p[0] < curve[0][0]] + curve)


def thin_curve(curve: list[list[float]]) -> list[list[float]]:
    """At most CURVE_POINTS points: every other one kept while there are more (the
    shape stays)."""
    while len(curve) > CURVE_POINTS:
        curve = curve[::2]
    return curve


def threads_per_rank(threads: int, nproc: int, cores: int | None = None) -> int:
    """CPU threads for each of `nproc` training processes: `threads` when set (above 0),
    else each rank's share of the cores (torch would otherwise start one thread per core
    in every rank)."""
    if threads > 0:
        return threads
    return max(1, (cores or usable_cpus()) // max(1, nproc))


def command(run_dir: Path, nproc: int) -> list[str]:
    entry = ["-m", "service.worker.train_run", str(run_dir)]
    if nproc <= 1:
        return [sys.executable, *entry]
    rendezvous = any(os.environ.get(v) for v in ("PET_NNODES", "PET_RDZV_ENDPOINT"))
    return [
        sys.executable, "-m", "torch.distributed.run",
        *([] if rendezvous else ["--standalone"]),
        "--nproc_per_node", str(nproc), *entry,
    ]  # fmt: skip


class TrainProcess:
    def __init__(
        self,
        run_dir: Path,
        nproc: int,
        on_event: Callable[[RunState], None] | None = None,
        threads: int = 0,
    ) -> None:
        self.run_dir = run_dir
        self.state = RunState()
        self._on_event = on_event
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["OMP_NUM_THREADS"] = str(threads_per_rank(threads, nproc))
        (run_dir / STOP_FILE).unlink(missing_ok=True)
        self._process = subprocess.Popen(
            command(run_dir, nproc),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            start_new_session=True,  # its own process group: kill() reaches every rank
        )
        self._reader = threading.Thread(target=self._read, name="train-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            line = line.rstrip("\n")
            if not line.startswith(MARK):
                if line.strip():
                    log.info("training: %s", line[-500:])
                    self.state.log_tail = [*self.state.log_tail[-19:], line[-500:]]
                continue
            try:
                event = json.loads(line[len(MARK) :])
            except json.JSONDecodeError:
                continue
            kind = event.pop("event", "")
            if kind == "progress":
                self.state.progress = {**self.state.progress, **event}
                self.state.add_point(int(event["step"]), float(event["loss"]))
            elif kind == "stage":
                self.state.progress = {**self.state.progress, "stage": event["stage"]}
            elif kind == "error":
                self.state.error = str(event.get("message"))
            elif kind == "done":
                self.state.metrics = event.get("metrics") or {}
            if self._on_event is not None:
                self._on_event(self.state)

    def stop(self) -> None:
        """Ask the run to stop at its next step (it saves its state first)."""
        (self.run_dir / STOP_FILE).touch()

    def kill(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None while it still runs after `timeout` seconds."""
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(5)
        return code

    @property
    def stopped_early(self) -> bool:
        return self._process.returncode == STOPPED_EXIT

    def failure(self) -> str:
        """Why the run failed, in a sentence (its own error, or the end of its log)."""
        if self.state.error:
            return self.state.error
        tail = " | ".join(self.state.log_tail[-3:]) or "no output"
        return f"the training process exited with status {self._process.returncode}: {tail}"


def wait_or_stop(
    process: TrainProcess,
    should_stop: Callable[[], bool],
    grace_s: float = 120.0,
    must_kill: Callable[[], bool] = lambda: False,
) -> int:
    """Wait for the run; when `should_stop()` turns true, ask it to stop, and kill it if
    it has not within `grace_s`; when `must_kill()` does, kill it at once (its folder is
    no longer its own: no STOP file there, no state saved). Returns its exit status."""
    asked_at: float | None = None
    while True:
        code = process.wait(timeout=0.5)
        if code is not None:
            return code
        if must_kill():
            process.kill()
            return process.wait() or -9
        if asked_at is None and should_stop():
            process.stop()
            asked_at = time.monotonic()
        elif asked_at is not None and time.monotonic() - asked_at > grace_s:
            log.warning("the training run did not stop within %.0f s; killing it", grace_s)
            process.kill()
            return process.wait() or -9
