"""Search: resolve a query to a vector, search the active model's indexes, join results
to items, and write the Results body.

Queries go through the micro-batcher (service/search_batcher.py): `run_batch` answers
a whole batch in a search thread with ONE text-encoder call and ONE FAISS search per
(space, target), then one read for all result items. Results JSON is assembled there
from cached item JSON, off the event loop (whose time is the server's bottleneck under
load); its shape is the schema's `SearchResults`, which tests/service checks it against.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict, defaultdict
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexer import IndexSet
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
from service.prometheus import Metrics
from service.schemas import item_payload
from service.search_batcher import SearchBatcher
from service.settings import Settings
from service.storage import READY_CACHE_ITEMS, ItemRow, Storage

NOTHING_TO_SEARCH_WITH = "there is nothing to search with"


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
    future: asyncio.Future[Any] | None = field(default=None, repr=False)
    enqueued: float = 0.0


@dataclass
class Answer:
    hits: list[tuple[str, float]]  # (the item as JSON text, score), best first
    space: str
    model_version: str  # the version whose indexes answered
    # The hits as SearchResults.results (a JSON array's inside), built where the answer
    # is made (the search thread), not on the event loop.
    results: str = field(init=False)

    def __post_init__(self) -> None:
        self.results = ",".join(
            f'{{"item":{item},"score":{round(score, 6)!r}}}' for item, score in self.hits
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
    def text_query(self, text: str, target: str, k: int, filter: dict | None) -> Query:
        embedder = self.require_model()
        if len(text) > self.max_text_chars:  # tokenising it would hold the search thread
            raise TooLarge(
                f"the query has {len(text)} characters; the limit is {self.max_text_chars}",
                {"max_chars": self.max_text_chars},
            )
        return Query(target, k, _space(embedder, "text", target), text=text, filter=filter)

    def vector_query(
        self, vector: list[float] | np.ndarray, space: str, target: str, k: int, filter: dict | None
    ) -> Query:
        embedder = self.require_model()
        if (space, target) not in embedder.indexed_pairs():
            raise UnsupportedPair(
                f"the active model has no {target} embeddings in space {space!r}",
                {"space": space, "target": target},
            )
        vec = np.asarray(vector, dtype=np.float32)
        dim = embedder.dim(space)
        if vec.ndim != 1 or vec.shape[0] != dim:
            raise InvalidRequest(
                f"the vector must have {dim} numbers for space {space!r}, got {vec.shape[0]}",
                {"expected_dim": dim},
            )
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(norm) or norm == 0.0:
            raise InvalidRequest("the vector must be finite and not all zeros")
        return Query(target, k, space, vector=vec / norm, filter=filter, kind="vector")

    def item_query(self, item_id: str, target: str, k: int, filter: dict | None) -> Query:
        self.require_model()
        return Query(target, k, None, item_id=item_id, filter=filter, kind="item")

    def example_query(
        self,
        kind: str,
        embeddings: dict[str, np.ndarray],
        target: str,
        k: int,
        version: str,
    ) -> Query:
        """An uploaded example (not stored), already embedded by `version`: space -> vector."""
        space = _space(self.require_model(), kind, target)
        return Query(target, k, space, vector=embeddings[space], kind="example", version=version)

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

        t0 = time.perf_counter()
        texts = sorted({q.text for q in batch if q.text is not None})
        if texts:
            by_space = embedder.embed_texts(texts)
            row_of = {t: j for j, t in enumerate(texts)}
            for q in batch:
                if q.text is not None:
                    assert q.space is not None
                    q.vector = by_space[q.space][row_of[q.text]]
            self.metrics.search_stage.labels("embed").observe(time.perf_counter() - t0)

        t1 = time.perf_counter()
        found: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(batch)
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, q in enumerate(batch):
            if answers[i] is not None:
                continue
            if q.filter:
                allowed = self.storage.items.seqs_matching(q.filter)
                found[i] = _search_one(indexes, q, allowed)
            else:
                assert q.space is not None
                groups[(q.space, q.target)].append(i)
        for (space, target), members in groups.items():
            k = max(batch[i].k + (batch[i].exclude_seq is not None) for i in members)
            queries = np.stack([batch[i].vector for i in members]).astype(np.float32)
            scores, seqs = indexes.search(space, target, queries, k)
            for row, i in enumerate(members):
                found[i] = (scores[row], seqs[row])
        self.metrics.search_stage.labels("index").observe(time.perf_counter() - t1)

        t2 = time.perf_counter()
        wanted = {int(s) for f in found if f is not None for s in f[1] if s >= 0}
        items = self.storage.items.by_seqs(wanted)
        payloads = {seq: self._item_json(seq, row) for seq, row in items.items()}
        for i, q in enumerate(batch):
            hit = found[i]
            if answers[i] is not None or hit is None:
                continue
            results: list[tuple[str, float]] = []
            for score, seq in zip(hit[0].tolist(), hit[1].tolist(), strict=True):
                if seq < 0 or seq == q.exclude_seq or seq not in payloads:
                    continue
                results.append((payloads[seq], score))
                if len(results) == q.k:
                    break
            assert q.space is not None
            answers[i] = Answer(results, q.space, embedder.version)
        self.metrics.search_stage.labels("join").observe(time.perf_counter() - t2)
        return answers  # type: ignore[return-value]

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


def _search_one(indexes: IndexSet, q: Query, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A filtered search: only `allowed` seqs (minus the query item) can be found."""
    assert q.space is not None and q.vector is not None
    if q.exclude_seq is not None:
        allowed = allowed[allowed != q.exclude_seq]
    if allowed.size == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    scores, seqs = indexes.search(q.space, q.target, q.vector[None, :], q.k, filter=allowed)
    return scores[0], seqs[0]
