"""The models table: the model versions in the data directory, one of them active.

Switching versions is two facts kept here: `target()` is the version the service was
asked to serve (by `POST /v1/models/{v}/activate` or a training job's auto-activation,
from any process), and the row with `active` is the version that serves. The API
process re-embeds and re-indexes for the target, then `complete_switch` makes it active
and clears the target in one transaction, so after a crash at any moment exactly one
whole version is active. Every write here runs under the "models" lock: replicas asking
for, completing and deleting versions at once see each other's decisions whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from service.storage.database import Database
from service.storage.rows import ModelRow

TARGET_KEY = "target_version"
_ACTIVATE = "UPDATE models SET active = CASE WHEN version = ? THEN 1 ELSE 0 END"
_COLUMNS = "version, created_at, config, metrics, parent, active, job_id"


def _model(r: Sequence[Any]) -> ModelRow:
    return ModelRow(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], bool(r[5]), r[6])


class VersionServed(ValueError):
    """A version an API replica still serves (it is switching away from it)."""

    def __init__(self, version: str, replicas: list[str]) -> None:
        super().__init__(version)
        self.version, self.replicas = version, replicas


class Models:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, row: ModelRow) -> None:
        """Record a version; an active one deactivates every other in the same transaction."""
        with self._db.transaction(lock="models") as conn:
            if row.active:
                conn.execute("UPDATE models SET active = 0")
            conn.execute(
                f"INSERT INTO models ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                (
                    row.version, row.created_at, json.dumps(row.config), json.dumps(row.metrics),
                    row.parent, int(row.active), row.job_id,
                ),
            )  # fmt: skip

    def all(self) -> list[ModelRow]:
        """Newest first."""
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM models ORDER BY created_at DESC, rowid DESC"
        )
        return [_model(r) for r in rows]

    def get(self, version: str) -> ModelRow | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_COLUMNS} FROM models WHERE version = ?", (version,))
            .fetchone()
        )
        return _model(row) if row else None

    def active(self) -> ModelRow | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_COLUMNS} FROM models WHERE active = 1")
            .fetchone()
        )
        return _model(row) if row else None

    def activate(self, version: str) -> None:
        """Make `version` active at once (the starting model; no re-indexing involved)."""
        with self._db.transaction(lock="models") as conn:
            conn.execute(_ACTIVATE, (version,))
            conn.execute("DELETE FROM state WHERE key = ?", (TARGET_KEY,))

    # -- switching ---------------------------------------------------------------------
    def target(self) -> str | None:
        """The version the service was asked to switch to, while it is not active yet."""
        row = (
            self._db.connection()
            .execute("SELECT value FROM state WHERE key = ?", (TARGET_KEY,))
            .fetchone()
        )
        return row[0] if row else None

    def request_switch(self, version: str, unless_changed_from: str | None = None) -> bool:
        """Ask the service to serve `version` (it re-indexes first); asking for the active
        version calls off a switch in progress. KeyError when no such version exists.

        With `unless_changed_from` (a training job's: the version it was compared with),
        only while that version serves and no switch to another is asked for: False,
        nothing asked, when a user switched (or rolled back) meanwhile."""
        with self._db.transaction(lock="models") as conn:
            found = conn.execute(
                "SELECT active FROM models WHERE version = ?", (version,)
            ).fetchone()
            if found is None:
                raise KeyError(version)
            if unless_changed_from is not None:
                serving = conn.execute("SELECT version FROM models WHERE active = 1").fetchone()
                target = conn.execute(
                    "SELECT value FROM state WHERE key = ?", (TARGET_KEY,)
                ).fetchone()
                if (serving is None or serving[0] != unless_changed_from) or (
                    target is not None and target[0] != version
                ):
                    return False
            if found[0]:
                conn.execute("DELETE FROM state WHERE key = ?", (TARGET_KEY,))
            else:
                conn.execute(
                    "INSERT INTO state (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (TARGET_KEY, version),
                )
        return True

    def complete_switch(self, version: str) -> bool:
        """Make `version` the active one and clear the target, in one transaction; False
        (nothing changed) when it is no longer the target (the switch was called off or
        redirected meanwhile)."""
        with self._db.transaction(lock="models") as conn:
            row = conn.execute("SELECT value FROM state WHERE key = ?", (TARGET_KEY,)).fetchone()
            if row is None or row[0] != version:
                return False
            conn.execute(_ACTIVATE, (version,))
            conn.execute("DELETE FROM state WHERE key = ?", (TARGET_KEY,))
        return True

    def set_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        with self._db.transaction(lock="models") as conn:
            conn.execute(
                "UPDATE models SET metrics = ? WHERE version = ?", (json.dumps(metrics), version)
            )

    def delete(self, version: str, replicas_within_s: float = 0.0, asking: str = "") -> int:
        """Remove an inactive version that is not being switched to, with all its
        embeddings, in one transaction; returns how many embeddings went. KeyError: no
        such version; ValueError: it is active or the switch target; VersionServed: an
        API replica seen in the last `replicas_within_s` still serves it (its own switch
        to the active version is under way: deleted now, its indexes would empty).
        `asking`: the replica this comes through, whose own state is what the active and
        target checks above say (its heartbeat may lag its swap by a beat)."""
        seen_after = self._db.clock() - replicas_within_s  # read first: one connection at once
        with self._db.transaction(lock="models") as conn:
            found = conn.execute(
                "SELECT active FROM models WHERE version = ?", (version,)
            ).fetchone()
            if found is None:
                raise KeyError(version)
            target = conn.execute("SELECT value FROM state WHERE key = ?", (TARGET_KEY,)).fetchone()
            if found[0] or (target is not None and target[0] == version):
                raise ValueError(version)
            served = conn.execute(
                "SELECT name FROM heartbeats WHERE role = 'api' AND serving = ? AND seen >= ?"
                " AND name <> ? ORDER BY name",
                (version, seen_after, asking),
            ).fetchall()
            if replicas_within_s > 0 and served:
                raise VersionServed(version, [r[0] for r in served])
            # The row first: its delete waits for writers of the version's vectors
            # (lock_version), so that the deletes below see what they wrote.
            conn.execute("DELETE FROM models WHERE version = ?", (version,))
            conn.execute("DELETE FROM segment_embeddings WHERE version = ?", (version,))
            cur = conn.execute("DELETE FROM embeddings WHERE version = ?", (version,))
        return int(cur.rowcount)
