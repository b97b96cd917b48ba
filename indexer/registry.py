"""IndexRegistry: the active model version's IndexSet, and the next one built beside it.

The service holds one registry. ``open`` makes a version active. ``start_rebuild`` builds
a new version's IndexSet in a background thread while the active one keeps serving; when
it is built (and saved) it is caught up with the source — once freely, once more while
adds and removes wait — and swapped in by one reference assignment. Searches that began
on the old set finish on it; its memory is freed when the last of them lets go.

A caller that must swap something else at the same instant (the service swaps the model
that embeds queries) passes ``swap=False``: the built set then waits as the next set
(state ``ready``; adds and removes reach it) until the caller calls ``swap(version)``
inside its own critical section, or ``discard_next()``.

Memory for two versions: while the next version builds, both live in memory. The next
set gets ``min(per-version budget, swap budget - active set's bytes)``, so the two
together stay within ``swap_budget_bytes`` (default twice the per-version budget); a
tight swap budget makes the next version choose smaller codecs, and ``memory()`` reports
both sets and the total.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from indexer.choice import IndexChoice, IndexPolicy
from indexer.errors import NoActiveIndexError, RebuildCalledOff, RebuildError
from indexer.index_set import IndexEvent, IndexSet, Layout, SearchResult
from indexer.source import CallbackSource, LoadVectors, VectorSource
from indexer.vector_index import IdFilter

LOG = logging.getLogger("indexer")


@dataclass
class RebuildStatus:
    to_version: str
    state: str  # building | catching_up | ready (waits for swap()) | done | failed
    done: int  # vectors indexed so far
    total: int  # vectors to index
    started_at: float
    finished_at: float | None = None
    error: str | None = None
    budget_bytes: int = 0  # what the new set was allowed to use
    planned_bytes: int = 0  # what its chosen indexes are estimated to take

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class IndexRegistry:
    """The active IndexSet plus at most one being built for the next model version."""

    def __init__(
        self,
        root: str | Path,
        policy: IndexPolicy | None = None,
        swap_budget_bytes: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.policy = policy or IndexPolicy()
        self.swap_budget_bytes = (
            2 * self.policy.memory_budget_bytes if swap_budget_bytes is None else swap_budget_bytes
        )
        self._active: IndexSet | None = None
        self._next: IndexSet | None = None  # set once built, until swapped in
        self._lock = threading.RLock()  # orders add/remove against the swap
        self._thread: threading.Thread | None = None
        self._called_off = threading.Event()  # the running rebuild's
        self._status: RebuildStatus | None = None

    # ---------------------------------------------------------------- active set
    def open(
        self,
        version: str,
        layout: Layout,
        dims: Mapping[str, int],
        source: VectorSource | LoadVectors,
    ) -> IndexSet:
        """Open (load, verify, patch or build) a version and make it active, synchronously."""
        opened = IndexSet.open(self.root / version, version, layout, dims, source, self.policy)
        with self._lock:
            self._active = opened
        return opened

    @property
    def active(self) -> IndexSet:
        current = self._active
        if current is None:
            raise NoActiveIndexError("no index set is open yet: call open(version, ...) first")
        return current

    @property
    def version(self) -> str | None:
        current = self._active
        return current.version if current is not None else None

    def search(
        self, space: str, modality: str, queries: Any, k: int, filter: IdFilter | None = None
    ) -> SearchResult:
        """Search the active version (reads one reference: never blocks on a swap)."""
        return self.active.search(space, modality, queries, k, filter)

    def add(self, version: str, space: str, modality: str, ids: Any, vectors: Any) -> bool:
        """Add vectors embedded by `version`'s model. False when that version's set is not
        open (still building: its catch-up reads them from the source instead)."""
        with self._lock:
            for candidate in (self._active, self._next):
                if candidate is not None and candidate.version == version:
                    candidate.add(space, modality, ids, vectors)
                    return True
            return False

    def remove(self, ids: Any) -> int:
        """Remove ids from the active set and from a built next set; returns the active
        set's count."""
        with self._lock:
            removed = self.active.remove(ids)
            if self._next is not None:
                self._next.remove(ids)
            return removed

    def save(self) -> None:
        self.active.save()

    def maintain(self) -> list[IndexEvent]:
        """Rebuild active indexes that outgrew their type (see IndexSet.maintain)."""
        return self.active.maintain()

    # ---------------------------------------------------------------- next version
    def start_rebuild(
        self,
        version: str,
        layout: Layout,
        dims: Mapping[str, int],
        source: VectorSource | LoadVectors,
        *,
        swap: bool = True,
    ) -> RebuildStatus:
        """Build `version`'s indexes in the background, then swap them in (or, with
        swap=False, keep them ready for `swap(version)`)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                running = self._status.to_version if self._status else "?"
                raise RebuildError(f"a rebuild to {running} is already running; wait for it")
            if self._next is not None:
                raise RebuildError(
                    f"version {self._next.version!r} is built and waits to be swapped in: "
                    "swap it or discard it first"
                )
            if self._active is not None and self._active.version == version:
                raise RebuildError(f"version {version!r} is already active")
            if not isinstance(source, VectorSource):
                source = CallbackSource(source)
            active_bytes = self._active.memory_bytes() if self._active is not None else 0
            budget = min(
                self.policy.memory_budget_bytes, max(0, self.swap_budget_bytes - active_bytes)
            )
            self._status = RebuildStatus(
                version, "building", 0, 0, time.time(), budget_bytes=budget
            )
            self._called_off = threading.Event()
            self._thread = threading.Thread(
                target=self._rebuild,
                args=(version, layout, dims, source, budget, swap, self._called_off),
                name=f"index-rebuild-{version}",
                daemon=True,
            )
            self._thread.start()
            return self._status

    def _rebuild(
        self,
        version: str,
        layout: Layout,
        dims: Mapping[str, int],
        source: VectorSource,
        budget: int,
        swap: bool,
        called_off: threading.Event,
    ) -> None:
        status = self._status
        assert status is not None

        def progress(done: int, total: int) -> None:
            status.done, status.total = done, total
            if called_off.is_set():  # between batches of vectors: the build stops here
                raise RebuildCalledOff(f"the rebuild to {version} was called off")

        def plan(choices: dict[str, IndexChoice]) -> None:
            status.planned_bytes = sum(choice.bytes_estimate for choice in choices.values())

        try:
            built = IndexSet.open(
                self.root / version,
                version,
                layout,
                dims,
                source,
                self.policy,
                budget_bytes=budget,
                on_progress=progress,
                on_plan=plan,
            )
            status.state = "catching_up"
            built.reconcile()  # most of what changed during the build, without blocking
            with self._lock:
                if called_off.is_set():
                    raise RebuildCalledOff(f"the rebuild to {version} was called off")
                self._next = built
                if not swap:
                    status.state = "ready"  # adds and removes reach it until swap()
                    return
            self.swap(version)
        except RebuildCalledOff:
            status.state, status.error = "failed", "called off before it was built"
            LOG.info("rebuild of index set %s called off", version)
        except Exception as exc:  # reported through rebuild_status(); the old set serves on
            status.state, status.error = "failed", f"{type(exc).__name__}: {exc}"
            LOG.exception("rebuild of index set %s failed", version)
        finally:
            if status.state != "ready":
                status.finished_at = time.time()
                with self._lock:
                    self._next = None

    def swap(self, version: str, *, save: bool = True) -> IndexSet:
        """Make the built next set of `version` the active one: a last catch-up with the
        source while adds and removes wait, then one reference assignment; then save it
        (save=False: the caller saves, e.g. once it has let go of its own locks).
        RebuildError when no built set of that version waits."""
        status = self._status
        with self._lock:
            built = self._next
            if built is None or built.version != version:
                waiting = built.version if built is not None else "none"
                raise RebuildError(
                    f"no built index set of version {version!r} waits to be swapped in "
                    f"(waiting: {waiting})"
                )
            built.reconcile()  # the rest, while adds and removes wait
            previous, self._active, self._next = self._active, built, None
        if status is not None and status.to_version == version:
            status.state = "done"  # from here the new set serves, whatever the save does
            status.finished_at = time.time()
        LOG.info(
            "index set %s is now active (was %s)", version, previous.version if previous else None
        )
        if save:
            self.save_swapped()
        return built

    def save_swapped(self) -> None:
        """Save the set just swapped in; a failure is logged and noted on the rebuild's
        status (it serves either way: the next upkeep saves it, a restart rebuilds it)."""
        built, status = self._active, self._status
        try:
            built.save()
        except Exception as exc:  # the next upkeep save writes it; open rebuilds if not
            if status is not None:
                status.error = f"active, but saving it failed: {type(exc).__name__}: {exc}"
            LOG.exception("index set %s is active but could not be saved", built.version)

    def cancel_rebuild(self) -> None:
        """Call off the running rebuild: it stops at its next batch of vectors (a batch
        or an index's training under way ends first); wait_rebuild() then returns."""
        self._called_off.set()

    def discard_next(self) -> None:
        """Drop a built set that waits to be swapped in (a switch that was called off)."""
        with self._lock:
            dropped, self._next = self._next, None
        status = self._status
        if dropped is not None and status is not None and status.state == "ready":
            status.state, status.error = "failed", "discarded before it was swapped in"
            status.finished_at = time.time()

    def rebuild_status(self) -> dict[str, Any] | None:
        """{"to_version", "state", "done", "total", ...} of the last rebuild, or None."""
        return self._status.as_dict() if self._status is not None else None

    def wait_rebuild(self, timeout: float | None = None) -> bool:
        """Wait for a running rebuild; True when none is running any more."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def memory(self) -> dict[str, Any]:
        """Bytes held by the active set and by a next set being built, and the budgets."""
        active = self._active.memory_bytes() if self._active is not None else 0
        status = self._status
        building = status is not None and status.state in ("building", "catching_up")
        next_set = self._next
        next_bytes = 0
        if next_set is not None:
            next_bytes = next_set.memory_bytes()
        elif building and status is not None:
            # still building: the planned size, in proportion to the vectors added so far
            next_bytes = int(status.planned_bytes * status.done / max(1, status.total))
        return {
            "active_bytes": active,
            "next_bytes": next_bytes,
            "total_bytes": active + next_bytes,
            "per_version_budget_bytes": self.policy.memory_budget_bytes,
            "swap_budget_bytes": self.swap_budget_bytes,
            "next_budget_bytes": status.budget_bytes if building and status else 0,
            "next_planned_bytes": status.planned_bytes if building and status else 0,
        }
