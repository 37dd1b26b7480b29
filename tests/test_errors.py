"""The one table of error surfaces: HTTP, OpenAI, SSE, MCP and CLI read the same row."""

from __future__ import annotations

from retrieval.errors import (
    INTERNAL,
    JSONRPC_INTERNAL_ERROR,
    JSONRPC_INVALID_PARAMS,
    SURFACES,
    IndexUnavailable,
    InvalidQuery,
    PersonaError,
    UnknownPersona,
    surface_of,
)


def test_every_domain_error_has_a_row_and_renders_it_everywhere() -> None:
    missing = UnknownPersona("astronaut", ["sales-manager"])
    assert (missing.status_code, missing.code, missing.surface.exit_code) == (404, "unknown_persona", 2)
    assert missing.surface.body(missing.message) == {"detail": missing.message, "code": "unknown_persona"}
    bad = InvalidQuery("k must be between 1 and 50")
    assert bad.status_code == 422 and bad.surface.openai_status == 400
    assert bad.surface.openai_body(bad.message, "k")["error"] == {
        "message": bad.message, "type": "invalid_request_error", "param": "k", "code": "invalid_query"}
    assert bad.surface.jsonrpc_code == JSONRPC_INVALID_PARAMS
    assert IndexUnavailable("down").surface.jsonrpc_code == JSONRPC_INTERNAL_ERROR
    assert surface_of(ValueError("boom")) is INTERNAL and INTERNAL.exit_code == 1
    assert PersonaError in SURFACES and all(issubclass(cls, PersonaError) for cls in SURFACES)
