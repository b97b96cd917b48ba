"""The model version the service embeds and searches with, and its open indexes.

One object, shared by ingestion, search and search by example, so that which model is
active is one fact in one place. What it holds is a `Serving` snapshot — the embedder,
the index registry and that version's index set — replaced whole by `use()` when the
service switches versions (service/version_switch.py). A search batch reads the
snapshot once and embeds and searches with it to the end, so no answer mixes versions.
Empty when no model could be loaded: the service then serves, answers `no_model` (503)
where a model is needed, and says why in /readyz.
"""

from __future__ import annotations

from dataclasses import dataclass

from indexer import IndexRegistry, IndexSet
from service.embedder import Embedder
from service.errors import NoModel

STARTING_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Serving:
    embedder: Embedder
    indexes: IndexRegistry  # adds and removes go here (to this and a version being built)
    index_set: IndexSet  # what searches of this version read

    @property
    def version(self) -> str:
        return self.embedder.version


class ActiveModel:
    def __init__(self) -> None:
        self._serving: Serving | None = None
        # True while start-up loads the model and opens its indexes (in the background:
        # the server answers meanwhile, model routes with a 503 that says to retry).
        self.starting = False
        # The version start-up is loading: named in this replica's heartbeat, so that no
        # DELETE takes it (its vectors, its folder) while its indexes are built from them.
        self.loading: str | None = None

    def use(self, embedder: Embedder, indexes: IndexRegistry) -> None:
        """Serve `embedder`'s version from the registry's active set (one assignment)."""
        if indexes.version != embedder.version:
            raise ValueError(
                f"indexes of {indexes.version} cannot serve model version {embedder.version}"
            )
        self._serving = Serving(embedder, indexes, indexes.active)

    @property
    def serving(self) -> Serving | None:
        return self._serving

    @property
    def embedder(self) -> Embedder | None:
        return self._serving.embedder if self._serving else None

    @property
    def indexes(self) -> IndexRegistry | None:
        return self._serving.indexes if self._serving else None

    @property
    def loaded(self) -> bool:
        return self._serving is not None

    def require(self, so_that: str) -> Serving:
        """The serving snapshot, or NoModel saying what cannot be done without one."""
        serving = self._serving
        if serving is None and self.starting:
            raise NoModel(
                f"the service is starting: the model and its indexes are still loading, so "
                f"{so_that} yet; retry in a few seconds",
                headers={"Retry-After": str(STARTING_RETRY_AFTER_S)},
            )
        if serving is None:
            raise NoModel(
                f"no model is loaded, so {so_that}: set MMV_MODEL to a checkpoint folder "
                "and restart"
            )
        return serving
