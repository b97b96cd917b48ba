"""The state table: a few named values the service keeps between runs (the schema
version, whether the demo corpus is indexed)."""

from __future__ import annotations

from service.storage.database import Database


class State:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, key: str) -> str | None:
        row = (
            self._db.connection()
            .execute("SELECT value FROM state WHERE key = ?", (key,))
            .fetchone()
        )
        return row[0] if row else None

    def set(self, key: str, value: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_or_set(self, key: str, value: str) -> str:
        """The value stored under `key`, storing `value` first where there is none (two
        replicas starting at once agree on the first one stored)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                (key, value),
            )
            row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return str(row[0])
