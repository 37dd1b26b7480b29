"""Exception handlers: domain errors (and bad input) as HTTP responses.

Status and code come from the one table, :data:`retrieval.errors.SURFACES`. Every handler
answers in the shape of the route it serves: the service's own routes get
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

from retrieval.errors import INTERNAL, INTERNAL_MESSAGE, PersonaError, PersonaRequired, Surface, UnknownPersona
from retrieval.text import VISIBLE

log = logging.getLogger(__name__)

OPENAI_PATHS = ("/v1/models", "/v1/chat/")


def is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PATHS)


def respond(request: Request, status: int, detail: str, code: str, headers: dict[str, str] | None = None,
            param: str | None = None, **extra: Any) -> JSONResponse:
    """An error response in the shape the route's clients expect (OpenAI's on the OpenAI routes)."""
    surface = Surface(status, code)
    if is_openai(request):
        return JSONResponse(surface.openai_body(detail, param), status_code=surface.openai_status, headers=headers)
    return JSONResponse(surface.body(detail, **extra), status_code=status, headers=headers)


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
        elif error.get("type") == "string_pattern_mismatch" and (error.get("ctx") or {}).get("pattern") == VISIBLE:
            message = "must not be blank"
        elif error.get("type") == "json_invalid":  # loc is ("body", <character offset>)
            field = "body"
            message = "request body is not valid JSON" + (f" (at character {loc[0]})" if loc else "")
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
    return respond(request, INTERNAL.status, INTERNAL_MESSAGE, INTERNAL.code)


HANDLERS = {
    PersonaError: persona_error,
    RequestValidationError: validation_error,
    StarletteHTTPException: http_error,
    Exception: unexpected_error,
}


def install(app: FastAPI) -> None:
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
