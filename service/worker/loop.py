"""The worker's loop: look after the queue, claim a job, run it, repeat.

Each round: jobs whose worker died are queued again or failed (`expire_leases`), a
retraining job is queued when MMV_RETRAIN_AFTER_ITEMS new items with sound have come
since the last job, the run folders of ended jobs and the folders of no version are
removed, and versions made by jobs past the MMV_KEEP_VERSIONS newest inactive ones are
deleted (at most once a minute), and then the oldest queued job is claimed and run
(service/worker/job.py). `stop()` (SIGTERM, SIGINT) ends the loop: a running job stops
at its next step and goes back to the queue, to continue from its saved state.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import threading
import time

from service.settings import Settings
from service.storage import JobRow, Storage
from service.worker.job import JobRun, Outcome
from service.worker.versions import prune_old_versions, remove_unlisted_versions

log = logging.getLogger("service.worker")

TIDY_EVERY_S = 60.0
DATABASE_TRIES = 3  # claims of one job that the database fails before the job fails
DATABASE_RETRY_S = 30.0  # the pause before a job the database failed is claimed again


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def auto_job_request(storage: Storage, after_items: int) -> dict | None:
    """The request of a retraining job to queue now, or None (see the module docstring)."""
    if after_items <= 0 or storage.jobs.unfinished():
        return None
    latest = storage.jobs.latest()
    since = int(latest.request.get("queued_after_seq", 0)) if latest else 0
    new = storage.items.count_with_sound_after(since)
    if new < after_items:
        return None
    return {
        "init": "active",
        "steps": None,
        "activate": "auto",
        "trigger": f"{new} new items with sound since the last job (MMV_RETRAIN_AFTER_ITEMS="
        f"{after_items})",
        "queued_after_seq": storage.items.last_seq(),
    }


class Worker:
    def __init__(self, settings: Settings, storage: Storage, name: str | None = None) -> None:
        self.settings = settings
        self.storage = storage
        self.name = name or worker_name()
        self.stopping = threading.Event()
        self.current: JobRow | None = None
        self.database_failures: dict[str, int] = {}  # job id -> releases in a row
        self.tidied_at = -math.inf

    def stop(self) -> None:
        self.stopping.set()

    def tidy(self) -> None:
        """Run folders of jobs that ended, version folders no row names, and versions
        past MMV_KEEP_VERSIONS."""
        runs = self.settings.runs_dir
        runs.mkdir(parents=True, exist_ok=True)
        for folder in runs.iterdir():
            job = self.storage.jobs.get(folder.name)
            if job is None or job.finished:
                shutil.rmtree(folder, ignore_errors=True)
        for version in remove_unlisted_versions(self.settings.models_dir, self.storage):
            log.warning("removed the folder of version %s: no database row names it", version)
        pruned = prune_old_versions(
            self.storage, self.settings.models_dir, self.settings.keep_versions,
            self.settings.replica_timeout_s,
        )  # fmt: skip
        if pruned:
            log.info("deleted versions %s: older than the %d kept (MMV_KEEP_VERSIONS)",
                     ", ".join(pruned), self.settings.keep_versions)  # fmt: skip

    def look_after_queue(self) -> None:
        self.storage.heartbeats.beat(self.name, "worker")
        for job in self.storage.jobs.expire_leases():
            log.warning("job %s: %s", job.id, job.error)
        # Jobs also end away from a worker's own run (a lease expired twice, a released
        # job cancelled in the queue), and their folders hold a checkpoint and links that
        # keep deleted media on disk: tidied every TIDY_EVERY_S, not only at start.
        if time.monotonic() - self.tidied_at >= TIDY_EVERY_S:
            self.tidy()
            self.tidied_at = time.monotonic()
        request = auto_job_request(self.storage, self.settings.retrain_after_items)
        job = self.storage.jobs.create_when_idle(request) if request else None
        if job is not None:
            log.info("queued retraining job %s: %s", job.id, job.request["trigger"])

    def run_once(self) -> bool:
        """Look after the queue, then run one job if one waits; True when one ran."""
        self.look_after_queue()
        job = self.storage.jobs.claim(self.name, self.settings.job_lease_s)
        if job is None:
            return False
        self.current = job
        log.info("job %s claimed (attempt %d): %s", job.id, job.attempts, job.request)
        run = JobRun(self.settings, self.storage, job, self.name, self.stopping)
        try:
            outcome = run.execute()
        finally:
            self.current = None
        if outcome.database_failed:
            # The same failure again and again (a query the database always times out)
            # must not hold the queue forever: a few tries, a pause between them.
            tries = self.database_failures[job.id] = self.database_failures.get(job.id, 0) + 1
            if tries >= DATABASE_TRIES:
                outcome = Outcome("failed", f"{outcome.error}, {tries} times in a row")
        if outcome.status == "released":
            self.storage.jobs.release(job.id, self.name, outcome.error or "released")
            if outcome.database_failed:
                self.stopping.wait(DATABASE_RETRY_S)
        elif outcome.status != "lost" and not self.storage.jobs.finish(
            job.id, self.name, outcome.status, outcome.error
        ):
            # The lease ran out unseen (a last beat that failed) and the job was handed
            # on: its folder, shared, is the new owner's now.
            outcome = Outcome("lost")
        run.remove_folder(outcome)
        log.info(
            "job %s %s%s", job.id, outcome.status, f": {outcome.error}" if outcome.error else ""
        )
        return True

    def run(self) -> None:
        log.info("worker %s: waiting for training jobs in %s", self.name, self.settings.data_dir)
        while not self.stopping.is_set():
            try:
                ran = self.run_once()
            except Exception:  # a database hiccup must not end the worker
                log.exception("worker round failed; trying again")
                ran = False
            if not ran:
                self.stopping.wait(self.settings.worker_poll_s)
        log.info("worker %s stopped", self.name)
