"""Build one index from the source: choose, train on a sample, add in batches, tune.

One streaming pass over the source: the training sample and the tuning queries are
fetched first, then every batch of vectors is both added to the index and fed to the
exact search that gives the tuner its ground truth, so no more than one batch of vectors
is held beside the index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import faiss
import numpy as np
from tqdm import tqdm

from indexer.choice import IndexChoice, IndexPolicy, exact_choice
from indexer.errors import IndexBuildError, SourceError
from indexer.source import VectorSource
from indexer.tuning import ExactNeighbours, drop_self, exact_tuning, tune, tune_wide
from indexer.vector_index import IndexInfo, VectorIndex, check_vectors, now_utc

LOG = logging.getLogger("indexer")
Progress = Callable[[int], None]


def source_ids(source: VectorSource, space: str, modality: str) -> np.ndarray:
    """The source's ids for one index, sorted, checked unique."""
    ids = np.asarray(source.ids(space, modality))
    if ids.ndim != 1 or (len(ids) and not np.issubdtype(ids.dtype, np.integer)):
        raise SourceError(f"{space}/{modality}: the source's ids must be a 1-D integer array")
    ids = np.sort(ids.astype(np.int64, copy=False))
    if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
        raise SourceError(f"{space}/{modality}: the source returned duplicate ids")
    return ids


def fetch(source: VectorSource, space: str, modality: str, ids: np.ndarray, dim: int) -> np.ndarray:
    """Vectors for ids from the source, checked (shape, finite, unit norm)."""
    if len(ids) == 0:
        return np.zeros((0, dim), np.float32)
    try:
        _, vectors = check_vectors(ids, source.vectors(space, modality, ids), dim)
    except ValueError as exc:
        raise SourceError(f"{space}/{modality}: the source's vectors are unusable: {exc}") from exc
    return vectors


def fetch_present(
    source: VectorSource, space: str, modality: str, ids: np.ndarray, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) for those of `ids` the source still has.

    A live database can delete rows between ids() and vectors(); the source then raises
    SourceError. Read its ids again, keep those still there and ask once more: a
    deleted row is simply not indexed (any later catch-up agrees)."""
    try:
        return ids, fetch(source, space, modality, ids, dim)
    except SourceError:
        still = ids[np.isin(ids, source_ids(source, space, modality), assume_unique=True)]
        if len(still) == len(ids):
            raise  # nothing was deleted: the error is real
        return still, fetch(source, space, modality, still, dim)


def _no_polysemous(index: faiss.Index) -> None:
    """PQ indexes from the factory train polysemous codes by simulated annealing (minutes on
    2 cores); their search here never uses them, so skip that."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexIDMap | faiss.IndexIDMap2):
        inner = faiss.downcast_index(inner.index)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False


def tuning_query_ids(
    ids: np.ndarray, train_ids: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """`count` held-out query ids, sorted: drawn from the vectors k-means did not train on
    while there are enough, then from the rest. A training vector sits nearer its own
    centroid and finds its neighbours in fewer lists than a new item does (IVF1024 at
    100k x 256-d, clustered: recall 0.960 for training vectors, 0.944 for the others and
    0.946 for fresh queries at nprobe=128), so tuning on them stops one nprobe too early."""
    count = min(len(ids), count)
    untrained = ids[~np.isin(ids, train_ids, assume_unique=True)]
    if len(untrained) >= count:
        return np.sort(rng.choice(untrained, size=count, replace=False))
    rest = rng.choice(train_ids, size=count - len(untrained), replace=False)
    return np.sort(np.concatenate([untrained, rest]))


def build_vector_index(
    space: str,
    modality: str,
    dim: int,
    source: VectorSource,
    choice: IndexChoice,
    policy: IndexPolicy,
    ids: np.ndarray | None = None,
    on_progress: Progress | None = None,
) -> VectorIndex:
    """A new, tuned VectorIndex holding every vector the source has for (space, modality)."""
    name = f"{space}/{modality}"
    started = time.perf_counter()
    ids = source_ids(source, space, modality) if ids is None else ids
    n = len(ids)
    rng = np.random.default_rng(policy.seed)
    try:
        index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexBuildError(
            f"FAISS rejects the factory string {choice.factory!r} for "
            f"{dim}-d vectors: {str(exc).splitlines()[0][:200]}"
        ) from exc

    _no_polysemous(index)
    if choice.kind == "ivf":
        faiss.extract_index_ivf(index).cp.niter = policy.kmeans_iterations
    train_ids = np.zeros(0, np.int64)
    if not index.is_trained:
        train_ids = np.sort(rng.choice(ids, size=min(n, choice.train_size), replace=False))
        LOG.info("%s: training %s on %d vectors", name, choice.factory, len(train_ids))
        try:
            if len(train_ids) == 0:  # some codecs (SQ) would "train" on nothing, silently
                raise RuntimeError("no vectors to train on")
            index.train(fetch_present(source, space, modality, train_ids, dim)[1])
        except RuntimeError as exc:  # FAISS: fewer training points than centroids
            fallback = exact_choice(n, dim, policy)
            fallback = replace(
                fallback,
                reason=(
                    f"fallback: {choice.factory} cannot be trained on {n:,} vectors "
                    f"({str(exc).splitlines()[0][:120]}); exact until the set grows"
                ),
            )
            LOG.warning("%s: %s", name, fallback.reason)
            return build_vector_index(
                space, modality, dim, source, fallback, policy, ids, on_progress
            )

    # Exact flat needs no measuring; everything else (forced PQ too) is measured.
    measured = n > 0 and choice.factory != "IDMap2,Flat"
    exact = None
    if measured:
        query_ids = tuning_query_ids(ids, train_ids, policy.tuning_queries, rng)
        query_ids, queries = fetch_present(source, space, modality, query_ids, dim)
        k = min(policy.recall_k, n - 1)
        wide_k = max(k, min(max(policy.wide_ks, default=k), n - 1))
        exact = ExactNeighbours(queries, wide_k + 1) if k >= 1 else None

    added: list[np.ndarray] = []
    bar = tqdm(total=n, desc=f"index {name}", unit="vec", disable=None, leave=False)
    try:
        for start in range(0, n, policy.add_batch):
            wanted = ids[start : start + policy.add_batch]
            batch, vectors = fetch_present(source, space, modality, wanted, dim)
            index.add_with_ids(vectors, batch)
            added.append(batch)
            if exact is not None:
                exact.add(batch, vectors)
            bar.update(len(wanted))
            if on_progress is not None:
                on_progress(len(wanted))
    finally:
        bar.close()
    ids = np.concatenate(added) if added else np.zeros(0, np.int64)

    if exact is not None:
        wide_truth = drop_self(exact.result(), query_ids, wide_k)
        truth = wide_truth[:, :k]  # the exact lists are ranked: the first k are top-k
        tuning = tune(
            index, choice.param, choice.candidates, queries, query_ids, truth, policy.recall_target
        )
        tuning = tune_wide(
            index, tuning, choice.candidates, queries, query_ids, wide_truth, policy.wide_ks
        )
        level = logging.INFO if tuning.met else logging.WARNING
        LOG.log(
            level,
            "%s: %s tuned to %s=%s, recall@%d %.3f (target %.2f%s); for more results %s",
            name,
            choice.factory,
            tuning.param,
            tuning.value,
            tuning.k,
            tuning.recall,
            tuning.target,
            "" if tuning.met else ", NOT reached",
            ", ".join(f"k={k}: {v} (recall {r:.3f})" for k, v, r in tuning.wide) or "n/a",
        )
    else:
        tuning = exact_tuning(policy.recall_k, policy.recall_target)
    info = IndexInfo(
        factory=choice.factory,
        kind=choice.kind,
        dim=dim,
        tuning=tuning,
        built_n=len(ids),
        built_at=now_utc(),
        build_seconds=round(time.perf_counter() - started, 3),
        train_size=choice.train_size if choice.kind != "flat" else 0,
        reason=choice.reason,
    )
    built = VectorIndex(name, index, info, policy, physical_ids=ids)
    built.mark_changed()
    return built
