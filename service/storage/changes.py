"""The change log: what happened to which item, in commit order, for API replicas.

Every write that changes what an index of items or segments should hold appends a row
in its own transaction: INDEXED (an item's vectors, or its segments', were stored;
`version` says of which model version when only one version's vectors changed) and
DELETED; either carries the seqs of the item's segments that went (deleted, or cut
anew), which are gone from the database.
A replica reads the rows after the last it applied (service/change_follower.py) and
brings its indexes in line, so an upload acknowledged by one replica is found on the
others within a poll. Applying a row reads the database as it is now, so applying one
twice, or late, does no harm. Rows older than a day are pruned: a replica that was
away longer rebuilds from the embeddings tables at start anyway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from service.storage.database import Connection, Database

INDEXED = "indexed"
DELETED = "deleted"
KEEP_S = 86400.0


@dataclass(frozen=True)
class ChangeRow:
    seq: int
    item_seq: int
    kind: str
    segments: list[int]  # the item's segments that went (their ids leave indexes)
    version: str | None  # INDEXED: the model version whose vectors were stored (None: all)


def record_change(
    conn: Connection,
    item_seq: int,
    kind: str,
    segments: Sequence[int] = (),
    version: str | None = None,
) -> None:
    """One row, inside the caller's transaction."""
    conn.execute(
        "INSERT INTO changes (item_seq, kind, segments, version, at) VALUES (?,?,?,?,?)",
        (item_seq, kind, json.dumps(list(segments)), version, time.time()),
    )


def record_changes(
    conn: Connection, item_seqs: Sequence[int], kind: str, version: str | None = None
) -> None:
    conn.executemany(
        "INSERT INTO changes (item_seq, kind, segments, version, at) VALUES (?,?,'[]',?,?)",
        [(seq, kind, version, time.time()) for seq in item_seqs],
    )


class Changes:
    def __init__(self, db: Database) -> None:
        self._db = db

    def last_seq(self) -> int:
        row = self._db.connection().execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(row[0])

    def after(self, seq: int, limit: int = 10_000) -> list[ChangeRow]:
        rows = self._db.connection().execute(
            "SELECT seq, item_seq, kind, segments, version FROM changes WHERE seq > ?"
            " ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [ChangeRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def prune(self, older_than_s: float = KEEP_S) -> int:
        with self._db.transaction() as conn:
            cur = conn.execute("DELETE FROM changes WHERE at < ?", (time.time() - older_than_s,))
        return int(cur.rowcount)
