"""IndexSet: the FAISS indexes of one model version, one per (space, modality).

``IndexSet.open`` is the only way in. For every (space, modality) of the layout it reads
the ids the source (the database: the truth) holds, then loads the saved index file and
verifies it (manifest, size, sha256, FAISS parse, dimension, ids checksum). What happens
next, each with one log line saying why:

- loaded: the file verifies and holds exactly the source's ids;
- patched: the file verifies but is stale (saved before the last adds/deletes, or before
  a crash): missing ids are added from the source, ids the source no longer has are
  removed, as long as that is at most ``policy.reconcile_max_fraction`` of the index;
- built / rebuilt: no usable file (missing, corrupt, truncated, other model version,
  other dimension, too stale, or outgrown its index type): built from the source.

So after any crash an index never returns a deleted item (the source no longer has it)
and never misses an acknowledged one (the service wrote it to the source before it
acknowledged it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from indexer.build import build_vector_index, fetch_present, source_ids
from indexer.choice import IndexChoice, IndexPolicy, choose_for_set
from indexer.errors import IndexerError, StoreError, UnknownIndexError
from indexer.source import CallbackSource, LoadVectors, VectorSource
from indexer.store import IndexEntry, IndexStore, Manifest, check_name, ids_digest
from indexer.vector_index import IdFilter, IndexInfo, VectorIndex, now_utc

LOG = logging.getLogger("indexer")
Layout = Mapping[str, Sequence[str]]  # space -> modalities stored in it
Key = tuple[str, str]  # (space, modality)
OpenProgress = Callable[[int, int], None]  # (vectors done, vectors in all)


class SearchResult(NamedTuple):
    scores: np.ndarray  # float32 [n, k], best first, -inf where no result
    ids: np.ndarray  # int64 [n, k], -1 where no result


@dataclass(frozen=True)
class IndexEvent:
    """What open/maintain/rebuild did to one index, and why."""

    index: str  # "space/modality"
    action: Literal["loaded", "patched", "built", "rebuilt"]
    reason: str
    added: int = 0
    removed: int = 0
    seconds: float = 0.0


class IndexSet:
    """The indexes of one model version. Thread-safe: search from any number of threads
    while others add, remove, save or rebuild."""

    def __init__(
        self,
        directory: Path,
        version: str,
        dims: Mapping[str, int],
        indexes: dict[Key, VectorIndex],
        source: VectorSource,
        policy: IndexPolicy,
        budget_bytes: int,
        events: list[IndexEvent],
    ) -> None:
        self.directory = directory
        self.version = version
        self.dims = dict(dims)
        self.policy = policy
        self.budget_bytes = budget_bytes
        self.events = events
        self._source = source
        self._indexes = indexes
        self._store = IndexStore(directory)
        self._entries: dict[str, IndexEntry] = {}
        self._mutation = threading.RLock()  # orders add/remove against rebuild swaps
        self._save_lock = threading.Lock()
        self._rebuild_lock = threading.Lock()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        directory: str | Path,
        version: str,
        layout: Layout,
        dims: Mapping[str, int],
        source: VectorSource | LoadVectors,
        policy: IndexPolicy | None = None,
        *,
        budget_bytes: int | None = None,
        on_progress: OpenProgress | None = None,
        on_plan: Callable[[dict[str, IndexChoice]], None] | None = None,
        save: bool = True,
    ) -> IndexSet:
        """Load, verify, patch or build every index of `layout`; see the module docstring.

        directory: this version's folder (e.g. DATA_DIR/indexes/<version>).
        layout: {space: [modality, ...]}; dims: {space: dimension}.
        source: a VectorSource, or a `load_vectors(space, modality) -> (ids, vectors)`.
        budget_bytes: CPU memory all indexes may use (default: policy.memory_budget_bytes).
        on_progress: called with (vectors done, vectors in all) while building.
        on_plan: called once with the choice for every index before anything is built.
        save: write what was built or patched before returning.
        """
        policy = policy or IndexPolicy()
        directory = Path(directory)
        if not version or "/" in version:
            raise IndexerError(f"model version {version!r} must be a non-empty name without /")
        if not isinstance(source, VectorSource):
            source = CallbackSource(source)
        keys = [
            (check_name("space", space), check_name("modality", modality))
            for space, modalities in layout.items()
            for modality in modalities
        ]
        missing_dims = sorted({space for space, _ in keys} - set(dims))
        if missing_dims:
            raise IndexerError(f"no dimension given for space(s) {', '.join(missing_dims)}")
        budget = policy.memory_budget_bytes if budget_bytes is None else budget_bytes
        store = IndexStore(directory)
        manifest, problem = _read_manifest(store, version)

        truth = {key: source_ids(source, *key) for key in keys}
        choices = choose_for_set(
            {key: (len(truth[key]), dims[key[0]]) for key in keys}, policy, budget
        )
        if on_plan is not None:
            on_plan({f"{s}/{m}": choice for (s, m), choice in choices.items()})
        total = sum(len(ids) for ids in truth.values())
        done = 0

        def progress(step: int) -> None:
            nonlocal done
            done += step
            if on_progress is not None:
                on_progress(done, total)

        indexes: dict[Key, VectorIndex] = {}
        events: list[IndexEvent] = []
        for key in keys:
            index, event = _open_one(
                store,
                manifest,
                problem,
                key,
                dims[key[0]],
                truth[key],
                choices[key],
                source,
                policy,
                progress,
            )
            indexes[key] = index
            events.append(event)
        _release(source)
        for index in indexes.values():
            index.attach_gpu()
        result = cls(directory, version, dims, indexes, source, policy, budget, events)
        if manifest is not None:
            result._entries = {
                name: entry
                for name, entry in manifest.entries.items()
                if any(e.index == name and e.action == "loaded" for e in events)
            }
        if save:
            try:
                result.save()
            except OSError:  # a full or read-only disk: the indexes serve all the same
                LOG.exception(
                    "index set %s is open but could not be saved; the next save tries "
                    "again and a restart rebuilds what was not saved",
                    version,
                )
        elif manifest is not None:  # without a manifest nothing on disk is known to be stale
            store.remove_unreferenced(manifest)
        return result

    # ------------------------------------------------------------------ serving
    @property
    def keys(self) -> list[Key]:
        return list(self._indexes)

    def _get(self, space: str, modality: str) -> VectorIndex:
        try:
            return self._indexes[(space, modality)]
        except KeyError:
            known = [f"{s}/{m}" for s, m in self._indexes]
            raise UnknownIndexError(space, modality, known) from None

    def search(
        self,
        space: str,
        modality: str,
        queries: Any,
        k: int,
        filter: IdFilter | None = None,
        param_k: int | None = None,
    ) -> SearchResult:
        """Top-k by inner product (= cosine) for each query row.

        queries: float32 [n, d], L2-normalised. filter: None, the allowed ids (any int
        sequence), or a faiss.IDSelector. Returns k results per row whenever k allowed,
        live items exist; fewer are padded with id -1 and score -inf. param_k: the number
        of results the search parameter is chosen for, where k fetches more to group
        (segments into items); default k.
        """
        scores, ids = self._get(space, modality).search(queries, k, filter, param_k)
        return SearchResult(scores, ids)

    def add(self, space: str, modality: str, ids: Any, vectors: Any) -> int:
        """Add (id, vector) pairs to one index; returns how many became searchable.

        Idempotent: ids already in the index are left as they are."""
        with self._mutation:
            return self._get(space, modality).add(ids, vectors)

    def remove(self, ids: Any) -> int:
        """Remove ids from every index of the set, effective for the next search."""
        with self._mutation:
            return sum(index.remove(ids) for index in self._indexes.values())

    def count(self, space: str, modality: str) -> int:
        return self._get(space, modality).ntotal

    def counts(self) -> dict[str, int]:
        return {f"{s}/{m}": index.ntotal for (s, m), index in self._indexes.items()}

    def memory_bytes(self) -> int:
        return sum(index.memory_bytes() for index in self._indexes.values())

    def stats(self) -> dict[str, Any]:
        indexes = {f"{s}/{m}": index.stats() for (s, m), index in self._indexes.items()}
        return {
            "model_version": self.version,
            "memory_bytes": sum(entry["memory_bytes"] for entry in indexes.values()),
            "budget_bytes": self.budget_bytes,
            "indexes": indexes,
        }

    # ------------------------------------------------------------------ persistence
    def compact(self) -> int:
        """Remove deleted vectors for real now (one batched remove_ids per index)."""
        return sum(index.compact() for index in self._indexes.values())

    def save(self) -> None:
        """Write changed indexes and then the manifest, atomically (see indexer.store)."""
        with self._save_lock:
            entries: dict[str, IndexEntry] = {}
            saved: list[tuple[VectorIndex, int]] = []
            for (space, _), index in list(self._indexes.items()):
                previous = self._entries.get(index.name)
                if previous is not None and not index.dirty:
                    entries[index.name] = previous
                    continue
                # Serialised under the index's lock; the slow fsync happens after it.
                staged, live, deleted, generation = index.write(
                    lambda faiss_index, name=index.name: self._store.stage_index(name, faiss_index)
                )
                file, sha, size = self._store.commit_index(staged)
                physical = np.union1d(live, deleted)
                entries[index.name] = IndexEntry(
                    file=file,
                    sha256=sha,
                    bytes=size,
                    dim=self.dims[space],
                    count=len(physical),
                    ids_sha256=ids_digest(physical),
                    info=index.info.as_dict(),
                    deleted=len(deleted),
                    live_sha256=ids_digest(live) if len(deleted) else "",
                )
                saved.append((index, generation))
            manifest = Manifest(self.version, now_utc(), entries)
            self._store.write_manifest(manifest)
            self._entries = entries
            for index, generation in saved:  # only now is each save part of the set
                index.mark_saved(generation)
            self._store.remove_unreferenced(manifest)

    # ------------------------------------------------------------------ upkeep
    def reconcile(self) -> dict[str, tuple[int, int]]:
        """Bring every index in line with the source now: (added, removed) per index."""
        with self._mutation:
            try:
                return {
                    index.name: _catch_up(index, self._source, key, self.dims[key[0]])
                    for key, index in self._indexes.items()
                }
            finally:
                _release(self._source)

    def rebuild(self, space: str, modality: str, reason: str = "asked for") -> IndexEvent:
        """Rebuild one index from the source while the old one keeps serving, then swap.

        Adds and removes made during the build reach the new index through a catch-up
        with the source, the last one done while adds and removes wait."""
        key = (space, modality)
        old = self._get(space, modality)
        with self._rebuild_lock:
            started = time.perf_counter()
            LOG.warning("%s: rebuilding in the background: %s", old.name, reason)
            truth = source_ids(self._source, space, modality)
            # The others stay as they are: what is left of the budget after their real
            # size is this one's. (Chosen as a set, the others were stepped down the ladder
            # on paper only, and the set went over its budget.)
            budget = self.budget_bytes
            if budget is None:
                budget = self.policy.memory_budget_bytes
            others = sum(i.memory_bytes() for k, i in self._indexes.items() if k != key)
            sizes = {key: (len(truth), self.dims[space])}
            choice = choose_for_set(sizes, self.policy, max(0, budget - others))[key]
            try:
                new = build_vector_index(
                    space, modality, self.dims[space], self._source, choice, self.policy,
                    ids=truth,
                )  # fmt: skip
                _catch_up(new, self._source, key, self.dims[space])
                with self._mutation:
                    added, removed = _catch_up(new, self._source, key, self.dims[space])
                    new.attach_gpu()
                    self._indexes[key] = new
            finally:  # a build that failed keeps no copy either
                _release(self._source)
            event = IndexEvent(
                new.name, "rebuilt", reason, added, removed, round(time.perf_counter() - started, 3)
            )
            self.events.append(event)
            return event

    def maintain(self) -> list[IndexEvent]:
        """Rebuild indexes that outgrew their type or (HNSW) hold too many deleted vectors."""
        events = []
        for (space, modality), index in list(self._indexes.items()):
            reason = index.maintenance_reason()
            if reason is not None:
                events.append(self.rebuild(space, modality, reason))
        return events

    def close(self) -> None:
        """Drop the indexes (memory, GPU copies). Searches after this raise."""
        self._indexes = {}


# ---------------------------------------------------------------------- helpers
def _read_manifest(store: IndexStore, version: str) -> tuple[Manifest | None, str]:
    try:
        manifest = store.read_manifest()
    except StoreError as exc:
        return None, str(exc)
    if manifest.model_version != version:
        return None, (
            f"the manifest is for model version {manifest.model_version!r}, not {version!r}"
        )
    return manifest, ""


def _catch_up(index: VectorIndex, source: VectorSource, key: Key, dim: int) -> tuple[int, int]:
    """Add what the source has and the index lacks; remove what the source no longer has."""
    truth = source_ids(source, *key)
    live = index.live_ids()
    extra = np.setdiff1d(live, truth, assume_unique=True)
    missing = np.setdiff1d(truth, live, assume_unique=True)
    removed = index.remove(extra) if len(extra) else 0
    added = 0
    for start in range(0, len(missing), index.policy.add_batch):
        batch = missing[start : start + index.policy.add_batch]
        added += index.add(*fetch_present(source, *key, batch, dim))
    return added, removed


def _open_one(
    store: IndexStore,
    manifest: Manifest | None,
    problem: str,
    key: Key,
    dim: int,
    truth: np.ndarray,
    choice: IndexChoice,
    source: VectorSource,
    policy: IndexPolicy,
    progress: Callable[[int], None],
) -> tuple[VectorIndex, IndexEvent]:
    name = f"{key[0]}/{key[1]}"
    started = time.perf_counter()
    why = problem or "no manifest"
    loaded: VectorIndex | None = None
    physical = np.zeros(0, np.int64)
    if manifest is not None:
        entry = manifest.entries.get(name)
        if entry is None:
            why = "the manifest has no entry for it"
        else:
            try:
                faiss_index, physical = store.load(name, entry, dim)
                info = IndexInfo.from_dict(entry.info)
                loaded = VectorIndex(name, faiss_index, info, policy, physical, truth)
            except StoreError as exc:
                why = str(exc)
            except (KeyError, TypeError, ValueError) as exc:
                why = f"its manifest entry is unreadable ({exc})"

    action: Literal["built", "rebuilt"] = "built" if manifest is None else "rebuilt"
    if loaded is not None:
        assert entry is not None
        missing = np.setdiff1d(truth, physical, assume_unique=True)
        extra = loaded.tombstones  # physical ids the source no longer has
        if entry.deleted and not len(missing) and entry.live_sha256 == ids_digest(truth):
            extra = 0  # deleted before the save (an HNSW keeps them): nothing changed since
        elif entry.deleted:
            extra = max(0, extra - entry.deleted)  # those deleted since the save
        changes = len(missing) + extra
        if changes > policy.reconcile_max_fraction * max(1, len(truth)):
            why = (
                f"stale: {len(missing):,} stored vectors missing and {extra:,} deleted "
                f"ones present, more than {policy.reconcile_max_fraction:.0%} of "
                f"{len(truth):,}"
            )
            loaded = None
        else:
            for start in range(0, len(missing), policy.add_batch):
                batch = missing[start : start + policy.add_batch]
                loaded.add(*fetch_present(source, *key, batch, dim))
            outgrown = loaded.maintenance_reason()
            if outgrown is not None:
                why, loaded = outgrown, None
            else:
                progress(len(truth))
                seconds = round(time.perf_counter() - started, 3)
                if not changes:
                    LOG.info("%s: loaded %s, %d vectors", name, loaded.info.factory, loaded.ntotal)
                    return loaded, IndexEvent(name, "loaded", "file verified", seconds=seconds)
                loaded.mark_changed()
                reason = (
                    f"stale file (saved before the last changes or a crash): "
                    f"{len(missing):,} missing vectors added, {extra:,} deleted ones removed"
                )
                LOG.warning("%s: %s", name, reason)
                return loaded, IndexEvent(name, "patched", reason, len(missing), extra, seconds)

    LOG.warning(
        "%s: building %s from %d stored vectors because %s", name, choice.factory, len(truth), why
    )
    built = build_vector_index(*key, dim, source, choice, policy, ids=truth, on_progress=progress)
    seconds = round(time.perf_counter() - started, 3)
    return built, IndexEvent(name, action, why, added=len(truth), seconds=seconds)


def _release(source: VectorSource) -> None:
    """Drop what a source keeps of the vectors it read (CallbackSource keeps a full copy
    for the build): the set would hold it for its whole life otherwise."""
    release = getattr(source, "release", None)
    if callable(release):
        release()
