"""The model version the service embeds and searches with, and its open indexes.

One object, shared by ingestion, search and search by example, so that which model is
active is one fact in one place: a switch of version (the training worker, next issue)
is one `use()`. Empty when no model could be loaded: the service then serves, answers
`no_model` (503) where a model is needed, and says why in /readyz.
"""

from __future__ import annotations

from indexer import IndexRegistry
from service.embedder import Embedder
from service.errors import NoModel


class ActiveModel:
    def __init__(self) -> None:
        self.embedder: Embedder | None = None
        self.indexes: IndexRegistry | None = None

    def use(self, embedder: Embedder, indexes: IndexRegistry) -> None:
        self.embedder, self.indexes = embedder, indexes

    @property
    def loaded(self) -> bool:
        return self.embedder is not None and self.indexes is not None

    def require(self, so_that: str) -> tuple[Embedder, IndexRegistry]:
        """(embedder, indexes), or NoModel saying what cannot be done without them."""
        if self.embedder is None or self.indexes is None:
            raise NoModel(
                f"no model is loaded, so {so_that}: set MMV_MODEL to a checkpoint folder "
                "and restart"
            )
        return self.embedder, self.indexes
