"""Question sets and the thresholds declared with them: YAML in, validated pydantic models out.

A set file holds ``name``, ``description`` and ``questions``; each question has an ``id``, the
user's ``question``, the ``persona`` slug, a ``kind`` (``in_scope``, ``out_of_scope`` or
``adversarial``; an out-of-scope question may be ``near`` the domain) and its ``gold`` answer
location: card headings verbatim and passages, listed (``ids``) or graded (``items``).
A conversation set holds ``conversations`` instead: each has an ``id``, a ``persona`` and 2-6
``turns`` (a question each, with its kind and gold; every turn after the first names its
``follow_up`` type). It is read as the list of its turns, in order, each a :class:`Question` that
knows its ``conversation`` and ``turn``.
Thresholds live in one YAML file keyed by set name (``default`` for sets it does not name); each
is the minimum a pipeline metric must reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from retrieval.errors import PersonaError

Kind = Literal["in_scope", "out_of_scope", "adversarial"]
FollowUpType = Literal["ellipsis", "deeper", "neighbour", "shift", "off_topic"]
"""How a follow-up leans on the conversation: pronouns or ellipsis that need it (``ellipsis``), deeper into
the same passage (``deeper``), to a neighbouring one (``neighbour``), a new topic of its own (``shift``), or
off the card (``off_topic``, which must be refused)."""
SETS_DIR = Path(__file__).resolve().parent / "sets"
CARDS_DIR = Path(__file__).resolve().parent / "cards"
"""Cards of other occupations that the eval sets ask about (not shipped as personas: they test the machinery)."""
THRESHOLDS_FILE = Path(__file__).resolve().parent / "thresholds.yaml"


class InvalidEvalFile(PersonaError):
    """A question set or thresholds file that cannot be read or does not match its schema."""


Grade = Literal[1, 2]
"""How well a passage answers a question: 2 answers it, 1 is related and useful."""


class Gold(BaseModel):
    """Where the answer lives: section headings verbatim and, optionally, passages.

    ``ids`` lists the passages that are the answer (ungraded, the older sets); ``items`` grades
    passages (chunk ids) 2 (answers it) or 1 (related). Either may be given; :attr:`answer_ids`
    is the passages that answer (``ids``, else the grade-2 ``items``).
    """

    model_config = ConfigDict(extra="forbid")

    sections: list[str] = Field(default_factory=list)
    ids: list[str] = Field(default_factory=list)
    items: dict[str, Grade] = Field(default_factory=dict)

    @property
    def answer_ids(self) -> list[str]:
        return list(self.ids) or [cid for cid, grade in self.items.items() if grade == 2]

    def grade(self, chunk_id: str) -> int:
        """The passage's grade: ``items`` first, 2 for a listed answer id, else 0."""
        return self.items.get(chunk_id, 2 if chunk_id in self.ids else 0)


class Question(BaseModel):
    """One question, asked the way a user asks it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1, max_length=2000)
    persona: str = Field(min_length=1)
    kind: Kind
    near: bool = False  # an out-of-scope question near the card's domain (what the threshold must refuse)
    gold: Gold = Field(default_factory=Gold)
    conversation: str | None = None  # the conversation this question is a turn of (conversation sets)
    turn: int = Field(1, ge=1)  # its turn in that conversation, from 1
    follow_up: FollowUpType | None = None  # how a later turn leans on the conversation

    @property
    def is_follow_up(self) -> bool:
        return self.turn > 1

    @model_validator(mode="after")
    def in_scope_has_gold(self) -> Question:
        if self.kind == "in_scope" and not self.gold.sections:
            raise ValueError(f"in_scope question {self.id!r} needs at least one gold section")
        if self.near and self.kind != "out_of_scope":
            raise ValueError(f"question {self.id!r}: only out_of_scope questions can be near the domain")
        return self


class Turn(BaseModel):
    """One turn of a written conversation: a question as the user asks it at that point of the chat."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2000)
    kind: Kind
    near: bool = False
    follow_up: FollowUpType | None = None
    gold: Gold = Field(default_factory=Gold)


class Conversation(BaseModel):
    """A chat of 2-6 turns with one persona; every turn after the first says how it follows up."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[^/]+$")
    persona: str = Field(min_length=1)
    turns: list[Turn] = Field(min_length=2, max_length=6)

    @model_validator(mode="after")
    def follow_ups_named(self) -> Conversation:
        for n, turn in enumerate(self.turns, start=1):
            if (turn.follow_up is None) != (n == 1):
                raise ValueError(f"conversation {self.id!r} turn {n}: every turn after the first, and only those, "
                                 "names its follow_up type")
        return self

    def questions(self) -> list[Question]:
        """The turns as questions, ids ``<conversation>/<turn>``."""
        return [Question(id=f"{self.id}/{n}", persona=self.persona, conversation=self.id, turn=n,
                         **turn.model_dump(exclude_unset=True))
                for n, turn in enumerate(self.turns, start=1)]


class QuestionSet(BaseModel):
    """A named list of questions (a conversation set: its conversations' turns, in order)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    questions: list[Question] = Field(default_factory=list)
    conversations: list[Conversation] = Field(default_factory=list)

    @model_validator(mode="after")
    def conversations_as_questions(self) -> QuestionSet:
        if self.conversations:
            if self.questions:
                raise ValueError("a set holds questions or conversations, not both")
            self.questions = [q for c in self.conversations for q in c.questions()]
        if not self.questions:
            raise ValueError("a set needs at least one question or conversation")
        return self

    @property
    def conversational(self) -> bool:
        """Whether the set is made of conversations (its follow-ups are scored apart)."""
        return any(q.conversation for q in self.questions)

    @model_validator(mode="after")
    def unique_ids(self) -> QuestionSet:
        seen: set[str] = set()
        for q in self.questions:
            if q.id in seen:
                raise ValueError(f"question id {q.id!r} is used twice")
            seen.add(q.id)
        return self


class Thresholds(BaseModel):
    """Minimum values of pipeline metrics, per set name; ``default`` applies to unnamed sets."""

    sets: dict[str, dict[str, float]] = Field(default_factory=dict)

    def for_set(self, name: str) -> dict[str, float]:
        return self.sets.get(name, self.sets.get("default", {}))


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidEvalFile(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise InvalidEvalFile(f"{path} is not valid YAML: {exc}") from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    return f"{where}: {error['msg']}"


def load_set(path: Path) -> QuestionSet:
    """A validated question set; a bad file raises :class:`InvalidEvalFile` naming file and field."""
    try:
        return QuestionSet.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise InvalidEvalFile(f"question set {path}: {_first_error(exc)}") from exc


def load_thresholds(path: Path) -> Thresholds:
    """Thresholds from YAML (``{set name: {metric: minimum}}``)."""
    try:
        return Thresholds(sets=_read_yaml(path) or {})
    except ValidationError as exc:
        raise InvalidEvalFile(f"thresholds {path}: {_first_error(exc)}") from exc


def default_sets() -> list[Path]:
    """The question sets shipped in ``eval/sets``, dev before test."""
    return sorted(SETS_DIR.glob("*.yaml"), key=lambda p: (not p.stem.endswith("dev"), p.name))
