"""The one table that maps domain errors (and bad input) to HTTP responses.

Every handler answers in the shape of the route it serves: the service's own routes get
``{"detail", "code", ...}``; the OpenAI-compatible routes (:data:`OPENAI_PATHS`) get OpenAI's
``{"error": {"message", "type", "param", "code"}}``, with bad input as 400 as OpenAI does.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.errors import PersonaError, PersonaRequired, UnknownPersona

log = logging.getLogger(__name__)

OPENAI_PATHS = ("/v1/models", "/v1/chat/")
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def _body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PATHS)


def openai_error(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def respond(request: Request, status: int, detail: str, code: str, headers: dict[str, str] | None = None,
            param: str | None = None, **extra: Any) -> JSONResponse:
    """An error response in the shape the route's clients expect (OpenAI's on the OpenAI routes)."""
    if is_openai(request):
        status = 400 if status == 422 else status
        return JSONResponse(openai_error(status, detail, code, param), status_code=status, headers=headers)
    return JSONResponse(_body(detail, code, **extra), status_code=status, headers=headers)


async def persona_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PersonaError)
    extra: dict[str, Any] = {}
    if isinstance(exc, UnknownPersona | PersonaRequired):
        extra["available"] = exc.available
    if isinstance(exc, UnknownPersona) and is_openai(request):
        listed = ", ".join(exc.available) or "none (run `persona ingest` first)"
        return respond(request, 404, f"The model {exc.slug!r} does not exist; available models: {listed}",
                        "model_not_found", param="model")
    return respond(request, exc.status_code, exc.message, exc.code, **extra)


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
        elif error.get("type") == "json_invalid":  # loc is ("body", <character offset>)
            field = "body"
            message = f"request body is not valid JSON (at character {loc[0]})" if loc else "request body is not valid JSON"
        out.append({"field": field, "message": message})
    return out


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = describe_validation(list(exc.errors()))
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    param = errors[0]["field"] if errors else None
    return respond(request, 422, detail, "invalid_request", param=param, errors=errors)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return respond(request, exc.status_code, str(exc.detail), "http_error", headers=getattr(exc, "headers", None))


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return respond(request, 500, "internal error; the server log has the details", "internal_error")


HANDLERS = {
    PersonaError: persona_error,
    RequestValidationError: validation_error,
    StarletteHTTPException: http_error,
    Exception: unexpected_error,
}


def install(app: FastAPI) -> None:
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
