"""The heartbeats table: every process says it is alive (workers each round of their
loop, API replicas every few seconds), so others can tell who died: /readyz reports
live workers, and a replica takes over the uploads a dead one was processing."""

from __future__ import annotations

from service.storage.database import Database

FORGET_AFTER_S = 86400.0  # processes gone for a day are forgotten


class Heartbeats:
    def __init__(self, db: Database) -> None:
        self._db = db

    def beat(self, name: str, role: str, serving: str | None = None) -> None:
        """`serving`: the model version an API replica answers with (None: none yet)."""
        now = self._db.clock()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO heartbeats (name, role, seen, serving) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET role = excluded.role, seen = excluded.seen,"
                " serving = excluded.serving",
                (name, role, now, serving),
            )
            conn.execute("DELETE FROM heartbeats WHERE seen < ?", (now - FORGET_AFTER_S,))

    def live(self, role: str, within_s: float) -> list[str]:
        """Names of the processes of `role` seen in the last `within_s` seconds."""
        rows = self._db.connection().execute(
            "SELECT name FROM heartbeats WHERE role = ? AND seen >= ? ORDER BY name",
            (role, self._db.clock() - within_s),
        )
        return [r[0] for r in rows]

    def forget(self, name: str) -> None:
        """A process that stops cleanly says so (its work is not waited for)."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM heartbeats WHERE name = ?", (name,))
