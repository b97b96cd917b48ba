"""Model versions: list them, activate one (the service re-indexes, then switches), and
delete an inactive one with its embeddings, indexes and files."""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from service.deps import (
    ActiveModelDep,
    ReadAccess,
    SettingsDep,
    StorageDep,
    VersionSwitchDep,
    WriteAccess,
)
from service.errors import Conflict, NotFound
from service.schemas import ID_PATTERN, ModelInfo, ModelList, Reindex
from service.storage import ModelRow, VersionServed
from service.version_switch import VersionSwitch

router = APIRouter(prefix="/v1/models", tags=["models"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key"},
    403: {"description": "the key lacks write scope"},
    404: {"description": "not_found: no such version"},
}

Version = Annotated[str, Path(pattern=ID_PATTERN, description="a model version")]


def model_view(row: ModelRow, target: str | None, switch: VersionSwitch) -> ModelInfo:
    state = "active" if row.active else "activating" if row.version == target else "inactive"
    status = switch.status
    reindex = None
    if state == "activating" and status is not None and status.to_version == row.version:
        reindex = Reindex(
            to_version=row.version,
            done=status.done,
            total=status.total,
            stage=status.stage,
            error=status.failure,
        )
    return ModelInfo(
        version=row.version,
        active=row.active,
        created_at=row.created_at,
        config=row.config,
        metrics=row.metrics,
        parent=row.parent,
        state=state,  # type: ignore[arg-type]
        job_id=row.job_id,
        reindex=reindex,
    )


def _known(storage: StorageDep, version: str) -> ModelRow:
    row = storage.models.get(version)
    if row is None:
        known = ", ".join(m.version for m in storage.models.all()) or "none"
        raise NotFound(f"no model version {version!r} (registered: {known})")
    return row


@router.get("", response_model=ModelList)
def list_models(_: ReadAccess, storage: StorageDep, switch: VersionSwitchDep) -> ModelList:
    target = storage.models.target()
    return ModelList(models=[model_view(m, target, switch) for m in storage.models.all()])


@router.post("/{version}/activate", response_model=ModelInfo, responses=_RESPONSES)
def activate_model(
    version: Version, _: WriteAccess, storage: StorageDep, switch: VersionSwitchDep
) -> ModelInfo:
    """Switch the service to this version: its embeddings and indexes are built in the
    background while the active version keeps answering, then it takes over (`state`
    is `activating` meanwhile; /readyz shows the progress). Activating the active
    version calls off a switch in progress; any older version can be rolled back to."""
    row = _known(storage, version)
    try:
        storage.models.request_switch(version)
    except KeyError:  # deleted since the check, by a concurrent DELETE
        raise NotFound(f"no model version {version!r}") from None
    switch.check()  # start now rather than at the next poll
    return model_view(row, storage.models.target(), switch)


@router.delete(
    "/{version}",
    status_code=204,
    response_class=Response,
    responses={
        **_RESPONSES,
        409: {"description": "conflict: the version serves or is being activated"},
    },
)
def delete_model(
    version: Version,
    _: WriteAccess,
    storage: StorageDep,
    settings: SettingsDep,
    model: ActiveModelDep,
) -> Response:
    """Remove an inactive version: its embeddings (one transaction), then its indexes and
    files."""
    _known(storage, version)
    serving = model.serving
    here = serving.version if serving is not None else model.loading  # starting: loading it
    active = storage.models.active()
    switching_away = active is not None and active.version != version
    if switching_away and storage.models.target() != version and here == version:
        # This replica's own switch away from it is not done (the heartbeat check below
        # leaves the asking replica out).
        raise Conflict(
            f"model version {version!r} still serves on this replica, which is switching "
            "to the active version: delete it once that switch is done (GET /readyz)",
            {"version": version, "replicas": [settings.replica_name]},
        )
    try:
        storage.models.delete(version, settings.replica_timeout_s, settings.replica_name)
    except KeyError:
        raise NotFound(f"no model version {version!r}") from None
    except VersionServed as served:
        raise Conflict(
            f"model version {version!r} still serves on {', '.join(served.replicas)}, which "
            "is switching to the active version: delete it once that switch is done "
            "(GET /readyz on that replica)",
            {"version": version, "replicas": served.replicas},
        ) from None
    except ValueError:
        raise Conflict(
            f"model version {version!r} serves or is being switched to: activate another "
            "version first",
            {"version": version},
        ) from None
    for folder in (settings.indexes_dir / version, settings.models_dir / version):
        shutil.rmtree(folder, ignore_errors=True)
    return Response(status_code=204)
