"""The one table that maps domain errors (and bad input) to HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.errors import PersonaError, PersonaRequired, UnknownPersona

log = logging.getLogger(__name__)


def _body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


async def persona_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PersonaError)
    extra: dict[str, Any] = {}
    if isinstance(exc, UnknownPersona | PersonaRequired):
        extra["available"] = exc.available
    return JSONResponse(_body(exc.message, exc.code, **extra), status_code=exc.status_code)


def describe_validation(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "body.k", "message": "..."}``, readable by people."""
    out = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "missing":
            message = "field required"
        elif error.get("type") == "extra_forbidden":
            message = "unknown field"
        elif error.get("type") == "string_pattern_mismatch" and (error.get("ctx") or {}).get("pattern") == r"\S":
            message = "must not be blank"
        elif error.get("type") == "json_invalid":
            message = "request body is not valid JSON"
        out.append({"field": field, "message": message})
    return out


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = describe_validation(list(exc.errors()))
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return JSONResponse(_body(detail, "invalid_request", errors=errors), status_code=422)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(_body(str(exc.detail), "http_error"), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(_body("internal error; the server log has the details", "internal_error"), status_code=500)


HANDLERS = {
    PersonaError: persona_error,
    RequestValidationError: validation_error,
    StarletteHTTPException: http_error,
    Exception: unexpected_error,
}


def install(app: FastAPI) -> None:
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
