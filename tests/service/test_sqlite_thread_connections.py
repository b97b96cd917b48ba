"""SQLite's per-thread connections must not outlive their threads (found by the load test,
tests/e2e/test_reliability_load.py; issue 21).

The API answers plain `def` routes in anyio's worker threads, and anyio ends a worker
idle for 10 s; the next burst of requests starts new ones. Each thread opens its own
connection (service/storage/sqlite_database.py), and the database keeps every connection
it ever opened in a list (to close them at shutdown), so a dead thread's connection, two
descriptors (the file and its WAL) and its page cache, stays open for the life of the
process: a server with bursty traffic runs out of descriptors (measured through the real
server: 43, 79, 107, 133 descriptors of db.sqlite* after four bursts of 32 clients
11 s apart).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from service.storage.sqlite_database import SqliteDatabase


def descriptors_of(folder: Path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder))
    return n


def test_a_dead_threads_connection_is_closed(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite")
    try:
        before = descriptors_of(tmp_path)

        def use() -> None:  # statements as the storage runs them (cached, kept)
            conn = db.connection()
            conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            conn.execute("SELECT count(*) FROM t").fetchone()
            conn.execute("SELECT x FROM t WHERE x > ?", (1,)).fetchall()

        for _ in range(20):  # threads that each use the database once, then end
            t = threading.Thread(target=use)
            t.start()
            t.join()
        # No gc.collect(): a connection in a cycle with its statement cache, collected
        # with statements still alive, kept its file open even after a collection.
        # The connections of live threads only (none here but this one's): not 2 x 20 more.
        assert descriptors_of(tmp_path) <= before + 2
    finally:
        db.close()
    assert descriptors_of(tmp_path) == 0  # and close() still closes every live one
