"""A reader-writer lock: many searches at once, one add/remove at a time.

FAISS CPU indexes are safe for concurrent searches but not for a search racing an add or
remove (FAISS wiki, "Threads and asynchronous calls"). FAISS releases the GIL inside
search, so readers holding this lock together really run in parallel on several cores.
Writers are preferred: once a writer waits, new readers queue behind it, so a steady
stream of searches cannot starve deletes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

    @property
    def readers(self) -> int:
        """How many readers hold the lock now (for tests and stats)."""
        with self._cond:
            return self._readers
