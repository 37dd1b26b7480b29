"""Domain errors, and the one table (:data:`SURFACES`) of how each looks on every surface.

The core raises these. Every surface reads :func:`surface_of`: the HTTP routes (status and
``code``), the OpenAI-compatible routes (OpenAI's error body), the SSE streams (an ``error``
event), MCP (a JSON-RPC error code) and the CLI (an exit code). Nothing else maps errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# JSON-RPC 2.0 error codes (what MCP clients receive); written out here so the core needs no mcp import.
JSONRPC_INVALID_PARAMS = -32602
JSONRPC_INTERNAL_ERROR = -32603
INTERNAL_MESSAGE = "internal error; the server log has the details"


class PersonaError(Exception):
    """Base class of every error the core raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def surface(self) -> Surface:
        return surface_of(self)

    @property
    def status_code(self) -> int:
        return self.surface.status

    @property
    def code(self) -> str:
        return self.surface.code


class UnknownPersona(PersonaError):
    """The requested persona is not indexed (or stopped being so while it was queried)."""

    def __init__(self, slug: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none (run `persona ingest` first)"
        super().__init__(f"unknown persona {slug!r}; available personas: {listed}")
        self.slug = slug
        self.available = available


class PersonaRequired(PersonaError):
    """No persona was named and the index holds zero or several."""

    def __init__(self, available: list[str]) -> None:
        if available:
            message = "several personas are indexed; name one with 'persona': " + ", ".join(available)
        else:
            message = "no persona is indexed yet; run `persona ingest seeds/` first"
        super().__init__(message)
        self.available = available


class InvalidCard(PersonaError):
    """A card file failed to load or validate. Nothing of it is written to the index."""

    def __init__(self, file: str, field: str, expected: str) -> None:
        super().__init__(f"{file}: field '{field}': {expected}")
        self.file = file
        self.field = field
        self.expected = expected


class InvalidQuery(PersonaError):
    """A query or question the core cannot work with (empty, too long, bad filter)."""


class IndexUnavailable(PersonaError):
    """The vector store cannot be reached or opened."""


class ModelUnavailable(PersonaError):
    """The embedding model cannot be loaded."""


class GeneratorUnavailable(PersonaError):
    """The requested answer generator is unknown or not configured."""


class UnknownPreset(PersonaError):
    """``PERSONA_RETRIEVAL`` names no retrieval preset."""


class LLMUnavailable(PersonaError):
    """A command that needs the LLM (``persona enrich``) found it not configured, unreachable or failing."""


class Forbidden(PersonaError):
    """The client may not do this here: a live ingest without the API key from another machine than the server's."""


class RemoteError(PersonaError):
    """An error a persona server answered a command with (``persona ingest`` through a running server): its message
    as the server gave it, on the row of the table whose ``code`` it carries (a code the table has no row for keeps
    its HTTP status, exit code 2)."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.remote_status = status
        self.remote_code = code

    @property
    def surface(self) -> Surface:
        found = next((row for row in SURFACES.values() if row.code == self.remote_code), None)
        if found is not None:
            return found
        return INTERNAL if self.remote_code == INTERNAL.code else Surface(self.remote_status, self.remote_code)


# -- the table ----------------------------------------------------------------------------------
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


@dataclass(frozen=True)
class Surface:
    """How one kind of error looks to each kind of client."""

    status: int  # HTTP status on the service's own routes
    code: str  # machine-readable code: HTTP body, SSE event, OpenAI ``code``, MCP error data
    exit_code: int = 2  # ``persona`` CLI

    @property
    def openai_status(self) -> int:
        """OpenAI reports bad input as 400 where the service's routes say 422."""
        return 400 if self.status == 422 else self.status

    @property
    def jsonrpc_code(self) -> int:
        return JSONRPC_INVALID_PARAMS if self.status < 500 else JSONRPC_INTERNAL_ERROR

    def body(self, message: str, **extra: Any) -> dict[str, Any]:
        """The service's error body (HTTP routes and the ``error`` event of ``/v1/ask/stream``)."""
        return {"detail": message, "code": self.code, **extra}

    def openai_body(self, message: str, param: str | None = None) -> dict[str, Any]:
        """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return openai_error(self.openai_status, message, self.code, param)


def openai_error(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body for any status (also used for errors that are not domain errors)."""
    kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


SURFACES: dict[type[PersonaError], Surface] = {
    UnknownPersona: Surface(404, "unknown_persona"),
    PersonaRequired: Surface(422, "persona_required"),
    InvalidCard: Surface(422, "invalid_card"),
    InvalidQuery: Surface(422, "invalid_query"),
    IndexUnavailable: Surface(503, "index_unavailable"),
    ModelUnavailable: Surface(503, "model_unavailable"),
    GeneratorUnavailable: Surface(422, "generator_unavailable"),
    UnknownPreset: Surface(422, "unknown_preset"),
    LLMUnavailable: Surface(503, "llm_unavailable"),
    Forbidden: Surface(403, "forbidden"),
    PersonaError: Surface(500, "persona_error"),
}
INTERNAL = Surface(500, "internal_error", exit_code=1)
"""Any other exception: logged with its traceback, reported without details."""


def surface_of(exc: BaseException) -> Surface:
    """The row of :data:`SURFACES` for ``exc`` (its nearest listed class); :data:`INTERNAL` otherwise."""
    for cls in type(exc).__mro__:
        surface = SURFACES.get(cls)
        if surface is not None:
            return surface
    return INTERNAL
