"""Operations: liveness, readiness, Prometheus metrics, and the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from service.active_model import ActiveModel
from service.deps import ActiveModelDep, MetricsDep, ReadAccess, StorageDep, VersionSwitchDep
from service.errors import NotFound, error_body
from service.schemas import Health, Ready, Reindex
from service.version_switch import VersionSwitch

router = APIRouter(tags=["operations"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"  # the web page's files


@router.get("/healthz", response_model=Health)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "no model loaded or indexes not serving"}},
)
async def readyz(model: ActiveModelDep, switch: VersionSwitchDep) -> JSONResponse:
    body = readiness(model, switch).model_dump()
    if model.loaded:
        return JSONResponse(body)
    # The contract's readiness fields plus the error shape every status >= 400 carries.
    why = (
        "starting: the model and its indexes are loading"
        if model.starting
        else "no model is loaded (see the server log)"
    )
    body.update(error_body("not_ready", why))
    return JSONResponse(body, status_code=503)


def readiness(model: ActiveModel, switch: VersionSwitch) -> Ready:
    """What serves, and a switch to another version while one runs: items embedded
    again out of those to embed, then (stage `indexing`) the new indexes' progress."""
    serving = model.serving
    embedder, indexes = model.embedder, model.indexes
    status = switch.status
    reindex = None
    # A failed try is reported until the next one starts: the version still waits, and
    # this is where an operator reads why (the old version serves meanwhile).
    if status is not None and (status.running or status.stage == "failed") and serving is not None:
        done, total = status.done, status.total
        built = indexes.rebuild_status() if indexes else None
        if status.stage == "indexing" and built and built.get("to_version") == status.to_version:
            done, total = int(built["done"]), int(built["total"])
        reindex = Reindex(
            to_version=status.to_version,
            done=done,
            total=total,
            stage=status.stage,
            error=status.failure,
        )
    return Ready(
        model_version=embedder.version if embedder else None,
        device=embedder.device_kind if embedder else "cpu",  # type: ignore[arg-type]
        indexes=serving.index_set.counts() if serving else {},
        reindex=reindex,
    )


@router.get("/metrics", response_class=Response)
def metrics(_: ReadAccess, metrics: MetricsDep, storage: StorageDep) -> Response:
    metrics.set_item_counts(storage.items.count_by_status())
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


# The page loads only its own files: no inline script, no other origin (media, with a
# key, through signed links to this server), never framed by another site.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class PageFiles(StaticFiles):
    """The page's scripts, styles and icon under /static. The page itself is answered at
    `/` only, with its policy: /static/index.html had none, so another site could frame
    it (its one-click actions, the key it keeps) and the keyless origin guard let it in."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path.endswith((".html", ".htm")):
            raise NotFound("the web page is at /")
        response = await super().get_response(path, scope)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


@router.get("/", include_in_schema=False)
async def web_page() -> FileResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise NotFound("the web page is not installed (service/static/index.html is missing)")
    return FileResponse(
        page,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"},
    )
