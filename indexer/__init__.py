"""FAISS indexes per (model version, space, modality): chosen, tuned, persisted, swapped.

Knows vectors and ids only. The public API (see docs/indexer.md):

    IndexSet.open(dir, version, layout, dims, source) -> IndexSet
    IndexSet.search / add / remove / save / stats / reconcile / rebuild / maintain
    IndexRegistry(root).open / search / add / remove / start_rebuild / memory
"""

from indexer.choice import IndexChoice, IndexPolicy, choose_for_set, choose_index
from indexer.errors import (
    IndexBuildError,
    IndexerError,
    NoActiveIndexError,
    RebuildCalledOff,
    RebuildError,
    SourceError,
    StoreError,
    UnknownIndexError,
    VectorError,
)
from indexer.gpu import gpu_count, gpu_usable
from indexer.index_set import IndexEvent, IndexSet, SearchResult
from indexer.registry import IndexRegistry, RebuildStatus
from indexer.source import ArraySource, CallbackSource, VectorSource
from indexer.tuning import Tuning, recall_at_k

__all__ = [
    "ArraySource",
    "CallbackSource",
    "IndexBuildError",
    "IndexChoice",
    "IndexEvent",
    "IndexPolicy",
    "IndexRegistry",
    "IndexSet",
    "IndexerError",
    "NoActiveIndexError",
    "RebuildCalledOff",
    "RebuildError",
    "RebuildStatus",
    "SearchResult",
    "SourceError",
    "StoreError",
    "Tuning",
    "UnknownIndexError",
    "VectorError",
    "VectorSource",
    "choose_for_set",
    "choose_index",
    "gpu_count",
    "gpu_usable",
    "recall_at_k",
]
