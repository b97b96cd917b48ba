"""The schema and its migrations: each step takes the database from one schema version
to the next, on SQLite and PostgreSQL alike.

BASE_SCHEMA is version 1; every later version is a step here. All of it is applied at
start-up in one write transaction under the "schema" lock, so a database of any earlier
version is brought up to date keeping every row, a crash mid-way leaves it as it was,
and processes starting together (API replicas, workers) migrate it once: the others
wait for the first's transaction and then find nothing to do. A database newer than
this code is refused (StorageError), never downgraded. The statements are written for
SQLite; PostgreSQL runs them as `postgres_ddl` translates them (the same columns, its
own type names).
"""

from __future__ import annotations

from service.storage.database import Connection, Database
from service.storage.errors import StorageError

SCHEMA_VERSION_KEY = "schema_version"

# Version 1.
BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    content_hash TEXT UNIQUE,
    media_type TEXT,
    size_bytes INTEGER,
    duration_s REAL,
    width INTEGER,
    height INTEGER,
    modalities TEXT NOT NULL,
    transcript TEXT,
    transcript_source TEXT,
    transcript_vtt TEXT,
    text TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_kind ON items(kind, seq);
CREATE INDEX IF NOT EXISTS items_status ON items(status);
CREATE TABLE IF NOT EXISTS item_metadata (
    item_seq INTEGER NOT NULL REFERENCES items(seq) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (item_seq, key)
);
CREATE INDEX IF NOT EXISTS item_metadata_kv ON item_metadata(key, value);
CREATE TABLE IF NOT EXISTS embeddings (
    version TEXT NOT NULL,
    space TEXT NOT NULL,
    modality TEXT NOT NULL,
    item_seq INTEGER NOT NULL REFERENCES items(seq) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    PRIMARY KEY (version, space, modality, item_seq)
);
CREATE INDEX IF NOT EXISTS embeddings_item ON embeddings(item_seq);
CREATE TABLE IF NOT EXISTS models (
    version TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    parent TEXT,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    request TEXT NOT NULL DEFAULT '{}',
    progress TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    model_version TEXT,
    activated INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

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
    # Past one machine: a change log the API replicas follow (uploads and deletes made
    # elsewhere reach their indexes), heartbeats of every process (workers and API
    # replicas; formerly state rows), and which replica is processing an item, so a
    # live one takes over the items of one that died.
    4: (
        "CREATE TABLE IF NOT EXISTS changes ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT, item_seq INTEGER NOT NULL,"
        " kind TEXT NOT NULL, segments TEXT NOT NULL DEFAULT '[]', version TEXT,"
        " at REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS heartbeats ("
        " name TEXT PRIMARY KEY, role TEXT NOT NULL, seen REAL NOT NULL)",
        "DELETE FROM state WHERE key LIKE 'worker:%'",
        "ALTER TABLE items ADD COLUMN processing_by TEXT",
    ),
    # One text per number in the filter table (items._meta_value): integral floats
    # stored as "4.0" become "4", so a filter written either way finds them.
    5: (
        "UPDATE item_metadata SET value = CASE WHEN value = '-0.0' THEN '0'"
        " ELSE substr(value, 1, length(value) - 2) END"
        " WHERE value LIKE '%.0' AND value NOT LIKE '\"%'",
    ),
    # The sender's name for an uploaded file (the multipart filename), shown with it.
    6: ("ALTER TABLE items ADD COLUMN filename TEXT",),
    # The model version each API replica serves: one another replica has switched away
    # from may still serve it, and must not have it deleted under it.
    7: ("ALTER TABLE heartbeats ADD COLUMN serving TEXT",),
    # An upload's `asr=false`, kept while it is processed: a replica that takes over an
    # upload left unfinished (a crash, a stop) processes it as it was asked.
    8: ("ALTER TABLE items ADD COLUMN asr INTEGER NOT NULL DEFAULT 1",),
    # An item in processing that another upload of the same bytes was told exists (200):
    # its failure then marks it failed rather than deleting it, on any replica.
    9: ("ALTER TABLE items ADD COLUMN shared INTEGER NOT NULL DEFAULT 0",),
}

SCHEMA_VERSION = max(STEPS)


def migrate(db: Database) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it was at (0: new)."""
    with db.transaction(lock="schema") as conn:
        found = _version(db, conn)
        if found > SCHEMA_VERSION:
            raise StorageError(
                f"{db.name} has schema version {found}, newer than this service's "
                f"{SCHEMA_VERSION}: run the newer service, or restore a backup"
            )
        statements = []
        if found == 0:
            statements += [s for s in BASE_SCHEMA.split(";") if s.strip()]
        for version in range(max(found, 1) + 1, SCHEMA_VERSION + 1):
            statements += STEPS[version]
        for statement in statements:
            conn.execute(_dialect(db, statement))
        conn.execute(
            "INSERT INTO state (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)),
        )
    return found


def _version(db: Database, conn: Connection) -> int:
    """The schema version stored; 1 for a version-1 database (it had no such row); 0
    for an empty database."""
    if db.engine == "postgresql":
        exists = conn.execute("SELECT to_regclass('state') IS NOT NULL").fetchone()[0]
    else:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'state'"
        ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT value FROM state WHERE key = ?", (SCHEMA_VERSION_KEY,)).fetchone()
    return int(row[0]) if row else 1


def _dialect(db: Database, statement: str) -> str:
    if db.engine == "postgresql":
        from service.storage.postgres_database import postgres_ddl

        return postgres_ddl(statement)
    return statement
