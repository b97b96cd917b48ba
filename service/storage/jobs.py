"""The jobs table: training jobs, read by GET /v1/training/jobs.

Only reads exist today: starting and cancelling answer 501 until the training worker
(next issue) lands. That worker queues jobs here, claims one with a lease that
`python -m service.worker` renews by heartbeat, and records progress on it; the
claiming and the lease stay behind this class (not SQL in callers), because a later
issue puts PostgreSQL behind the same storage layer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from service.storage.database import Database
from service.storage.rows import JobRow

_COLUMNS = (
    "id, status, created_at, updated_at, request, progress, metrics, model_version, activated,"
    " error"
)


def _job(r: Sequence[Any]) -> JobRow:
    return JobRow(
        r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), json.loads(r[6]),
        r[7], bool(r[8]), r[9],
    )  # fmt: skip


class Jobs:
    def __init__(self, db: Database) -> None:
        self._db = db

    def all(self) -> list[JobRow]:
        """Newest first."""
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC"
        )
        return [_job(r) for r in rows]

    def get(self, job_id: str) -> JobRow | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return _job(row) if row else None
