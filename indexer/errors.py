"""Typed errors of the indexer. Every one carries a sentence a person can act on."""

from __future__ import annotations


class IndexerError(Exception):
    """Base class: anything the indexer refuses or cannot do."""


class UnknownIndexError(IndexerError, KeyError):
    """A (space, modality) pair this index set does not hold."""

    def __init__(self, space: str, modality: str, known: list[str]) -> None:
        self.space = space
        self.modality = modality
        super().__init__(
            f"no index for space {space!r} and modality {modality!r}; "
            f"this set holds: {', '.join(known) or 'nothing'}"
        )

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class VectorError(IndexerError, ValueError):
    """Vectors, ids or queries of the wrong shape, type or norm."""


class IndexBuildError(IndexerError):
    """FAISS could not build, train or tune an index."""


class StoreError(IndexerError):
    """The index files on disk are missing, unreadable, corrupt or inconsistent."""


class SourceError(IndexerError):
    """The vector source (the service's database) gave something the indexer cannot use."""


class RebuildError(IndexerError):
    """A background rebuild for a new model version failed or is not allowed now."""


class RebuildCalledOff(RebuildError):
    """The rebuild was called off (cancel_rebuild) before it was built."""


class NoActiveIndexError(IndexerError):
    """The registry was asked to search before any index set was opened."""
