"""Fixtures for the indexer tests: small clustered data on the sphere, in-memory sources."""

from __future__ import annotations

import os

# One OpenMP thread per process before FAISS loads: the 2 shared cores are oversubscribed
# otherwise and FAISS's k-means slows down tenfold (the Makefile exports the same).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable

import faiss
import numpy as np
import pytest

from indexer import ArraySource, IndexPolicy
from indexer.synthetic import ClusteredSphere

DIM = 32


@pytest.fixture(scope="session")
def sphere() -> ClusteredSphere:
    return ClusteredSphere(dim=DIM, clusters=60, cosine=0.7, seed=0)


@pytest.fixture(scope="session")
def data(sphere: ClusteredSphere) -> tuple[np.ndarray, np.ndarray]:
    """4,000 stored vectors with sparse, non-contiguous 64-bit ids."""
    vectors = sphere.sample(4000, seed=1)
    ids = (np.arange(4000, dtype=np.int64) * 7919 + (1 << 40)).astype(np.int64)
    return ids, vectors


@pytest.fixture
def source(data: tuple[np.ndarray, np.ndarray]) -> ArraySource:
    ids, vectors = data
    src = ArraySource()
    src.put("vat", "audio", ids, vectors)
    return src


@pytest.fixture
def ivf_policy() -> IndexPolicy:
    """Rules as shipped, but with the exact limit at 0 so 4,000 vectors get an IVF."""
    return IndexPolicy(exact_max_floats=0, tuning_queries=200, compact_max=64)


def brute_force(
    ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, the reference every index is held to."""
    if len(ids) == 0:
        return (
            np.full((len(queries), k), -np.inf, np.float32),
            np.full((len(queries), k), -1, np.int64),
        )
    scores, rows = faiss.knn(
        queries, np.ascontiguousarray(vectors), min(k, len(ids)), metric=faiss.METRIC_INNER_PRODUCT
    )
    labels = ids[rows]
    if k > len(ids):
        pad = k - len(ids)
        labels = np.hstack([labels, np.full((len(queries), pad), -1, np.int64)])
        scores = np.hstack([scores, np.full((len(queries), pad), -np.inf, np.float32)])
    return scores, labels


@pytest.fixture
def reference() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return brute_force
