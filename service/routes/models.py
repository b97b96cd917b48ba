"""Model versions: list them; activate one.

Activating another version answers 501 (NotImplementedYet) until the training worker
(next issue) brings re-indexing into new indexes and the switch.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadAccess, StorageDep, WriteAccess
from service.errors import NotFound, NotImplementedYet
from service.schemas import ModelInfo, ModelList
from service.storage import ModelRow

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_view(row: ModelRow) -> ModelInfo:
    return ModelInfo(
        version=row.version,
        active=row.active,
        created_at=row.created_at,
        config=row.config,
        metrics=row.metrics,
        parent=row.parent,
    )


@router.get("", response_model=ModelList)
def list_models(_: ReadAccess, storage: StorageDep) -> ModelList:
    return ModelList(models=[model_view(m) for m in storage.models.all()])


@router.post("/{version}/activate", response_model=ModelInfo)
def activate_model(version: str, _: WriteAccess, storage: StorageDep) -> ModelInfo:
    row = storage.models.get(version)
    if row is None:
        known = ", ".join(m.version for m in storage.models.all()) or "none"
        raise NotFound(f"no model version {version!r} (registered: {known})")
    if row.active:
        return model_view(row)  # already serving: nothing to re-index
    raise NotImplementedYet(
        "switching to another model version (re-embedding every item into new indexes) "
        "is not available in this version of the service: it lands with the training worker"
    )
