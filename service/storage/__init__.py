"""The store: SQLite on one host or PostgreSQL past one machine, one module per table.

    database.py     which engine, and the interface the tables use
    sqlite_database.py, postgres_database.py    the two engines
    migrations.py   the schema and its versions (the same steps on both)
    items.py        items and their metadata (filters), the ready-row cache
    embeddings.py   vectors per (model version, space, modality, item): the truth
                    FAISS indexes are derived from
    segments.py     the stretches of long items (moments) and their vectors
    models.py       model versions, one active
    jobs.py         training jobs
    changes.py      the change log API replicas follow
    heartbeats.py   which processes are alive
    state.py        a few named values kept between runs
    rows.py         the rows these read and write; errors.py what they raise

The rest of the service holds one `Storage` and reaches the tables through it
(`storage.items.get(...)`); no SQL lives outside this package.
"""

from __future__ import annotations

from pathlib import Path

from service.storage.changes import ChangeRow, Changes
from service.storage.database import Database, open_database
from service.storage.embeddings import Embeddings
from service.storage.errors import (
    ConstraintViolation,
    DuplicateContent,
    StorageError,
    UnknownVersion,
)
from service.storage.heartbeats import Heartbeats
from service.storage.items import (
    MAX_METADATA_ENTRY_BYTES,
    READY_CACHE_ITEMS,
    Items,
    metadata_entry_bytes,
)
from service.storage.jobs import Jobs
from service.storage.migrations import SCHEMA_VERSION, migrate
from service.storage.models import Models, VersionServed
from service.storage.rows import (
    Embedding,
    ItemRow,
    JobRow,
    ModelRow,
    NewItem,
    NewSegment,
    SegmentRow,
    now_rfc3339,
)
from service.storage.segments import Segments
from service.storage.state import State

__all__ = [
    "MAX_METADATA_ENTRY_BYTES",
    "READY_CACHE_ITEMS",
    "SCHEMA_VERSION",
    "ChangeRow",
    "ConstraintViolation",
    "Database",
    "DuplicateContent",
    "Embedding",
    "ItemRow",
    "JobRow",
    "ModelRow",
    "NewItem",
    "NewSegment",
    "SegmentRow",
    "Storage",
    "StorageError",
    "UnknownVersion",
    "VersionServed",
    "metadata_entry_bytes",
    "now_rfc3339",
]


class Storage:
    """One database and its tables; opening it creates the schema or migrates an older
    one (StorageError when it cannot be reached, is not a database or has a newer
    schema version). `location`: a SQLite file's path or a postgresql:// URL."""

    def __init__(self, location: Path | str, pool_size: int = 10) -> None:
        self.db = open_database(location, pool_size)
        try:
            self.migrated_from = migrate(self.db)
        except BaseException:
            self.db.close()
            raise
        self.items = Items(self.db)
        self.embeddings = Embeddings(self.db)
        self.segments = Segments(self.db)
        self.models = Models(self.db)
        self.jobs = Jobs(self.db)
        self.state = State(self.db)
        self.changes = Changes(self.db)
        self.heartbeats = Heartbeats(self.db)

    def close(self) -> None:
        self.db.close()
