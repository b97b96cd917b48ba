"""Training jobs: queue one, follow it, cancel it. `python -m service.worker` runs them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from service.deps import ActiveModelDep, ReadAccess, SettingsDep, StorageDep, WriteAccess
from service.errors import Conflict, NotFound
from service.schemas import ID_PATTERN, Job, JobList, JobProgress, JobStatus, TrainingJobIn
from service.storage import JobRow

router = APIRouter(prefix="/v1/training", tags=["training"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key"},
    403: {"description": "the key lacks write scope"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "not_found: no such job"}}

JobId = Annotated[str, Path(pattern=ID_PATTERN, description="an id this server gave out")]


def job_view(row: JobRow) -> Job:
    progress = JobProgress(**row.progress)
    if row.status != "running":
        # A stage and the time left belong to a running job: one whose worker died kept
        # "training" and its old ETA while queued again or failed (the page showed "about
        # N min left" for a job nobody ran). Its step and loss curve stay.
        progress.stage, progress.eta_s = None, None
    return Job(
        id=row.id,
        status=row.status,  # type: ignore[arg-type]
        created_at=row.created_at,
        progress=progress,
        metrics=row.metrics,
        model_version=row.model_version,
        activated=row.activated,
        error=row.error,
        request={k: v for k, v in row.request.items() if k != "queued_after_seq"},
        started_at=row.started_at,
        finished_at=row.finished_at,
        cancel_requested=row.cancel_requested,
        attempts=row.attempts,
        data=row.data,
    )


@router.post(
    "/jobs",
    status_code=202,
    response_model=Job,
    responses={
        **_RESPONSES,
        400: {"description": "invalid_request: the body is not JSON text"},
        413: {"description": "too_large: the body is over its limit"},
        503: {"description": "no_model: nothing to start from"},
    },
)
def start_job(
    _: WriteAccess, storage: StorageDep, model: ActiveModelDep, body: TrainingJobIn | None = None
) -> Job:
    """Queue a training job; a worker (`python -m service.worker`) claims it. Every field
    has a default, so no body at all is the defaults (it was 422 "Field required")."""
    model.require("there is nothing to train from or compare with")
    request = (body or TrainingJobIn()).model_dump()
    request["queued_after_seq"] = storage.items.last_seq()  # for automatic retraining
    return job_view(storage.jobs.create(request))


@router.get("/jobs", response_model=JobList)
def list_jobs(
    _: ReadAccess,
    storage: StorageDep,
    settings: SettingsDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="the newest N")] = None,
) -> JobList:
    """Newest first, and the workers seen lately: with none, queued jobs wait until one
    starts (`python -m service.worker`)."""
    jobs = storage.jobs.all(status, limit)
    alive = storage.heartbeats.live("worker", max(30.0, 5 * settings.worker_poll_s))
    return JobList(jobs=[job_view(j) for j in jobs], workers=alive)


@router.get("/jobs/{job_id}", response_model=Job, responses=_NOT_FOUND)
def get_job(job_id: JobId, _: ReadAccess, storage: StorageDep) -> Job:
    row = storage.jobs.get(job_id)
    if row is None:
        raise NotFound(f"no training job {job_id!r}")
    return job_view(row)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    responses={
        **_RESPONSES,
        **_NOT_FOUND,
        409: {"description": "conflict: the job has already ended"},
    },
)
def cancel_job(job_id: JobId, _: WriteAccess, storage: StorageDep) -> Job:
    """A queued job is cancelled at once; a running one stops at its next step (then
    `cancelled`, its half-made run removed); `cancel_requested` says it was asked."""
    before = storage.jobs.get(job_id)
    if before is None:
        raise NotFound(f"no training job {job_id!r}")
    if before.finished:
        raise Conflict(
            f"training job {job_id!r} has already {before.status}: there is nothing to cancel",
            {"status": before.status},
        )
    row = storage.jobs.request_cancel(job_id)
    assert row is not None
    return job_view(row)
