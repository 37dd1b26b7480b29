"""Domain errors. The core raises these; the HTTP layer and the CLI map them in one place each."""

from __future__ import annotations


class PersonaError(Exception):
    """Base class of every error the core raises on purpose."""

    status_code = 500
    code = "persona_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownPersona(PersonaError):
    """The requested persona is not indexed."""

    status_code = 404
    code = "unknown_persona"

    def __init__(self, slug: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none (run `persona ingest` first)"
        super().__init__(f"unknown persona {slug!r}; available personas: {listed}")
        self.slug = slug
        self.available = available


class PersonaRequired(PersonaError):
    """No persona was named and the index holds zero or several."""

    status_code = 422
    code = "persona_required"

    def __init__(self, available: list[str]) -> None:
        if available:
            message = "several personas are indexed; name one with 'persona': " + ", ".join(available)
        else:
            message = "no persona is indexed yet; run `persona ingest seeds/` first"
        super().__init__(message)
        self.available = available


class InvalidCard(PersonaError):
    """A card file failed to load or validate. Nothing of it is written to the index."""

    status_code = 422
    code = "invalid_card"

    def __init__(self, file: str, field: str, expected: str) -> None:
        super().__init__(f"{file}: field '{field}': {expected}")
        self.file = file
        self.field = field
        self.expected = expected


class InvalidQuery(PersonaError):
    """A query or question the core cannot work with (empty, too long, bad filter)."""

    status_code = 422
    code = "invalid_query"


class IndexUnavailable(PersonaError):
    """The vector store cannot be reached or opened."""

    status_code = 503
    code = "index_unavailable"


class ModelUnavailable(PersonaError):
    """The embedding model cannot be loaded."""

    status_code = 503
    code = "model_unavailable"


class GeneratorUnavailable(PersonaError):
    """The requested answer generator is unknown or not configured."""

    status_code = 422
    code = "generator_unavailable"
