"""Operations: liveness, readiness, Prometheus metrics, and the web page."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

from service.deps import ReadAccess, RuntimeDep
from service.errors import NotFound, error_body
from service.schemas import Health, Ready

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "no model loaded or indexes not serving"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    body = runtime.readiness().model_dump()
    problem = runtime.not_ready_reason()
    if problem is None:
        return JSONResponse(body)
    # The contract's readiness fields plus the error shape every status >= 400 carries.
    body.update(error_body("not_ready", problem))
    return JSONResponse(body, status_code=503)


@router.get("/metrics", response_class=Response)
def metrics(runtime: RuntimeDep, _: ReadAccess) -> Response:
    runtime.refresh_gauges()
    return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/", include_in_schema=False)
async def web_page(runtime: RuntimeDep) -> FileResponse:
    page = runtime.static_dir / "index.html"
    if not page.is_file():
        raise NotFound("the web page is not installed (service/static/index.html is missing)")
    return FileResponse(page, media_type="text/html; charset=utf-8")
