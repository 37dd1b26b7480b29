"""Request and response bodies of the HTTP contract (see docs/api.md; the layers: docs/architecture.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from retrieval.conversation import MAX_MESSAGES, History, Message
from retrieval.service import MAX_K, MAX_QUERY_CHARS
from retrieval.text import VISIBLE
from retrieval.types import CalibrationSource

NOT_BLANK = VISIBLE  # at least one character that is not white space
Heading = Annotated[str, Field(min_length=1, max_length=200, pattern=NOT_BLANK)]


def _json_integer(value: object) -> object:
    """What JSON Schema calls an integer: ``true`` and ``"5"`` are not (pydantic's lax mode would take them as 1 and
    5); ``5.0`` is, and a fraction is refused by the ``int`` that follows."""
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


MAX_MESSAGE_CHARS = 100_000
"""Characters of one earlier message (an assistant reply with its sources is a few thousand)."""

PassageCount = Annotated[int, Field(ge=1, le=MAX_K), BeforeValidator(_json_integer)]
"""``k``: how many passages, a JSON integer from 1 to ``MAX_K`` (the bounds inside, so ``PassageCount | None`` keeps
them in the OpenAPI document)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrieveRequest(Strict):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NOT_BLANK,
                       description="What to search the card for.")
    persona: str | None = Field(None, max_length=100, description="Persona slug; optional while only one is indexed.")
    k: PassageCount = Field(5, description="How many passages to return.")
    sections: list[Heading] | None = Field(None, max_length=50, description="Only search these sections (headings).")


class HistoryMessage(Strict):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


def conversation(messages: list[HistoryMessage] | None) -> History:
    """The earlier turns of a request as the core's :class:`History`."""
    return History.of(Message(m.role, m.content) for m in messages or ())


class AskRequest(Strict):
    question: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NOT_BLANK)
    persona: str | None = Field(None, max_length=100)
    k: PassageCount | None = None
    generator: str | None = Field(None, max_length=40,
                                  description="A generator's name (default: the first registered); unknown names "
                                  "are refused with the list of available ones.")
    history: list[HistoryMessage] | None = Field(
        None, max_length=MAX_MESSAGES,
        description="The conversation before the question, oldest first: earlier user questions and the assistant's "
                    "replies. A follow-up (\"how often?\") is then searched as the standalone question it stands "
                    "for, named in the answer's searched_for.")

    def conversation(self) -> History:
        return conversation(self.history)


class CalibrationOut(BaseModel):
    source: CalibrationSource = Field(
        description="Where the persona's coverage thresholds come from: card (recorded in its sidecar, derived from "
                    "the card's own dev questions), examples (derived at ingest from its sidecar's example questions), "
                    "rule (the rule for a card without examples), settings (the service's PERSONA_MIN_SCORE, "
                    "PERSONA_BOUNDARY_MARGIN, PERSONA_CONFIDENT_SCORE: an index ingested before cards had their own; "
                    "no values).")
    min_score: float | None = None
    boundary_margin: float | None = None
    confident_score: float | None = None


class PersonaOut(BaseModel):
    slug: str
    title: str
    aliases: list[str]
    summary: str
    sections: list[str]
    chunks: int
    example_questions: int | None = Field(description="Its sidecar's example questions (they tune the search); null "
                                                       "when the index predates this field.")
    boundary_questions: int | None = Field(description="Its sidecar's not_covered questions (near-domain questions "
                                                        "it refuses).")
    calibration: CalibrationOut | None
    warnings: list[str] = Field(description="What the card lacks (no example or boundary questions): information, "
                                            "not an error.")


class PersonasResponse(BaseModel):
    personas: list[PersonaOut]


class HitOut(BaseModel):
    id: str
    persona: str
    section: str
    item: str | None
    text: str
    score: float
    rank: int


class RetrieveResponse(BaseModel):
    persona: str
    query: str
    results: list[HitOut]


class CitationOut(BaseModel):
    n: int
    id: str
    section: str
    item: str | None
    text: str


class NearSection(BaseModel):
    id: str
    section: str


class AskResponse(BaseModel):
    persona: str
    question: str
    answer: str
    citations: list[CitationOut]
    grounded: bool
    confidence: Literal["high", "low", "none"] = Field(
        "high", description="high: answered; low: the card's closest guidance, said to be such; none: not covered.")
    generator: str
    warnings: list[str] = []
    nearest_sections: list[NearSection] = []
    searched_for: str = Field(description="What retrieval searched: the question, or for a follow-up the standalone "
                                          "query it stands for in the conversation.")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class ErrorOut(BaseModel):
    detail: str
    code: str
