"""One training job from claim to end: prepare, train, evaluate, publish, activate.

    preparing   the training set from the stored clips (fixed at the first claim:
                a job taken up again after its worker died trains on the same clips
                and continues from the run's last saved state), the recipe
    training    `python -m service.worker.train_run` (torchrun with MMV_TRAIN_NPROC > 1)
    evaluating  the active model and the new one on the held-out slice
    saving      the new version's folder (with its speech language model) and its row
    activating  `activate: auto` and not worse: the API is asked to switch to it

Whatever happens, the job ends succeeded, failed (with the reason) or cancelled, and
its run folder (DATA_DIR/runs/<job id>) is removed, unless the worker itself is
stopping or the database fails: then the job goes back to the queue and the folder stays
for the next claim.
A worker that lost its lease (it stalled, and the job was handed on) leaves the job and
its folder alone: they are another worker's now, and it neither records, publishes nor
activates anything more. It checks that it still holds the lease right before each
step that others see (every record, the new version, the switch).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any

from model import load_model
from model.atomic_files import write_atomic
from model.config import load_config
from model.media import MediaLimits
from model.training.resume import discard_stale_state
from service.settings import Settings
from service.storage import JobRow, Storage, StorageError
from service.worker.evaluation import evaluate_on_slice, not_worse
from service.worker.recipe import choose_recipe
from service.worker.train_process import RunState, TrainProcess, resumed_curve, wait_or_stop
from service.worker.training_set import (
    TrainingDataError,
    TrainingSet,
    TrainingSetFileError,
    build_training_set,
)
from service.worker.versions import publish_version

log = logging.getLogger("service.worker")


class JobFailed(Exception):
    """The job cannot go on; the message is what the job records as its error."""


class JobStopped(Exception):
    """The job was stopped (cancelled, lost its lease, or the worker is stopping)."""


@dataclass
class Outcome:
    status: str  # succeeded | failed | cancelled | released (back to the queue) | lost
    error: str | None = None
    database_failed: bool = False  # released because the database failed


PROGRESS_EVERY_S = 2.0  # how fresh a running job's progress is (the web page polls it)


class Heartbeat:
    """Renews the job's lease and writes its progress every PROGRESS_EVERY_S (or every
    third of the lease, if shorter); notices a cancel request and a lost lease."""

    def __init__(self, storage: Storage, job: JobRow, owner: str, lease_s: float) -> None:
        self.storage, self.job, self.owner, self.lease_s = storage, job, owner, lease_s
        self.progress: dict[str, Any] = dict(job.progress)
        self.cancel_requested = job.cancel_requested
        self.lost = False
        # Lost because renewals failed for a whole lease (not refused): unless it was
        # handed on meanwhile, this worker still holds the job and gives it back.
        self.let_go = False
        self.renewed_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def set(self, **fields: Any) -> None:
        self.progress = {**self.progress, **fields}

    def renew(self) -> None:
        """Renew the lease and write the progress now, noting a lost lease or a cancel
        request; database errors are raised."""
        asked_at = time.monotonic()
        row = self.storage.jobs.heartbeat(self.job.id, self.owner, self.lease_s, self.progress)
        if row is None:
            self.lost = True
            return
        self.renewed_at = asked_at
        if row.cancel_requested:
            self.cancel_requested = True

    def beat(self) -> None:
        if self.lost:  # renewing now would keep a job nobody runs out of the queue
            return
        try:
            self.renew()
            # A worker busy with a long job is alive too (its container's health check).
            self.storage.heartbeats.beat(self.owner, "worker")
        except Exception:  # a busy database: the next beat tries again, well within the lease
            log.exception("heartbeat of job %s failed", self.job.id)
            # Two beats before the lease runs out: let go before the database gives it
            # to another worker, not after.
            margin = 2 * self.every_s
            if not self.lost and time.monotonic() - self.renewed_at > self.lease_s - margin:
                # Unrenewed for a whole lease, the job is queued again and may run on
                # another worker, in this same run folder: this one lets go (its
                # training is killed) rather than write beside it.
                log.error("job %s: its lease could not be renewed for %.0f s; letting it go",
                          self.job.id, self.lease_s)  # fmt: skip
                self.lost = self.let_go = True

    @property
    def every_s(self) -> float:
        return max(0.2, min(PROGRESS_EVERY_S, self.lease_s / 3))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.beat()


class JobRun:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        job: JobRow,
        owner: str,
        stopping: threading.Event,
    ) -> None:
        self.settings, self.storage, self.job, self.owner = settings, storage, job, owner
        self.stopping = stopping
        self.run_dir = settings.runs_dir / job.id
        self.limits = MediaLimits(max_duration_s=settings.max_duration_s)

    # -- the job ---------------------------------------------------------------------
    def execute(self) -> Outcome:
        with Heartbeat(self.storage, self.job, self.owner, self.settings.job_lease_s) as beat:
            try:
                outcome = self._execute(beat)
            except JobStopped:
                outcome = self._stopped(beat)
            except JobFailed as exc:
                outcome = Outcome("failed", str(exc))
            except StorageError as exc:
                # The database busy or gone a while: nothing is wrong with the job. Back
                # to the queue, its folder kept (a finished training is not redone).
                log.warning("job %s: the database failed (%s); it goes back to the queue",
                            self.job.id, exc)  # fmt: skip
                outcome = Outcome("released", f"the database failed ({exc})", True)
            except Exception as exc:  # a bug: the job says so instead of hanging
                log.exception("job %s failed unexpectedly", self.job.id)
                outcome = Outcome("failed", f"the worker failed: {type(exc).__name__}: {exc}")
            beat.set(stage=None)  # an ended job's status says where it is
            beat.beat()  # the last progress before the job ends
        if beat.let_go:
            # Back to the queue now, its claim not counted (unless handed on meanwhile,
            # which release() leaves alone): it sat `running` under no one until its
            # lease ran out, and the database's outage cost it an attempt.
            return Outcome(
                "released",
                f"its worker could not reach the database for {self.settings.job_lease_s:g} s",
                database_failed=True,
            )
        if beat.lost:  # whatever else went wrong after that: the job is another's now
            return Outcome("lost")
        return outcome

    def remove_folder(self, outcome: Outcome) -> None:
        """The run folder, once the job's end is recorded (before that, a job queued
        again by a failed record would start over without its saved state). Released:
        the next claim continues from it. Lost: the job may already run on another
        worker, in this same folder (DATA_DIR/runs is shared)."""
        if outcome.status not in ("released", "lost"):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _stopped(self, beat: Heartbeat) -> Outcome:
        if beat.lost:
            return Outcome("lost")
        if beat.cancel_requested:
            return Outcome("cancelled", "cancelled while it ran")
        return Outcome("released", "the worker stopped; the job waits for the next one")

    def _check(self, beat: Heartbeat) -> None:
        if beat.lost or beat.cancel_requested or self.stopping.is_set():
            raise JobStopped()

    def _record(self, beat: Heartbeat, **fields: Any) -> None:
        """Record on the job; JobStopped (lost) when this worker no longer holds it."""
        if not self.storage.jobs.record(self.job.id, self.owner, **fields):
            beat.lost = True
            raise JobStopped()

    def _hold_lease(self, beat: Heartbeat) -> None:
        """Renew the lease now, before a step that cannot be taken back: the background
        heartbeat may not have beaten since the lease ran out and the job was handed on.
        JobStopped when it was."""
        beat.renew()
        if beat.lost:
            raise JobStopped()

    def _execute(self, beat: Heartbeat) -> Outcome:
        request = self.job.request
        init = request.get("init", "active")
        # Taken up again: its step and loss curve stay until training says more (a run
        # already finished says nothing more, and the job ended at "step 0" with no curve).
        beat.set(stage="preparing", step=beat.progress.get("step", 0))
        active = self.storage.models.active()
        if active is None:
            raise JobFailed("there is no active model to start from or to compare with")
        active_dir = self.settings.models_dir / active.version
        made = next((m.version for m in self.storage.models.all() if m.job_id == self.job.id), None)
        if made is not None:
            return self._made_before(beat, made, active.version)
        if self.job.model_version:
            # An earlier claim made it and a user deleted it before this one: its finished
            # run would be published again under a new name, and switched to.
            return Outcome(
                "succeeded",
                f"the version it made, {self.job.model_version}, was deleted since: not made again",
            )
        training_set = self._training_set()
        base = self._starting_model(active.version)
        base_dir = self.settings.models_dir / base
        config = load_config(base_dir / "config.json")
        recipe = choose_recipe(config, len(training_set.train), init, request.get("steps"))
        self._record(
            beat, data={**training_set.describe(), "recipe": recipe.describe(), "parent": base}
        )
        beat.set(steps=recipe.steps)
        self._check(beat)

        run = {
            "config": str(base_dir / "config.json"),
            "init": str(base_dir) if init == "active" else None,
            "steps": recipe.steps,
            "seed": int(request.get("seed", 0)),
            "overrides": recipe.overrides(),
            "device": None if self.settings.device == "auto" else self.settings.device,
            "cache_dir": str(self.settings.cache_dir),
            "max_duration_s": self.settings.max_duration_s,
            "worker_pid": os.getpid(),
        }
        write_atomic(self.run_dir / "run.json", json.dumps(run, indent=2))
        self._train(beat)

        beat.set(stage="evaluating")
        self._check(beat)
        # Compared with what serves now: training took a while, and a user may have
        # switched (or rolled back) meanwhile.
        active = self.storage.models.active() or active
        active_dir = self.settings.models_dir / active.version
        new_model = load_model(self.run_dir / "model")
        before = evaluate_on_slice(
            load_model(active_dir), training_set.val, self.settings.cache_dir,
            self.settings.embed_windows or None, self.limits,
        )  # fmt: skip
        after = evaluate_on_slice(
            new_model, training_set.val, self.settings.cache_dir,
            self.settings.embed_windows or None, self.limits,
        )  # fmt: skip
        activate, why = not_worse(before, after)
        metrics = {"before": before, "after": after, "compared_with": active.version}
        self._record(beat, metrics=metrics)

        beat.set(stage="saving")
        self._hold_lease(beat)
        self._check(beat)
        texts = [t.text for c in training_set.train + training_set.val if (t := c.transcript())]
        row = publish_version(
            self.run_dir / "model", self.settings.models_dir, self.storage,
            # A version trained from scratch has no parent; it was only compared with one.
            parent=base if init == "active" else None, job_id=self.job.id,
            texts=texts, compared_with=active.version,
            evaluation={"before": before, "after": after, "decision": why},
            lineage_config=config,
        )  # fmt: skip
        # A version published as the lease ran out stays, inactive (a later claim goes on
        # from it); it is never activated by a worker that no longer runs the job.
        self._record(beat, model_version=row.version)
        log.info("job %s made version %s: %s", self.job.id, row.version, why)
        return self._activate(beat, row.version, activate, why, active.version)

    def _activate(
        self, beat: Heartbeat, version: str, activate: bool, why: str, compared_with: str
    ) -> Outcome:
        # Cancelled while it was saved (the speech language model takes a while): the
        # version stays, inactive, and is not switched to.
        self._check(beat)
        if self.job.request.get("activate", "auto") != "auto":
            return Outcome("succeeded")
        if not activate:
            return Outcome("succeeded", why)
        beat.set(stage="activating")
        self._hold_lease(beat)
        self._check(beat)
        # Said before it is asked for: a claim stopped between the switch and its record
        # must not, taken up again, switch forward over a user's roll-back since.
        recorded = self.storage.jobs.get(self.job.id)
        data = dict(recorded.data if recorded is not None else self.job.data)
        self._record(beat, data={**data, "switch_asked": version})
        try:
            asked = self.storage.models.request_switch(version, unless_changed_from=compared_with)
        except KeyError:  # deleted by a user as it was made
            return Outcome("succeeded", f"version {version} was deleted: not activated")
        if not asked:  # a user's switch or roll-back since is not overridden
            return Outcome("succeeded", f"not activated: it was compared with {compared_with}, "
                           "and another version was switched to meanwhile (activate it by "
                           "hand if wanted)")  # fmt: skip
        self._record(beat, activated=True)
        return Outcome("succeeded")

    def _made_before(self, beat: Heartbeat, made: str, active: str) -> Outcome:
        """An earlier claim made the job's version and stopped before the job's end was
        recorded: the job goes on from there rather than publish a second one."""
        log.info("job %s: version %s was made by an earlier claim", self.job.id, made)
        if self.job.model_version != made:
            self._record(beat, model_version=made)
        if self.job.activated:  # asked for already; a switch back since is the user's
            return Outcome("succeeded")
        if made in (active, self.storage.models.target()):
            # Asked for by the earlier claim, which stopped before it said so.
            self._record(beat, activated=True)
            return Outcome("succeeded")
        if self.job.data.get("switch_asked") == made:
            # The earlier claim may have asked for it, and a user switched back since.
            return Outcome("succeeded", f"not activated again: an earlier claim asked for "
                           f"{made}, and another version serves now (a switch back is not "
                           "overridden; activate it by hand if wanted)")  # fmt: skip
        before, after = self.job.metrics.get("before"), self.job.metrics.get("after")
        if before is None or after is None:
            return Outcome("succeeded", "its evaluation was not recorded: not activated")
        compared = str(self.job.metrics.get("compared_with"))
        return self._activate(beat, made, *not_worse(before, after), compared)

    def _starting_model(self, active: str) -> str:
        """The version this job trains from: the one active at its first claim. A job
        taken up again after a switch (a roll-back, another job's new version) continues
        from its saved state, which is that version's descendant; only when that version
        was deleted since does it start over from the active one."""
        first = self.job.data.get("parent")
        if first is None or first == active:
            return active
        if (
            self.storage.models.get(first) is not None
            and (self.settings.models_dir / first / "config.json").is_file()
        ):
            return str(first)
        log.warning("job %s: version %s it started from was deleted; training starts over "
                    "from %s", self.job.id, first, active)  # fmt: skip
        shutil.rmtree(self.run_dir / "model", ignore_errors=True)
        return active

    def _training_set(self) -> TrainingSet:
        """The clips this job trains on: fixed at its first claim (kept in its run folder)."""
        spec = self.run_dir / "spec.json"
        if spec.is_file():
            try:
                return TrainingSet.read(spec)
            except TrainingSetFileError as exc:
                # Torn by a crash (a kill mid-write before it was written atomically, a
                # power cut): choose the clips again rather than fail a job that can go on.
                log.warning("job %s: %s; choosing its clips again", self.job.id, exc)
        recorded = self.job.data  # what an earlier claim trained on, if one got that far
        seen = recorded.get("last_item_seq")
        try:
            training_set = build_training_set(
                self.storage, self.settings.media_dir, None if seen is None else int(seen)
            )
            training_set = training_set.pinned(self.run_dir / "clips")
        except TrainingDataError as exc:
            raise JobFailed(str(exc)) from None
        chosen = training_set.describe()
        if recorded and any(recorded.get(k) != chosen[k] for k in ("train", "val_ids")):
            # Clips deleted since: the saved state is another set's (and may not fit its
            # recipe, which the trainer refuses), so training starts over on this one.
            log.warning("job %s: its clips changed; training starts over", self.job.id)
            shutil.rmtree(self.run_dir / "model", ignore_errors=True)
        training_set.write(spec)
        return training_set

    def _train(self, beat: Heartbeat) -> None:
        earlier = list(beat.progress.get("history") or [])  # an earlier claim's points

        def on_event(state: RunState) -> None:
            beat.set(**state.progress, history=resumed_curve(earlier, state.curve))

        beat.set(stage="training")
        if discard_stale_state(self.run_dir / "model"):
            # Released before an upgrade that changed how the trainer learns: its saved
            # steps are the old trainer's (which the trainer refuses to continue).
            log.warning("job %s: its saved steps are another trainer's; training from its "
                        "first step again", self.job.id)  # fmt: skip
        process = TrainProcess(
            self.run_dir, self.settings.train_nproc, on_event, self.settings.train_threads
        )
        started = time.monotonic()
        # A lost lease kills the run at once: the job, and this shared folder, may be
        # another worker's already; a STOP file or a state saved here would be in its way.
        code = wait_or_stop(
            process,
            lambda: beat.cancel_requested or self.stopping.is_set(),
            must_kill=lambda: beat.lost,
        )
        log.info("job %s: training ended with status %s after %.0f s", self.job.id, code,
                 time.monotonic() - started)  # fmt: skip
        if code == 0 and (self.run_dir / "model" / "weights.safetensors").is_file():
            return
        if process.stopped_early or beat.lost or beat.cancel_requested or self.stopping.is_set():
            raise JobStopped()
        raise JobFailed(f"training failed: {process.failure()}")
