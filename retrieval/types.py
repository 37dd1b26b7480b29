"""Plain values that flow through the system: chunks, hits, citations, answers, personas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ChunkKind = Literal["overview", "section", "item", "example", "boundary", "tuned"]
PASSAGE_KINDS = frozenset(("overview", "section", "item"))
"""Kinds that are the card's own text (hits, citations). ``example`` (a question that points at its
``parent`` passage) and ``boundary`` (a question the card does not cover) come from the card's sidecar;
``tuned`` (a passage's vector tuned to its examples, pointing at it through ``parent``) is made from them."""


@dataclass(frozen=True)
class Place:
    """A place in a card: a section, or an item of a section."""

    section: str
    item: str | None = None

    @property
    def path(self) -> str:
        """Where in the card: ``Mental Models › Pipeline coverage`` (the section alone for a section)."""
        return f"{self.section} › {self.item}" if self.item else self.section


class InCard:
    """What a value that sits at a :class:`Place` of a card (a hit, a citation) shares: its place and path."""

    section: str
    item: str | None

    @property
    def place(self) -> Place:
        return Place(self.section, self.item)

    @property
    def path(self) -> str:
        return self.place.path


@dataclass(frozen=True)
class Chunk:
    """One retrievable passage of a card.

    ``text`` is the card's own markdown (whitespace normalised), shown and quoted;
    ``embed_text`` carries its context ("As a Sales Manager, Guiding Principles > ...") and is embedded.
    """

    id: str
    persona: str
    kind: ChunkKind
    section: str
    item: str | None
    text: str
    embed_text: str
    content_hash: str
    position: int
    parent: str | None = None  # an example's passage

    def metadata(self) -> dict[str, Any]:
        """Flat metadata for the vector store (Chroma accepts no None values)."""
        return {
            "persona": self.persona,
            "kind": self.kind,
            "section": self.section,
            "item": self.item or "",
            "text": self.text,
            "content_hash": self.content_hash,
            "position": self.position,
            "parent": self.parent or "",
        }


@dataclass(frozen=True)
class Hit(InCard):
    """A chunk returned for a query, with its score in [0, 1] and rank.

    The score is the hybrid score of :mod:`retrieval.search` (cosine similarity fused with a
    saturated BM25 score); plain dense search gives the clipped cosine similarity.
    """

    id: str
    persona: str
    kind: ChunkKind
    section: str
    item: str | None
    text: str
    score: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Citation(InCard):
    """One numbered source of an answer: the ``[n]`` marker resolves to this passage."""

    n: int
    id: str
    section: str
    item: str | None
    text: str

    @classmethod
    def of(cls, n: int, hit: Hit) -> Citation:
        """Source ``[n]``: the passage of ``hit``."""
        return cls(n, hit.id, hit.section, hit.item, hit.text)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NearSection:
    """A section named when the card does not cover a question: where to look instead."""

    id: str
    section: str


Confidence = Literal["high", "low", "none"]
"""How well the card covers a question: ``high`` answer; ``low`` the closest guidance, said to be
such; ``none`` not covered (refused)."""


@dataclass(frozen=True)
class Coverage:
    """The judgement behind :data:`Confidence`, from the best passage's score and the boundary's.

    ``top`` is the evidence judged (the pipeline's ``support``, else the best hit's score); ``boundary``
    the question's closest cosine to a question the card does not cover (its sidecar's ``not_covered``; 0 without one).
    """

    confidence: Confidence
    top: float
    boundary: float

    @property
    def covered(self) -> bool:
        return self.confidence != "none"


@dataclass(frozen=True)
class Answer:
    """An answer in the persona's voice. Every ``[n]`` in ``text`` resolves to one citation.

    ``confidence`` defaults to ``high`` for a grounded answer and ``none`` for a refusal.
    """

    persona: str
    question: str
    text: str
    citations: list[Citation]
    grounded: bool
    generator: str
    hits: list[Hit] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    nearest: list[NearSection] = field(default_factory=list)
    confidence: Confidence | None = None
    searched_for: str = ""  # the query retrieval searched (a follow-up's standalone query); "" before retrieval

    def __post_init__(self) -> None:
        if self.confidence is None:
            object.__setattr__(self, "confidence", "high" if self.grounded else "none")

    def to_dict(self) -> dict[str, Any]:
        return {
            "persona": self.persona,
            "question": self.question,
            "answer": self.text,
            "citations": [c.to_dict() for c in self.citations],
            "grounded": self.grounded,
            "confidence": self.confidence,
            "generator": self.generator,
            "warnings": list(self.warnings),
            "nearest_sections": [asdict(n) for n in self.nearest],
            "searched_for": self.searched_for or self.question,
        }


CalibrationSource = Literal["settings", "card", "examples", "rule"]


@dataclass(frozen=True)
class Calibration:
    """A persona's coverage thresholds (``min_score``, ``boundary_margin``, ``confident_score``) and where they come
    from (``ingest/calibrate.py``): ``card``, recorded in its sidecar (derived from the card's own dev questions);
    ``examples``, derived at ingest from its sidecar's example questions; ``rule``, the rule for a card without
    examples; ``settings``, the service's own (``PERSONA_MIN_SCORE`` ..., an index ingested before cards had
    thresholds of their own: no values recorded here).
    """

    source: CalibrationSource = "settings"
    min_score: float | None = None
    boundary_margin: float | None = None
    confident_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"source", "min_score", "boundary_margin", "confident_score"}``, the values ``null`` for ``settings``."""
        return asdict(self)

    @property
    def recorded(self) -> bool:
        """Whether it holds values of its own (else the service's settings judge)."""
        return None not in (self.min_score, self.boundary_margin, self.confident_score)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class CardStatus:
    """What a card brings beyond its text, recorded at ingest: its sidecar's example questions (they tune the
    search to the way people ask) and boundary questions (near-domain questions it does not cover, refused), and
    how its coverage thresholds were calibrated."""

    examples: int = 0
    boundary: int = 0
    calibration: Calibration = field(default_factory=Calibration)

    @classmethod
    def of(cls, chunks: Sequence[Chunk], calibration: Calibration | None = None) -> CardStatus:
        """The status of a card whose sidecar gave ``chunks`` (its example and boundary questions)."""
        return cls(sum(c.kind == "example" for c in chunks),
                   sum(c.kind == "boundary" and "#generic-" not in c.id for c in chunks), calibration or Calibration())

    def to_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "boundary": self.boundary, "calibration": self.calibration.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CardStatus:
        return cls(int(data.get("examples", 0)), int(data.get("boundary", 0)),
                   Calibration.from_dict(data.get("calibration") or {}))

    def warnings(self, slug: str, card: str | None = None) -> list[str]:
        """What the card lacks, said to its operator (information, not an error); ``card``: its file, when known."""
        sidecar = f"{slug}.examples.yaml"
        enrich = f"`persona enrich {card or '<its card file>'}`"
        half = ("it finds the right passage about half as often (section hit@1 0.42 against 0.75 with them on the "
                "Sales Manager chat test set)")
        refuse = "near-domain questions the card does not cover are answered more often than refused"
        if not self.examples and not self.boundary:
            return [f"{slug} has no example questions and no boundary questions of its own (no sidecar {sidecar}): "
                    f"{half}, and {refuse}; {enrich} writes both into {sidecar}"]
        found = []
        if not self.examples:
            found.append(f"{slug} has no example questions in {sidecar}: {half}; {enrich} writes them")
        if not self.boundary:
            found.append(f"{slug} has no boundary questions of its own (not_covered in {sidecar}; the generic boundary "
                         f"stands in): {refuse}; {enrich} writes them")
        return found


NOT_RECORDED = ("its example and boundary questions were not recorded (ingested before persona-rag recorded them); "
                "`persona ingest` records them")


@dataclass(frozen=True)
class PersonaInfo:
    """What the index knows about one persona, stored beside its chunks."""

    slug: str
    title: str
    aliases: list[str]
    summary: str
    sections: list[str]
    chunks: int
    core_mission: str = ""
    principles: list[str] = field(default_factory=list)
    fingerprint: str = ""
    category: str = ""
    tags: list[str] = field(default_factory=list)
    status: CardStatus | None = None  # None: ingested before the status was recorded

    @property
    def warnings(self) -> list[str]:
        """What its card lacks (see :meth:`CardStatus.warnings`)."""
        return self.status.warnings(self.slug) if self.status else [f"{self.slug}: {NOT_RECORDED}"]

    def public(self) -> dict[str, Any]:
        """The fields of the HTTP contract, with the card's status (``null`` counts when it was not recorded)."""
        status = self.status
        return {
            "slug": self.slug,
            "title": self.title,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "sections": list(self.sections),
            "chunks": self.chunks,
            "example_questions": status.examples if status else None,
            "boundary_questions": status.boundary if status else None,
            "calibration": status.calibration.to_dict() if status else None,
            "warnings": self.warnings,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.to_dict() if self.status else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonaInfo:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        status = values.pop("status", None)
        return cls(**values, status=CardStatus.from_dict(status) if status else None)


@dataclass(frozen=True)
class AnswerEvent:
    """One step of a streamed answer: a ``delta`` of answer text, then one final ``answer``.

    The final event carries the complete, checked :class:`Answer`; its ``text`` is authoritative
    (a generator may drop invalid markers after streaming them).
    """

    type: Literal["delta", "answer"]
    text: str = ""
    answer: Answer | None = None


def retrieval_body(persona: str, query: str, hits: Sequence[Hit]) -> dict[str, Any]:
    """The retrieve result as JSON (HTTP ``/v1/retrieve``, the MCP ``retrieve`` tool, ``persona retrieve --json``)."""
    return {"persona": persona, "query": query, "results": [h.to_dict() for h in hits]}
