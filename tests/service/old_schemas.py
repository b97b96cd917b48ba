"""Databases as earlier versions of the service left them, to test upgrades."""

from __future__ import annotations

from pathlib import Path


def sqlite_at_version(path: Path, version: int) -> None:
    """A SQLite file with the schema as `version` of the service made it (no rows but
    the version's own), to test upgrades from it."""
    import sqlite3

    from service.storage.migrations import BASE_SCHEMA, STEPS

    conn = sqlite3.connect(path)
    conn.executescript(BASE_SCHEMA)
    for step in range(2, version + 1):
        for statement in STEPS[step]:
            conn.execute(statement)
    if version > 1:
        conn.execute("INSERT INTO state (key, value) VALUES ('schema_version', ?)", (str(version),))
    conn.commit()
    conn.close()
