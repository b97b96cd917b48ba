"""Typed service errors and the handlers that turn every failure into the contract's shape.

Every status >= 400 answers `{"error": {"code", "message", "detail"?}}` (docs/api.md),
including FastAPI's validation errors and Starlette's 404/405 for unknown routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("service.errors")
# Added to an unexpected error once its traceback is in the log (service/answered_errors.py).
LOGGED_NOTE = "logged by service.errors"


class ServiceError(Exception):
    """Base of every error the API reports; subclasses fix the status and the code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        detail: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers


class InvalidRequest(ServiceError):
    status, code = 422, "invalid_request"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class TooLarge(ServiceError):
    status, code = 413, "too_large"


class TooLong(ServiceError):
    status, code = 413, "too_long"


class UnsupportedMedia(ServiceError):
    status, code = 415, "unsupported_media"


class UnreadableMedia(ServiceError):
    status, code = 422, "unreadable_media"


class RangeNotSatisfiable(ServiceError):
    status, code = 416, "range_not_satisfiable"


class UnsupportedPair(ServiceError):
    """The active model has no space where the query and the target modality meet."""

    status, code = 422, "unsupported_pair"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class NoModel(ServiceError):
    status, code = 503, "no_model"


class RequestTimeout(ServiceError):
    """An upload's body stopped arriving: cut off, its slot and temporary file freed."""

    status, code = 408, "request_timeout"


class Overloaded(ServiceError):
    """More uploads or searches by example in flight than the settings allow; answered
    before the body is read, with Retry-After."""

    status, code = 503, "overloaded"


class InsufficientStorage(ServiceError):
    """The data directory's disk is (nearly) full: the upload is refused, or cut off."""

    status, code = 507, "insufficient_storage"


class UriTooLong(ServiceError):
    """Answered by service/http_protocol.py, before the app runs."""

    status, code = 414, "uri_too_long"


class HeadersTooLarge(ServiceError):
    """Answered by service/http_protocol.py, before the app runs."""

    status, code = 431, "headers_too_large"


def error_body(code: str, message: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail:
        error["detail"] = detail
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    detail: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, detail), status_code=status, headers=headers)


# Codes for the statuses Starlette and FastAPI raise themselves.
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media",
    416: "range_not_satisfiable",
    422: "invalid_request",
    431: "headers_too_large",
}


def validation_message(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "the request is not valid"
    first = errors[0]
    if first.get("type") == "json_invalid":  # its loc is a character position: "1: JSON ..."
        at = [p for p in first.get("loc", ()) if p != "body"]
        return f"the body is not valid JSON{f' (at character {at[0]})' if at else ''}"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    # pydantic prefixes the sentence a validator of ours raised with its class.
    what = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {what}{more}" if where else f"{what}{more}"


def _jsonable_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Validation errors without the raw input or exception objects (not JSON, may be big)."""
    out = []
    for err in errors:
        out.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The contract's answer for a typed error (401s also name the scheme they expect)."""
    headers = dict(exc.headers or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.status, exc.code, exc.message, exc.detail, headers)


def install_error_handlers(
    app: FastAPI, check_key: Callable[[Request], None] | None = None
) -> None:
    """`check_key(request)`: the key check of the route matched (ServiceError when it
    fails), answered before a malformed body is: a request without a key is told 401
    whatever it sent."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if check_key is not None:
            try:
                check_key(request)
            except ServiceError as refused:
                return service_error_response(refused)
        errors = _jsonable_errors(list(exc.errors()))
        return error_response(
            422, "invalid_request", validation_message(errors), {"errors": errors}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code = _HTTP_CODES.get(status, "http_error" if status < 500 else "internal_error")
        if status == 404 and exc.detail == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            default = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            message = str(exc.detail or default)
        return error_response(status, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        exc.add_note(LOGGED_NOTE)  # Starlette raises it on: it need not be logged again
        return error_response(
            500, "internal_error", "the server failed to answer this request; see its log"
        )
