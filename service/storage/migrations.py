"""Schema migrations: each step takes the database from one schema version to the next.

The tables of version 1 are created by database.py; every later version is a step here,
applied in order at start-up in one write transaction, so a database of any earlier
version is brought up to date keeping every row, a crash mid-way leaves it as it was,
and two processes starting together (the API and the worker) migrate it once: the
second waits for the first's transaction and then finds nothing to do. A database
newer than this code is refused (StorageError), never downgraded.
"""

from __future__ import annotations

from service.storage.database import Database
from service.storage.errors import StorageError

SCHEMA_VERSION_KEY = "schema_version"

# version reached -> the statements that reach it from the one before
STEPS: dict[int, tuple[str, ...]] = {
    # The training worker: jobs claimed with a lease renewed by heartbeat, cancelled by
    # request, retried a bounded number of times; a model version remembers the job that
    # made it; the version the service should switch to is a state value.
    2: (
        "ALTER TABLE jobs ADD COLUMN lease_owner TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_expires REAL",
        "ALTER TABLE jobs ADD COLUMN started_at TEXT",
        "ALTER TABLE jobs ADD COLUMN finished_at TEXT",
        "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN data TEXT NOT NULL DEFAULT '{}'",
        "CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at)",
        "ALTER TABLE models ADD COLUMN job_id TEXT",
    ),
    # Moments: the segments of long items (their span and the transcript text said in
    # it), with vectors per model version like items' own.
    3: (
        "CREATE TABLE IF NOT EXISTS segments ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " item_seq INTEGER NOT NULL REFERENCES items(seq) ON DELETE CASCADE,"
        " start_s REAL NOT NULL, end_s REAL NOT NULL, text TEXT)",
        "CREATE INDEX IF NOT EXISTS segments_item ON segments(item_seq, start_s)",
        "CREATE TABLE IF NOT EXISTS segment_embeddings ("
        " version TEXT NOT NULL, space TEXT NOT NULL, modality TEXT NOT NULL,"
        " segment_seq INTEGER NOT NULL REFERENCES segments(seq) ON DELETE CASCADE,"
        " vector BLOB NOT NULL, PRIMARY KEY (version, space, modality, segment_seq))",
        "CREATE INDEX IF NOT EXISTS segment_embeddings_segment ON segment_embeddings(segment_seq)",
    ),
}
SCHEMA_VERSION = max(STEPS)


def migrate(db: Database) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it was at."""
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT value FROM state WHERE key = ?", (SCHEMA_VERSION_KEY,)
        ).fetchone()
        found = int(row[0]) if row else 1  # none: database.py just made version 1
        if found > SCHEMA_VERSION:
            raise StorageError(
                f"{db.path} has schema version {found}, newer than this service's "
                f"{SCHEMA_VERSION}: run the newer service, or restore a backup"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in STEPS[version]:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO state (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)),
        )
    return found
