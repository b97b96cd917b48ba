"""Child process for the kill test: the service's write path, over a real SQLite truth.

    python crash_writer.py DB DIR SEED

Each step writes SQLite first (commit = durable), then updates the index, then prints
ACK id / DEL id: what a client would have been told. Before a delete it prints TRY id: a
kill between TRY and DEL leaves that item in doubt (the client got no answer), so the
parent may find it either way, but the index must agree with SQLite. Saves often, so a
SIGKILL from the parent lands before, during or after a save. Not a test module: the tests run it.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np

DIM = 16
LAYOUT = {"vat": ["audio"]}


class SqliteSource:
    """A VectorSource over one table, like the service's embeddings table."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        # AUTOINCREMENT, as the service's items table: an id is never handed out twice,
        # so a line about an id can only mean one item.
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS emb (id INTEGER PRIMARY KEY AUTOINCREMENT, vec BLOB)"
        )
        self.db.commit()

    def next_id(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'emb'").fetchone()
        return 1 if row is None else int(row[0]) + 1

    def ids(self, space: str, modality: str) -> np.ndarray:
        rows = self.db.execute("SELECT id FROM emb").fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)

    def vectors(self, space: str, modality: str, ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(ids), DIM), np.float32)
        for i, item in enumerate(ids.tolist()):
            (blob,) = self.db.execute("SELECT vec FROM emb WHERE id = ?", (item,)).fetchone()
            out[i] = np.frombuffer(blob, np.float32)
        return out

    def put(self, item: int, vector: np.ndarray) -> None:
        self.db.execute("INSERT INTO emb VALUES (?, ?)", (item, vector.tobytes()))
        self.db.commit()

    def delete(self, item: int) -> None:
        self.db.execute("DELETE FROM emb WHERE id = ?", (item,))
        self.db.commit()


def say(line: str) -> None:
    """One write per line, so a kill cuts at most the line being written."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def main(db: str, directory: str, seed: int) -> None:
    from indexer import IndexPolicy, IndexSet

    rng = np.random.default_rng(seed)
    source = SqliteSource(db)
    if len(source.ids("vat", "audio")) == 0:
        for item in range(1, 301):
            source.put(item, unit(rng))
    policy = IndexPolicy(compact_max=64)
    index_set = IndexSet.open(Path(directory), "v1", LAYOUT, {"vat": DIM}, source, policy)
    next_id = source.next_id()
    say("READY")
    step = 0
    while True:
        step += 1
        if rng.random() < 0.65:
            vector = unit(rng)
            source.put(next_id, vector)
            index_set.add("vat", "audio", [next_id], vector[None, :])
            say(f"ACK {next_id}")
            next_id += 1
        else:
            live = source.ids("vat", "audio")
            victim = int(rng.choice(live))
            say(f"TRY {victim}")
            source.delete(victim)
            index_set.remove([victim])
            say(f"DEL {victim}")
        if step % 4 == 0:
            index_set.save()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
