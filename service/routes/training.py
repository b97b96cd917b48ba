"""Training jobs. Listing works; starting and cancelling answer 501 (NotImplementedYet)
until the training worker (next issue) lands."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadAccess, StorageDep, WriteAccess
from service.errors import NotFound, NotImplementedYet
from service.schemas import Job, JobList, JobProgress, TrainingJobIn
from service.storage import JobRow

router = APIRouter(prefix="/v1/training", tags=["training"])

_NOT_YET = (
    "training from the stored items is not available in this version of the service: "
    "the training worker is not installed yet (train offline with `python -m model.train`)"
)


def job_view(row: JobRow) -> Job:
    return Job(
        id=row.id,
        status=row.status,  # type: ignore[arg-type]
        created_at=row.created_at,
        progress=JobProgress(**row.progress),
        metrics=row.metrics,
        model_version=row.model_version,
        activated=row.activated,
        error=row.error,
    )


@router.post("/jobs", status_code=202, response_model=Job)
async def start_job(body: TrainingJobIn, _: WriteAccess) -> Job:
    raise NotImplementedYet(_NOT_YET)


@router.get("/jobs", response_model=JobList)
def list_jobs(_: ReadAccess, storage: StorageDep) -> JobList:
    return JobList(jobs=[job_view(j) for j in storage.jobs.all()])


@router.get("/jobs/{job_id}", response_model=Job)
def get_job(job_id: str, _: ReadAccess, storage: StorageDep) -> Job:
    row = storage.jobs.get(job_id)
    if row is None:
        raise NotFound(f"no training job {job_id!r}")
    return job_view(row)


@router.post("/jobs/{job_id}/cancel", response_model=Job)
def cancel_job(job_id: str, _: WriteAccess, storage: StorageDep) -> Job:
    if storage.jobs.get(job_id) is None:
        raise NotFound(f"no training job {job_id!r}")
    raise NotImplementedYet(_NOT_YET)
