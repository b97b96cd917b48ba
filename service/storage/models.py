"""The models table: the model versions in the data directory, one of them active.

The training worker (next issue) adds versions here and switches the active one after
re-indexing; that switch stays behind this class (not SQL in callers), because a later
issue puts PostgreSQL behind the same storage layer.
"""

from __future__ import annotations

import json

from service.storage.database import Database
from service.storage.rows import ModelRow


class Models:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, row: ModelRow) -> None:
        """Record a version; an active one deactivates every other in the same transaction."""
        with self._db.transaction() as conn:
            if row.active:
                conn.execute("UPDATE models SET active = 0")
            conn.execute(
                "INSERT INTO models (version, created_at, config, metrics, parent, active)"
                " VALUES (?,?,?,?,?,?)",
                (
                    row.version, row.created_at, json.dumps(row.config), json.dumps(row.metrics),
                    row.parent, int(row.active),
                ),
            )  # fmt: skip

    def all(self) -> list[ModelRow]:
        """Newest first."""
        rows = self._db.connection().execute(
            "SELECT version, created_at, config, metrics, parent, active FROM models"
            " ORDER BY created_at DESC, version"
        )
        return [
            ModelRow(v, c, json.loads(cfg), json.loads(m), p, bool(a))
            for v, c, cfg, m, p, a in rows
        ]

    def get(self, version: str) -> ModelRow | None:
        return next((m for m in self.all() if m.version == version), None)

    def active(self) -> ModelRow | None:
        return next((m for m in self.all() if m.active), None)

    def activate(self, version: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("UPDATE models SET active = (version = ?)", (version,))
