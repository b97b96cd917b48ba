"""The jobs table: training jobs, queued by the API and run by `python -m service.worker`.

A job's life: `queued` -> `running` (claimed by one worker, with a lease it renews by
heartbeat) -> `succeeded` | `failed` | `cancelled`. A worker that dies stops renewing;
once its lease has expired `expire_leases` (run by every worker and by the API's
upkeep) puts the job back in the queue, or fails it after MAX_ATTEMPTS claims, with the
reason on the job: nothing stays `running` without a live worker. Cancelling a queued
job ends it at once; a running one gets `cancel_requested`, which its worker sees at
its next heartbeat.

Claiming is one write transaction: on SQLite BEGIN IMMEDIATE serialises writers; on
PostgreSQL the oldest queued row is taken `FOR UPDATE SKIP LOCKED`, so workers on many
hosts share one queue, never claim the same job and never wait for each other.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from service.storage.database import Database
from service.storage.rows import JOB_FINISHED, JobRow, now_rfc3339

MAX_ATTEMPTS = 2  # claims of one job before a dying worker fails it for good

_COLUMNS = (
    "id, status, created_at, updated_at, request, progress, metrics, model_version, activated,"
    " error, started_at, finished_at, cancel_requested, attempts, lease_owner, data"
)
_FINISHED = "('succeeded', 'failed', 'cancelled')"


def _job(r: Sequence[Any]) -> JobRow:
    return JobRow(
        r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), json.loads(r[6]),
        r[7], bool(r[8]), r[9], r[10], r[11], bool(r[12]), int(r[13]), r[14], json.loads(r[15]),
    )  # fmt: skip


class Jobs:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reading -------------------------------------------------------------------------
    def all(self, status: str | None = None, limit: int | None = None) -> list[JobRow]:
        """Newest first; only those in `status`, only the newest `limit`. In SQL: a row
        holds a loss curve and validation ids, and rows are kept for good."""
        where, args = ("WHERE status = ? ", [status]) if status is not None else ("", [])
        page = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM jobs {where}ORDER BY created_at DESC, rowid DESC{page}",
            args,
        )
        return [_job(r) for r in rows]

    def get(self, job_id: str) -> JobRow | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return _job(row) if row else None

    def unfinished(self) -> list[JobRow]:
        """Queued and running jobs, oldest first."""
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE status NOT IN {_FINISHED}"
            " ORDER BY created_at, rowid"
        )
        return [_job(r) for r in rows]

    def latest(self) -> JobRow | None:
        rows = self.all(limit=1)
        return rows[0] if rows else None

    # -- the API's side ----------------------------------------------------------------
    def create(self, request: dict[str, Any]) -> JobRow:
        row = self._queue(request, when_idle=False)
        assert row is not None
        return row

    def create_when_idle(self, request: dict[str, Any]) -> JobRow | None:
        """Queue a job only if none is queued or running (None if one is): workers
        queueing automatic retraining at once queue one job, not one each."""
        return self._queue(request, when_idle=True)

    def _queue(self, request: dict[str, Any], when_idle: bool) -> JobRow | None:
        job_id = "job-" + secrets.token_hex(6)
        now = now_rfc3339()
        with self._db.transaction(lock="jobs") as conn:
            if (
                when_idle
                and conn.execute(
                    f"SELECT 1 FROM jobs WHERE status NOT IN {_FINISHED} LIMIT 1"
                ).fetchone()
            ):
                return None
            conn.execute(
                "INSERT INTO jobs (id, status, created_at, updated_at, request)"
                " VALUES (?, 'queued', ?, ?, ?)",
                (job_id, now, now, json.dumps(request)),
            )
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> JobRow | None:
        """A queued job is cancelled at once; a running one is asked to stop (its worker
        ends it `cancelled`); a finished one is left as it is. None: no such job."""
        now = now_rfc3339()
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?,"
                " error = 'cancelled before it started' WHERE id = ? AND status = 'queued'",
                (now, now, job_id),
            )
            conn.execute(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ?"
                " WHERE id = ? AND status = 'running'",
                (now, job_id),
            )
        return self.get(job_id)

    def expire_leases(self, now: float | None = None) -> list[JobRow]:
        """Running jobs whose worker stopped renewing its lease: back in the queue (or
        failed after MAX_ATTEMPTS claims, or cancelled when that was asked), each with
        the reason. Returns the jobs it changed."""
        now = self._db.clock() if now is None else now
        stamp = now_rfc3339()
        with self._db.transaction() as conn:
            rows = [
                _job(r)
                for r in conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE status = 'running' AND lease_expires < ?"
                    f" ORDER BY id{self._db.for_update}",
                    (now,),
                )
            ]
            for job in rows:
                step = job.progress.get("step")
                at = f" at step {step}" if step else ""
                reason = f"its worker {job.lease_owner} stopped responding{at}"
                if job.cancel_requested:
                    status, error = "cancelled", f"cancelled; {reason}"
                elif job.attempts >= MAX_ATTEMPTS:
                    status, error = (
                        "failed",
                        f"{reason}, on attempt {job.attempts} of {MAX_ATTEMPTS}",
                    )
                else:
                    status, error = (
                        "queued",
                        f"{reason}; queued again (attempt {job.attempts} of {MAX_ATTEMPTS})",
                    )
                conn.execute(
                    "UPDATE jobs SET status = ?, error = ?, lease_owner = NULL,"
                    " lease_expires = NULL, updated_at = ?, finished_at = ? WHERE id = ?",
                    (status, error, stamp, stamp if status != "queued" else None, job.id),
                )
        return [j for j in (self.get(r.id) for r in rows) if j is not None]

    # -- the worker's side -------------------------------------------------------------
    def claim(self, owner: str, lease_s: float) -> JobRow | None:
        """The oldest queued job, now running under `owner`'s lease; None if none waits."""
        now, lease_until = now_rfc3339(), self._db.clock() + lease_s
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1"
                + self._db.skip_locked
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + 1, started_at = COALESCE(started_at, ?),"
                " updated_at = ? WHERE id = ?",
                (owner, lease_until, now, now, row[0]),
            )
        return self.get(row[0])

    def heartbeat(
        self, job_id: str, owner: str, lease_s: float, progress: dict[str, Any] | None = None
    ) -> JobRow | None:
        """Renew the lease (and record progress). None when `owner` no longer holds the
        job (its lease expired and it was handed on): the worker must stop it."""
        lease_until = self._db.clock() + lease_s
        sets, args = "lease_expires = ?, updated_at = ?", [lease_until, now_rfc3339()]
        if progress is not None:
            sets += ", progress = ?"
            args.append(json.dumps(progress))
        with self._db.transaction() as conn:
            cur = conn.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND lease_owner = ? AND status = 'running'",
                (*args, job_id, owner),
            )
        return self.get(job_id) if cur.rowcount else None

    def record(self, job_id: str, owner: str, **fields: Any) -> bool:
        """Set some of progress, metrics, data, model_version, activated, error on a job
        `owner` runs; False when it no longer does."""
        allowed = {"progress", "metrics", "data", "model_version", "activated", "error"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"jobs cannot record {sorted(unknown)}")
        columns = [f"{name} = ?" for name in fields]
        values = [
            json.dumps(v) if name in ("progress", "metrics", "data") else v
            for name, v in fields.items()
        ]
        with self._db.transaction() as conn:
            cur = conn.execute(
                f"UPDATE jobs SET {', '.join(columns)}, updated_at = ?"
                " WHERE id = ? AND lease_owner = ? AND status = 'running'",
                (*values, now_rfc3339(), job_id, owner),
            )
        return cur.rowcount > 0

    def release(self, job_id: str, owner: str, reason: str) -> bool:
        """Give a running job back to the queue (its worker is stopping); the claim does
        not count as an attempt. One whose cancel was asked for meanwhile (its worker had
        not seen it yet) ends cancelled instead."""
        now = now_rfc3339()
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL, updated_at = ?,"
                " status = CASE WHEN cancel_requested <> 0 THEN 'cancelled' ELSE 'queued' END,"
                " error = CASE WHEN cancel_requested <> 0 THEN 'cancelled while it ran' ELSE ? END,"
                " finished_at = CASE WHEN cancel_requested <> 0 THEN ? ELSE finished_at END,"
                " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
                " WHERE id = ? AND lease_owner = ? AND status = 'running'",
                (now, reason, now, job_id, owner),
            )
        return cur.rowcount > 0

    def finish(self, job_id: str, owner: str, status: str, error: str | None = None) -> bool:
        """End a job `owner` runs: succeeded, failed or cancelled."""
        if status not in JOB_FINISHED:
            raise ValueError(f"a job cannot finish as {status!r}")
        now = now_rfc3339()
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, error = ?, finished_at = ?, updated_at = ?,"
                " lease_owner = NULL, lease_expires = NULL"
                " WHERE id = ? AND lease_owner = ? AND status = 'running'",
                (status, error, now, now, job_id, owner),
            )
        return cur.rowcount > 0
