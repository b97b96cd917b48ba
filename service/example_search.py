"""Search by example (POST /v1/search/upload): an uploaded file that is not stored,
embedded by a media worker with the active model, becomes the query's vector."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import ModelError
from model.media import MediaError
from service.active_model import ActiveModel
from service.admission import InFlightLimit
from service.errors import ServiceError
from service.media_errors import as_api_error, naming
from service.media_jobs import media_job, media_limits, read_info
from service.media_worker import MediaPool, WorkerCrashed, process_media
from service.prometheus import Metrics
from service.searcher import NOTHING_TO_SEARCH_WITH
from service.settings import Settings


@dataclass(frozen=True)
class Example:
    kind: str
    vectors: dict[str, np.ndarray]  # space -> vector
    version: str  # the model version that embedded it


class ExampleEmbedder:
    def __init__(
        self, settings: Settings, model: ActiveModel, pool: MediaPool, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.model = model
        self.pool = pool
        self.metrics = metrics
        self.limits = media_limits(settings)
        # A read key may send examples of up to MMV_MAX_UPLOAD_MB: bound how many at once.
        self.admission = InFlightLimit(
            "searches by example",
            "MMV_MAX_EXAMPLE_SEARCHES_IN_FLIGHT",
            settings.max_example_searches_in_flight,
        )

    async def embed(self, path: Path, shown_as: str | None = None) -> Example:
        """The example's kind and its vector in each space, from its own modality only
        (a video's pictures, not its sound), with the version that embedded it. API
        errors for files that cannot be used, as for uploads, naming the file `shown_as`
        (the sender's name for it)."""
        embedder = self.model.require(NOTHING_TO_SEARCH_WITH).embedder
        try:
            info = await read_info(path, self.limits, self.metrics)
        except ServiceError as exc:
            raise naming(exc, path.name, shown_as) from None
        job = media_job(path, info, embedder, self.settings, modalities=(info.kind,))
        try:
            result = await self.pool.run(process_media, job)
        except (MediaError, ModelError, WorkerCrashed) as exc:
            raise naming(as_api_error(exc), path.name, shown_as) from None
        vectors = {e.space: e.vector for e in result.embeddings if e.modality == info.kind}
        return Example(info.kind, vectors, embedder.version)
