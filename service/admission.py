"""Admission control: a bound on the uploads and searches by example in flight.

Each holds a file of up to MMV_MAX_UPLOAD_MB on disk and a turn at the media workers, and
a read key is enough for a search by example: without a bound, clients could queue any
amount of work and disk. Past the bound a request is answered 503 `overloaded`, with
Retry-After, before its body is read (service/uploads.py takes the slot first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.errors import Overloaded

RETRY_AFTER_S = 5


class InFlightLimit:
    """At most `limit` requests of one kind at once, counting work they left running
    (`also_running`: uploads answered 202 whose processing goes on). The event loop is
    the only caller, so the check and the count need no lock."""

    def __init__(
        self,
        what: str,
        setting: str,
        limit: int,
        also_running: Callable[[], int] = lambda: 0,
    ) -> None:
        self.what = what
        self.setting = setting
        self.limit = limit
        self._also_running = also_running
        self._held = 0

    @property
    def in_flight(self) -> int:
        return self._held + self._also_running()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Held for the request's whole life; Overloaded when none is free."""
        busy = self.in_flight
        if busy >= self.limit:
            raise Overloaded(
                f"the server is busy: {busy} {self.what} are in flight, its limit "
                f"({self.setting}); try again in a few seconds",
                {"limit": self.limit},
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
