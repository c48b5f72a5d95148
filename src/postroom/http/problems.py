"""RFC 9457 problem+json for every error, and the mapping from domain errors to HTTP.

This is the only place that knows which status a domain error gets.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from python_multipart.exceptions import ParseError as MultipartBodyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from postroom import errors
from postroom.logging import get_logger

PROBLEM_TYPE_BASE = "https://postroom.dev/problems/"

STATUS_FOR: list[tuple[type[errors.PostroomError], int]] = [
    (errors.Unauthenticated, 401),
    (errors.PermissionDenied, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.PayloadTooLarge, 413),
    (errors.ValidationFailed, 422),
    (errors.ConfigurationError, 500),
]

TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
}

log = get_logger(__name__)


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (code or str(status)),
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if code:
        body["code"] = code
    if extra:
        body.update(extra)
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def status_for(exc: errors.PostroomError) -> int:
    for cls, status in STATUS_FOR:
        if isinstance(exc, cls):
            return status
    return 400


def domain_error_response(exc: errors.PostroomError) -> JSONResponse:
    status = status_for(exc)
    extra: dict[str, Any] = {}
    headers = None
    if isinstance(exc, errors.ValidationFailed):
        extra["errors"] = [
            {"field": p.field, "message": p.message, "code": p.code} for p in exc.problems
        ]
    if isinstance(exc, errors.MissingScope):
        extra["scope"] = exc.scope
    if isinstance(exc, errors.StateConflict):
        extra["current_status"] = exc.status
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    if status >= 500:
        log.error("configuration_error", error=exc.message)
    return problem_response(status, exc.message, code=exc.code, extra=extra, headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_problems(exc: RequestValidationError) -> list[dict[str, str]]:
    problems = []
    for err in exc.errors():
        kind = str(err.get("type", "invalid"))
        message = str(err.get("msg", "invalid value"))
        if kind == "json_invalid":
            message = "the body is not valid JSON: " + str(err.get("ctx", {}).get("error", message))
        elif kind == "missing" and err.get("loc") == ("body",):
            message = "a JSON body is required"
        problems.append(
            {"field": _field_path(err.get("loc", ())), "message": message, "code": kind}
        )
    return problems


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.PostroomError)
    async def _domain(_request: Request, exc: errors.PostroomError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_problems(exc)
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:3])
        return problem_response(422, detail, code="validation_failed", extra={"errors": problems})

    @app.exception_handler(MultipartBodyError)
    async def _multipart(_request: Request, exc: MultipartBodyError) -> JSONResponse:
        # ``request.form()`` lets the parser's own errors through (Starlette turns only its
        # size and count limits into a 400): a broken multipart body is the client's fault.
        return problem_response(
            400, f"the multipart/form-data body is malformed: {exc}", code="malformed_body"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "Error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such route"
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path, error=repr(exc))
        return problem_response(500, "an unexpected error occurred; it has been logged")
