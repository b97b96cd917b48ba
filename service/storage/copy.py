"""Copy a whole database into an empty one: SQLite on one host to PostgreSQL when a
deployment moves past one machine (`python -m service.copy_database`, docs/scaling.md).

Every row of every table that holds data (items and their metadata, embeddings of every
model version, segments, model versions, jobs, state) is copied in one transaction on
the target: a copy that fails leaves the target as empty as it was. Item and segment
seqs are kept (they are the ids FAISS stores), and the target's counters continue after
them. The change log and heartbeats are not copied: they describe running processes.
"""

from __future__ import annotations

from collections.abc import Callable

from service.storage import Storage
from service.storage.errors import StorageError

# Parents before children (foreign keys); ordered as each table's rows were inserted.
TABLES = (
    ("models", "rowid"),
    ("jobs", "rowid"),
    ("state", "key"),
    ("items", "seq"),
    ("item_metadata", "item_seq, key"),
    ("embeddings", "version, space, modality, item_seq"),
    ("segments", "seq"),
    ("segment_embeddings", "version, space, modality, segment_seq"),
)
COUNTERS = (("items", "seq"), ("segments", "seq"))  # identity columns copied explicitly
BATCH = 2000
Progress = Callable[[str, int], None]


def copy_database(
    source: Storage, target: Storage, progress: Progress | None = None
) -> dict[str, int]:
    """Copy every table of `source` (a SQLite store) into `target`, which must hold no
    items, model versions or jobs yet; returns the rows copied per table."""
    if source.db.engine != "sqlite":
        raise StorageError("the copy reads a SQLite database (MMV_DATA_DIR/db.sqlite)")
    for table in ("items", "models", "jobs"):
        if target.db.connection().execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
            raise StorageError(
                f"{target.db.name} already holds {table}: the copy goes only into an empty "
                "database (create a new one, or drop this one's tables)"
            )
    read = source.db.connection()
    copied: dict[str, int] = {}
    read.execute("BEGIN")  # one snapshot of the source for the whole copy
    try:
        with target.db.transaction(lock="schema") as write:
            write.execute("DELETE FROM state")  # the target's own schema version goes too
            for table, order in TABLES:
                columns = [r[1] for r in read.execute(f"PRAGMA table_info({table})")]
                names = ", ".join(columns)
                marks = ",".join("?" * len(columns))
                insert = f"INSERT INTO {table} ({names}) VALUES ({marks})"
                rows = read.execute(f"SELECT {names} FROM {table} ORDER BY {order}")
                copied[table] = 0
                while batch := rows.fetchmany(BATCH):
                    write.executemany(insert, batch)
                    copied[table] += len(batch)
                    if progress is not None:
                        progress(table, copied[table])
            if target.db.engine == "postgresql":
                for table, column in COUNTERS:
                    # SQLite's counter: past the last seq ever used, deleted ones too.
                    row = read.execute(
                        "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
                    ).fetchone()
                    write.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" GREATEST(?, (SELECT COALESCE(MAX({column}), 0) FROM {table})) + 1,"
                        " false)",
                        (int(row[0]) if row else 0,),
                    )
    finally:
        read.execute("COMMIT")
    return copied
