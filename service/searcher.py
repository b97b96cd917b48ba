"""Search: resolve a query to a vector, search the active model's indexes, join results
to items, and write the Results body.

A target with sound or pictures is searched twice, in the items' index and in the index
of long items' segments (moments); the two are merged by score and, by default, grouped
so each item appears once, at its best match: a segment carries its span and transcript
text, and the item's next best segments are listed under it (docs/service.md "Moments").

Queries go through the micro-batcher (service/search_batcher.py): `run_batch` answers
a whole batch in a search thread with ONE text-encoder call and ONE FAISS search per
(space, target), then one read for all result items. Results JSON is assembled there
from cached item JSON, off the event loop (whose time is the server's bottleneck under
load); its shape is the schema's `SearchResults`, which tests/service checks it against.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from indexer import IndexerError, IndexSet
from model.media.segments import overlap_weights
from service.active_model import ActiveModel
from service.embedder import Embedder
from service.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    ServiceError,
    TooLarge,
    UnsupportedPair,
)
from service.indexes import SEGMENT_ID_BASE, SEGMENTED, segment_ids, segment_index
from service.prometheus import Metrics
from service.schemas import item_payload
from service.search_batcher import SearchBatcher
from service.settings import Settings
from service.storage import READY_CACHE_ITEMS, ItemRow, SegmentRow, Storage

log = logging.getLogger("service.search")

NOTHING_TO_SEARCH_WITH = "there is nothing to search with"
SEGMENT_FETCH = 4  # segment hits fetched per result wanted: several may share one item
SEGMENT_FETCH_MIN = 16
SEGMENT_WIDEN = 8  # a crowded fetch is made this much wider, up to SEGMENT_FETCH_MAX
SEGMENT_FETCH_MAX = 4096
LONG_ITEMS_TTL_S = 60.0  # how stale the count of items with segments may be
MORE_SEGMENTS = 3  # next best segments listed under a grouped result
NO_MOMENT = ',"segment":null,"segment_text":null,"more_segments":[]'  # a whole item's


class VersionChanged(ServiceError):
    """The service switched model versions between embedding an example and searching
    with it; the caller embeds it again with the new version."""

    status, code = 503, "version_changed"


@dataclass
class Query:
    """One search, resolved as far as it can be without touching storage or the model."""

    target: str
    k: int
    space: str | None = None  # known up front for text and vector queries
    text: str | None = None
    vector: np.ndarray | None = None
    item_id: str | None = None
    filter: dict[str, Any] | None = None
    exclude_seq: int | None = None
    kind: str = "text"  # text | item | vector | example: for metrics
    version: str | None = None  # the model version that embedded `vector` (an example)
    group: bool = True  # each item once (its best match) or every matching segment
    start_s: float | None = None  # a moment of the query item (with end_s)
    end_s: float | None = None
    # A moment query leaves out only the query item's segments that overlap it (other
    # stretches of the same recording are fair answers); a whole-item query all of them.
    exclude_span: tuple[float, float] | None = None
    # A moment query's other stretches, scored against it here rather than searched for:
    # the search leaves out every segment of the query item, since they are the nearest
    # and would fill the fetch (scores, segment-index ids).
    own_stretches: tuple[np.ndarray, np.ndarray] | None = None
    future: asyncio.Future[Any] | None = field(default=None, repr=False)
    enqueued: float = 0.0


@dataclass
class Answer:
    # (the item as JSON text, score[, the result's other fields as JSON]), best first
    hits: list[tuple[str, float] | tuple[str, float, str]]
    space: str
    model_version: str  # the version whose indexes answered
    # The hits as SearchResults.results (a JSON array's inside), built where the answer
    # is made (the search thread), not on the event loop.
    results: str = field(init=False)

    def __post_init__(self) -> None:
        self.results = ",".join(
            f'{{"item":{hit[0]},"score":{round(hit[1], 6)!r}'
            f"{hit[2] if len(hit) > 2 else NO_MOMENT}}}"
            for hit in self.hits
        )


def results_json(answer: Answer, started: float) -> bytes:
    """The SearchResults body, assembled from the items' cached JSON; took_ms counts
    from `started` (time.perf_counter())."""
    took = round((time.perf_counter() - started) * 1000, 3)
    return (
        f'{{"results":[{answer.results}],"space":{json.dumps(answer.space)},'
        f'"model_version":{json.dumps(answer.model_version)},"took_ms":{took!r}}}'
    ).encode()


class Searcher:
    """Turns API queries into batched FAISS searches over the active model's indexes.

    Every query starts with the active model: NoModel (503) when none is loaded."""

    def __init__(
        self,
        storage: Storage,
        model: ActiveModel,
        metrics: Metrics,
        executor: Executor,
        settings: Settings,
    ) -> None:
        self.storage = storage
        self.model = model
        self.metrics = metrics
        self.max_text_chars = settings.max_text_chars
        self.segment_s = settings.segment_s  # 0: long items are not cut into stretches
        self._long_items_n, self._long_items_at = 0, -math.inf
        self.batcher = SearchBatcher(
            self.run_batch,
            executor,
            metrics,
            settings.search_batch_ms / 1000.0,
            settings.search_batch_max,
            settings.search_threads,
        )
        self._json: OrderedDict[int, str] = OrderedDict()
        self._json_lock = threading.Lock()

    def require_model(self) -> Embedder:
        """The active model's embedder; NoModel when there is none."""
        return self.model.require(NOTHING_TO_SEARCH_WITH).embedder

    def _item_json(self, seq: int, row: ItemRow) -> str:
        """An item's JSON, cached for ready items: they only change by being deleted, and
        a deleted seq never comes back (storage drops it before the join sees it)."""
        with self._json_lock:
            cached = self._json.get(seq)
            if cached is not None:
                self._json.move_to_end(seq)
                return cached
        text = json.dumps(item_payload(row), ensure_ascii=False, separators=(",", ":"))
        if row.status == "ready":
            with self._json_lock:
                self._json[seq] = text
                if len(self._json) > READY_CACHE_ITEMS:
                    self._json.popitem(last=False)
        return text

    # -- resolving queries (event loop, cheap) ----------------------------------------
    def text_query(
        self, text: str, target: str, k: int, filter: dict | None, group: bool = True
    ) -> Query:
        embedder = self.require_model()
        if len(text) > self.max_text_chars:  # tokenising it would hold the search thread
            raise TooLarge(
                f"the query has {len(text)} characters; the limit is {self.max_text_chars}",
                {"max_chars": self.max_text_chars},
            )
        space = _space(embedder, "text", target)
        return Query(target, k, space, text=text, filter=filter, group=group)

    def vector_query(
        self,
        vector: list[float] | np.ndarray,
        space: str,
        target: str,
        k: int,
        filter: dict | None,
        group: bool = True,
    ) -> Query:
        vec = np.asarray(vector, dtype=np.float32)
        _check_vector(self.require_model(), vec, space, target)
        # The norm in float64: in float32 it overflows for 1e20 and underflows for 1e-25,
        # finite vectors with a direction.
        wide = np.asarray(vector, dtype=np.float64)
        norm = float(np.linalg.norm(wide))
        if not np.isfinite(wide).all() or not np.isfinite(norm) or norm == 0.0:
            raise InvalidRequest("the vector must be finite and not all zeros")
        unit = (wide / norm).astype(np.float32)
        return Query(target, k, space, vector=unit, filter=filter, kind="vector", group=group)

    def item_query(
        self,
        item_id: str,
        target: str,
        k: int,
        filter: dict | None,
        group: bool = True,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> Query:
        """A stored item, or with start_s and end_s a stretch of it (a moment)."""
        self.require_model()
        return Query(
            target, k, None, item_id=item_id, filter=filter, kind="moment" if start_s is not None
            else "item", group=group, start_s=start_s, end_s=end_s,
        )  # fmt: skip

    def example_query(
        self,
        kind: str,
        embeddings: dict[str, np.ndarray],
        target: str,
        k: int,
        version: str,
        group: bool = True,
        filter: dict | None = None,
    ) -> Query:
        """An uploaded example (not stored), already embedded by `version`: space -> vector."""
        model = self.require_model()
        space = _space(model, kind, target)
        if model.version != version or space not in embeddings:
            # Embedded by the version before a switch, whose spaces may differ.
            raise VersionChanged("the model version changed while the example was embedded")
        return Query(target, k, space, vector=embeddings[space], filter=filter, kind="example",
                     version=version, group=group)  # fmt: skip

    async def search(self, query: Query) -> Answer:
        self.metrics.child(self.metrics.searches, query.kind, query.target).inc()
        return await self.batcher.submit(query)

    # -- one batch (search thread) ----------------------------------------------------
    def run_batch(self, batch: list[Query]) -> list[Answer | ServiceError]:
        # One model version for the whole batch, its embedder and its index set, even if
        # the service switches versions meanwhile: no answer mixes two.
        serving = self.model.require(NOTHING_TO_SEARCH_WITH)
        embedder, indexes = serving.embedder, serving.index_set
        answers: list[Answer | ServiceError | None] = [None] * len(batch)
        for i, q in enumerate(batch):
            if q.version is not None and q.version != serving.version:
                answers[i] = VersionChanged(
                    f"the example was embedded by {q.version}; {serving.version} serves now"
                )
            elif q.item_id is not None:
                try:
                    self._resolve_item(q, embedder)
                except ServiceError as exc:
                    answers[i] = exc
            else:  # resolved by the version serving when it arrived: check it with this one
                try:
                    if q.text is not None:
                        q.space = _space(embedder, "text", q.target)
                    elif q.kind == "vector":
                        assert q.space is not None and q.vector is not None
                        _check_vector(embedder, q.vector, q.space, q.target)
                except ServiceError as exc:
                    answers[i] = exc

        t0 = time.perf_counter()
        # Only the queries still to answer: one refused above may name a space this
        # model lacks.
        asked = [q for i, q in enumerate(batch) if q.text is not None and answers[i] is None]
        texts = sorted({q.text for q in asked if q.text is not None})
        if texts:
            by_space = embedder.embed_texts(texts)
            row_of = {t: j for j, t in enumerate(texts)}
            for q in asked:
                assert q.space is not None and q.text is not None
                q.vector = by_space[q.space][row_of[q.text]]
            self.metrics.search_stage.labels("embed").observe(time.perf_counter() - t0)

        t1 = time.perf_counter()
        found: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(batch)
        moments: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(batch)
        with_segments: dict[tuple[str, str], str | None] = {}

        def segment_name(space: str, target: str) -> str | None:
            """The segment index to search beside (space, target), if it holds any."""
            if (space, target) not in with_segments:
                name = segment_index(target) if target in SEGMENTED else None
                try:
                    if name is not None and indexes.count(space, name) == 0:
                        name = None
                except IndexerError:  # indexes made before segments existed
                    name = None
                with_segments[(space, target)] = name
            return with_segments[(space, target)]

        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, q in enumerate(batch):
            if answers[i] is not None:
                continue
            assert q.space is not None
            if q.filter:
                try:
                    allowed = self.storage.items.seqs_matching(q.filter)
                    found[i] = _search_one(indexes, q, q.target, allowed, q.k)
                    name = segment_name(q.space, q.target)
                    if name is not None:
                        moments[i] = self._moments_of(indexes, q, name, _segment_k(q.k), allowed)
                except Exception:  # this query's own failure: the batch's others go on
                    log.exception("a filtered search failed")
                    found[i] = moments[i] = None
                    answers[i] = ServiceError("the filtered search failed on the server")
            else:
                groups[(q.space, q.target)].append(i)
        for (space, target), members in groups.items():
            k = max(batch[i].k + (batch[i].exclude_seq is not None) for i in members)
            queries = np.stack([batch[i].vector for i in members]).astype(np.float32)
            scores, seqs = indexes.search(space, target, queries, k)
            for row, i in enumerate(members):
                found[i] = (scores[row], seqs[row])
            name = segment_name(space, target)
            if name is None:
                continue
            # A query item's own segments are its nearest: searched together with the
            # others they would fill the fetch and leave no moment of any other item.
            own = {i: self._own_segments(batch[i]) for i in members}
            shared = [row for row, i in enumerate(members) if own[i].size == 0]
            if shared:
                # Fetched past k to group segments into items: probed as for k.
                scores, ids = indexes.search(space, name, queries[shared], _segment_k(k), param_k=k)
                for at, row in enumerate(shared):
                    moments[members[row]] = (scores[at], ids[at])
            for row, i in enumerate(members):
                if own[i].size:
                    hit = _search_without(
                        indexes, space, name, queries[row], own[i], _segment_k(k), param_k=k
                    )
                    moments[i] = _with_own_stretches(hit, batch[i], own[i], True)
        self.metrics.search_stage.labels("index").observe(time.perf_counter() - t1)

        t2 = time.perf_counter()
        segment_seqs = {
            int(s) - SEGMENT_ID_BASE for f in moments if f is not None for s in f[1] if s >= 0
        }
        segments = self.storage.segments.by_seqs(segment_seqs) if segment_seqs else {}
        for i, q in enumerate(batch):
            if moments[i] is not None and answers[i] is None and q.group:
                try:
                    moments[i] = self._widened(indexes, q, moments[i], segments, segment_name)
                except Exception:  # this query's own: its first fetch stands
                    log.exception("widening a segment fetch failed")
        wanted = {int(s) for f in found if f is not None for s in f[1] if s >= 0}
        wanted |= {g.item_seq for g in segments.values()}
        # Only ready items answer: one failed or processing is never a result.
        items = {s: r for s, r in self.storage.items.by_seqs(wanted).items() if r.status == "ready"}
        payloads = {seq: self._item_json(seq, row) for seq, row in items.items()}
        for i, q in enumerate(batch):
            hit = found[i]
            if answers[i] is not None or hit is None:
                continue
            assert q.space is not None
            candidates = _candidates(q, hit, moments[i], segments, payloads)
            answers[i] = Answer(_results(q, candidates, payloads), q.space, embedder.version)
        self.metrics.search_stage.labels("join").observe(time.perf_counter() - t2)
        return answers  # type: ignore[return-value]

    def _moments_of(
        self, indexes: IndexSet, q: Query, name: str, wanted: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One query's `wanted` nearest segments in index `name` (of items in `allowed`
        when it has a filter: their seqs), as run_batch finds them for a batch."""
        assert q.space is not None and q.vector is not None
        own = self._own_segments(q)
        if q.filter:
            if allowed is None:
                allowed = self.storage.items.seqs_matching(q.filter)
            allowed_segments = segment_ids(self.storage.segments.seqs_of_items(allowed))
            allowed_segments = np.setdiff1d(allowed_segments, own)
            hit = _search_one(
                indexes, q, name, allowed_segments, wanted, exclude=False, param_k=q.k
            )
            in_filter = q.exclude_seq is not None and bool(np.isin(q.exclude_seq, allowed))
            return _with_own_stretches(hit, q, own, in_filter)
        if own.size:
            hit = _search_without(indexes, q.space, name, q.vector, own, wanted, param_k=q.k)
            return _with_own_stretches(hit, q, own, True)
        scores, ids = indexes.search(q.space, name, q.vector[None, :], wanted, param_k=q.k)
        return scores[0], ids[0]

    def _widened(
        self,
        indexes: IndexSet,
        q: Query,
        hit: tuple[np.ndarray, np.ndarray],
        segments: dict[int, SegmentRow],
        segment_name: Callable[[str, str], str | None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """A long recording whose every stretch is near the query fills the segment
        fetch by itself, and other items' best moments are never seen: fetched again,
        wider, while the hits name fewer than k items and the index has more. The
        segments found are added to `segments`."""
        assert q.space is not None
        name = segment_name(q.space, q.target)
        wanted = _segment_k(q.k)
        enough = min(q.k, self._long_items())  # no more items have segments than that
        while name is not None and wanted < SEGMENT_FETCH_MAX:
            ids = [int(s) - SEGMENT_ID_BASE for s in hit[1] if s >= 0]
            named = {segments[s].item_seq for s in ids if s in segments}
            if len(named) >= enough or len(ids) < wanted:  # enough, or all there is
                break
            wanted = min(SEGMENT_FETCH_MAX, wanted * SEGMENT_WIDEN)
            hit = self._moments_of(indexes, q, name, wanted, None)
            new = {int(s) - SEGMENT_ID_BASE for s in hit[1] if s >= 0} - segments.keys()
            if new:
                segments.update(self.storage.segments.by_seqs(new))
        return hit

    def _long_items(self) -> int:
        """How many items have segments, counted at most once a minute (search thread)."""
        now = time.monotonic()
        if now - self._long_items_at > LONG_ITEMS_TTL_S:
            self._long_items_n = self.storage.segments.items_count()
            self._long_items_at = now
        return self._long_items_n

    def _own_segments(self, q: Query) -> np.ndarray:
        """Ids, in the segment indexes, of every segment of the query item: left out of
        the search (a moment query's other stretches come back as q.own_stretches)."""
        if q.exclude_seq is None:
            return np.empty(0, np.int64)
        return segment_ids([g.seq for g in self.storage.segments.of_item(q.exclude_seq)])

    def _resolve_item(self, q: Query, embedder: Embedder) -> None:
        assert q.item_id is not None
        row = self.storage.items.get(q.item_id)
        if row is None:
            raise NotFound(f"no item {q.item_id!r}")
        if row.status != "ready":
            raise Conflict(
                f"item {q.item_id!r} is {row.status}: only ready items can be queried by id",
                {"status": row.status},
            )
        q.space = _space(embedder, row.kind, q.target)
        vector = self.storage.embeddings.get(row.seq, embedder.version, q.space, row.kind)
        if vector is None:
            raise Conflict(f"item {q.item_id!r} has no {row.kind} embedding in space {q.space!r}")
        q.vector = vector
        q.exclude_seq = row.seq
        if q.start_s is not None and q.end_s is not None:
            self._resolve_moment(q, row, embedder.version)

    def _resolve_moment(self, q: Query, row: ItemRow, version: str) -> None:
        """The vector of a stretch of a stored item: its overlapping segments' vectors,
        weighted by how much of the stretch each covers. A short item is one moment: its
        own vector."""
        assert q.start_s is not None and q.end_s is not None and q.space is not None
        if row.kind not in SEGMENTED:
            raise InvalidRequest(
                f"item {q.item_id!r} is {'an' if row.kind == 'image' else 'a'} {row.kind}: "
                "only a sound or a video has stretches to search by",
                {"kind": row.kind},
            )
        if row.duration_s is not None and q.start_s >= row.duration_s:
            raise InvalidRequest(
                f"item {q.item_id!r} is {row.duration_s:.1f} s long; start_s {q.start_s:g} "
                "is past its end",
                {"duration_s": row.duration_s},
            )
        found, vectors = self.storage.segments.vectors_of_item(row.seq, version, q.space, row.kind)
        if not found:
            if self.segment_s and (row.duration_s or 0.0) > self.segment_s:
                # Long, so cut into stretches, but not (yet) for this version: searching
                # by the whole file would answer another question without saying so.
                raise Conflict(
                    f"the stretches of item {q.item_id!r} are not indexed yet under model "
                    f"version {version} (a long item's are made in the background after "
                    "an upgrade or a switch); search by the whole item, or try again "
                    "in a minute",
                    {"reason": "segments_not_ready"},
                )
            return  # the whole (short) item is the moment
        weights = overlap_weights([(g.start_s, g.end_s) for g in found], q.start_s, q.end_s)
        covered = float(weights.sum())
        if covered <= 0.0:  # past the last segment's end (the length rounds to the ms)
            last = max(g.end_s for g in found)
            raise InvalidRequest(
                f"item {q.item_id!r}: the stretch {q.start_s:g}-{q.end_s:g} s covers none of "
                f"its segments, which end at {last:g} s",
                {"duration_s": row.duration_s},
            )
        # Weights as fractions first: a stretch of a nanosecond is a segment's direction
        # too, not a vector of norm ~1e-9 that would scale every score down.
        mixed = ((weights / covered)[:, None] * vectors).sum(axis=0)
        q.vector = (mixed / max(float(np.linalg.norm(mixed)), 1e-12)).astype(np.float32)
        q.exclude_span = (q.start_s, q.end_s)
        # The rest of the recording answers too, scored as any other item's segments:
        # by its vectors of the target's kind (a video's sound for target audio), and
        # only if it has that kind (a sound is never a video's answer).
        if q.target not in row.modalities:
            return
        if q.target != row.kind:
            found, vectors = self.storage.segments.vectors_of_item(
                row.seq, version, q.space, q.target
            )
            if not found:
                return
            weights = overlap_weights([(g.start_s, g.end_s) for g in found], q.start_s, q.end_s)
        others = np.flatnonzero(weights <= 0.0)
        q.own_stretches = (
            (vectors[others] @ q.vector).astype(np.float32),
            segment_ids([found[j].seq for j in others]),
        )


def _check_vector(embedder: Embedder, vector: np.ndarray, space: str, target: str) -> None:
    """A query vector fits the model's (space, target) index: InvalidRequest if not."""
    if (space, target) not in embedder.indexed_pairs():
        raise UnsupportedPair(
            f"the active model ({embedder.version}) has no {target} embeddings in space {space!r}",
            {"space": space, "target": target},
        )
    dim = embedder.dim(space)
    if vector.ndim != 1 or vector.shape[0] != dim:
        raise InvalidRequest(
            f"the vector must have {dim} numbers for space {space!r} of the active model "
            f"({embedder.version}), got {vector.shape[0] if vector.ndim == 1 else vector.shape}",
            {"expected_dim": dim},
        )


def _space(embedder: Embedder, query_modality: str, target: str) -> str:
    """The space where the query's modality meets the target; UnsupportedPair if none."""
    space = embedder.space_for(query_modality, target)
    if space is None:
        raise UnsupportedPair(
            f"the active model ({embedder.space_option} spaces) cannot compare "
            f"{query_modality} with {target}",
            {"query": query_modality, "target": target},
        )
    return space


def _search_one(
    indexes: IndexSet,
    q: Query,
    index: str,
    allowed: np.ndarray,
    k: int,
    exclude: bool = True,
    param_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A filtered search of one index: only `allowed` ids (minus the query item) found.
    param_k: as in IndexSet.search (a segment fetch probes as for the results asked)."""
    assert q.space is not None and q.vector is not None
    if exclude and q.exclude_seq is not None:
        allowed = allowed[allowed != q.exclude_seq]
    if allowed.size == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    scores, ids = indexes.search(
        q.space, index, q.vector[None, :], k, filter=allowed, param_k=param_k
    )
    return scores[0], ids[0]


def _search_without(
    indexes: IndexSet, space: str, index: str, query: np.ndarray, left_out: np.ndarray,
    wanted: int, param_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`wanted` moments of one query among every segment but `left_out` (the query
    item's own; _with_own_stretches drops them from what comes back)."""
    fetch = wanted + len(left_out)
    if fetch <= OWN_SEGMENTS_FETCH_MAX:
        # Fetched past them: as fast as any search (a GPU copy serves it), where a
        # selector that leaves out a query's nearest would send an HNSW graph into
        # its exhaustive fallback.
        scores, ids = indexes.search(space, index, query[None, :], fetch, param_k=param_k)
        return scores[0], ids[0]
    listed = faiss.IDSelectorBatch(left_out)
    others = faiss.IDSelectorNot(listed)  # holds a pointer to `listed`: both live to the end
    scores, ids = indexes.search(
        space, index, query[None, :], wanted, filter=others, param_k=param_k
    )
    del listed, others
    return scores[0], ids[0]


def _with_own_stretches(
    hit: tuple[np.ndarray, np.ndarray], q: Query, own: np.ndarray, item_allowed: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One query's segment hits without any of the query item's own (fetched past, or
    already left out), and with its other stretches for a moment query (when the
    item passes the filter), best first."""
    scores, ids = hit
    keep = ~np.isin(ids, own)
    scores, ids = scores[keep], ids[keep]
    if q.own_stretches is not None and item_allowed:
        scores = np.concatenate([scores, q.own_stretches[0]])
        ids = np.concatenate([ids, q.own_stretches[1]])
        order = np.argsort(-scores, kind="stable")
        scores, ids = scores[order], ids[order]
    return scores, ids


def _is_own(q: Query, segment: SegmentRow) -> bool:
    """A segment of the query item that is not an answer: any, for a whole-item query;
    those overlapping the stretch, for a moment query (the rest of the recording is)."""
    if segment.item_seq != q.exclude_seq:
        return False
    span = q.exclude_span
    return span is None or (segment.start_s < span[1] and segment.end_s > span[0])


# A query item with more segments than this (a 4-hour recording at a 5 s hop has 2,880)
# is left out with a FAISS selector instead of fetched past.
OWN_SEGMENTS_FETCH_MAX = 2048


def _segment_k(k: int) -> int:
    return max(SEGMENT_FETCH_MIN, SEGMENT_FETCH * k)


Candidate = tuple[float, int, SegmentRow | None]  # score, item seq, the segment matched


def _candidates(
    q: Query,
    items: tuple[np.ndarray, np.ndarray],
    moments: tuple[np.ndarray, np.ndarray] | None,
    segments: dict[int, SegmentRow],
    payloads: dict[int, str],
) -> list[Candidate]:
    """Item and segment hits of one query, best first, without the query itself."""
    out: list[Candidate] = [
        (score, seq, None)
        for score, seq in zip(items[0].tolist(), items[1].tolist(), strict=True)
        if seq >= 0 and seq != q.exclude_seq and seq in payloads
    ]
    if moments is not None:
        for score, segment_id in zip(moments[0].tolist(), moments[1].tolist(), strict=True):
            segment = segments.get(segment_id - SEGMENT_ID_BASE) if segment_id >= 0 else None
            if segment is None or segment.item_seq not in payloads:
                continue
            if _is_own(q, segment):
                continue
            out.append((score, segment.item_seq, segment))
    out.sort(key=lambda c: -c[0])
    return out


def _results(
    q: Query, candidates: list[Candidate], payloads: dict[int, str]
) -> list[tuple[str, float] | tuple[str, float, str]]:
    """The first k results: one per item at its best match (its further matching
    segments under it), or with `group` off every candidate as it comes."""
    if not q.group:
        return [(payloads[seq], score, _moment_json(segment, [])) for score, seq, segment in
                candidates[: q.k]]  # fmt: skip
    order: list[int] = []
    best: dict[int, tuple[float, SegmentRow | None, list[tuple[float, SegmentRow]]]] = {}
    for score, seq, segment in candidates:
        entry = best.get(seq)
        if entry is None:
            if len(order) < q.k:
                best[seq] = (score, segment, [])
                order.append(seq)
        elif segment is not None and segment is not entry[1] and len(entry[2]) < MORE_SEGMENTS:
            entry[2].append((score, segment))
    return [
        (payloads[seq], best[seq][0], _moment_json(best[seq][1], best[seq][2])) for seq in order
    ]


def _moment_json(segment: SegmentRow | None, more: list[tuple[float, SegmentRow]]) -> str:
    """The result's `segment`, `segment_text` and `more_segments` fields (SearchResult)."""
    if segment is None and not more:
        return NO_MOMENT
    span = "null"
    text = "null"
    if segment is not None:
        span = f'{{"start_s":{segment.start_s!r},"end_s":{segment.end_s!r}}}'
        text = json.dumps(segment.text, ensure_ascii=False)
    listed = json.dumps(
        [
            {"start_s": g.start_s, "end_s": g.end_s, "score": round(score, 6),
             "segment_text": g.text}
            for score, g in more
        ],
        ensure_ascii=False,
    )  # fmt: skip
    return f',"segment":{span},"segment_text":{text},"more_segments":{listed}'
