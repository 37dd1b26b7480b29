"""A card's sidecar, ``<card>.examples.yaml``: example questions per passage, and the card's boundary.

* ``examples`` maps a passage id (an item, a section without items, the overview) to questions that
  passage answers, worded the way people ask them. Each is indexed as an extra vector that points
  at its passage (kind ``example``), so a question that shares no words with the card still finds
  the passage whose examples it resembles.
* ``not_covered`` lists questions near the card's domain that the card does not answer. They are
  indexed too (kind ``boundary``) and never returned as hits: a question closer to the boundary
  than to anything the card covers is refused.
* From the examples, ingest tunes one vector per passage (kind ``tuned``, :func:`tuned_chunks`): the
  passage's embedding moved toward the questions that should find it (``retrieval/tuning.py``).

Written by the card's author or by ``persona enrich``. Pure functions; ingest embeds the chunks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from retrieval.errors import InvalidCard
from retrieval.tuning import SIGNATURE, tune_passages
from retrieval.types import Chunk

SUFFIX = ".examples.yaml"
MAX_EXAMPLE_CHARS = 500
MAX_EXAMPLES = 20_000


class OwnThresholds(BaseModel):
    """Coverage thresholds recorded in a sidecar for one embedding model: derived from the card's own dev questions
    (``persona eval`` prints them), they take precedence over those ingest derives from the examples."""

    model_config = ConfigDict(extra="forbid")

    min_score: float = Field(ge=0.0, le=1.0)
    boundary_margin: float = Field(ge=-1.0, le=1.0)
    confident_score: float = Field(ge=0.0, le=1.0)


class Sidecar(BaseModel):
    """The sidecar file, validated: every question a non-blank string of at most 500 characters."""

    model_config = ConfigDict(extra="forbid")

    card: str = Field(min_length=1)
    examples: dict[str, list[str]] = Field(default_factory=dict)
    not_covered: list[str] = Field(default_factory=list)
    calibration: dict[str, OwnThresholds] | None = None  # embedding model name -> the card's own thresholds

    @field_validator("examples")
    @classmethod
    def _examples(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for questions in value.values():
            _check(questions)
        return value

    @field_validator("not_covered")
    @classmethod
    def _not_covered(cls, value: list[str]) -> list[str]:
        return _check(value)

    def count(self) -> int:
        return sum(len(q) for q in self.examples.values()) + len(self.not_covered)


def _check(questions: list[str]) -> list[str]:
    for question in questions:
        if not question.strip():
            raise ValueError("questions must not be blank")
        if len(question) > MAX_EXAMPLE_CHARS:
            raise ValueError(f"questions must be at most {MAX_EXAMPLE_CHARS} characters, got {len(question)}")
    return questions


def sidecar_path(card_path: Path) -> Path:
    """``seeds/sales-manager.yaml`` -> ``seeds/sales-manager.examples.yaml``."""
    return card_path.with_name(card_path.stem + SUFFIX)


def read_sidecar_text(card_path: Path) -> str | None:
    """The text of the card's sidecar, or ``None`` when it has none. An unreadable file raises :class:`InvalidCard`."""
    path = sidecar_path(card_path)
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidCard(str(path), "(file)", f"a readable UTF-8 file expected: {exc}") from exc


def sidecar_of(text: str, source: str, slug: str) -> Sidecar:
    """Validate a sidecar's text (``source`` names its file in errors) for the card ``slug``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidCard(source, "(file)", f"valid YAML expected: {exc}") from exc
    try:
        sidecar = Sidecar.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise InvalidCard(source, where, error["msg"]) from exc
    if sidecar.card != slug:
        raise InvalidCard(source, "card", f"the slug of the card beside it ({slug!r}) expected, got {sidecar.card!r}")
    if sidecar.count() > MAX_EXAMPLES:
        raise InvalidCard(source, "examples", f"at most {MAX_EXAMPLES} questions expected, got {sidecar.count()}")
    return sidecar


def load_sidecar(card_path: Path, slug: str) -> Sidecar | None:
    """The card's sidecar, or ``None`` when it has none. A bad file raises :class:`InvalidCard`."""
    text = read_sidecar_text(card_path)
    return None if text is None else sidecar_of(text, str(sidecar_path(card_path)), slug)


def sidecar_chunks(sidecar: Sidecar, passages: list[Chunk]) -> tuple[list[Chunk], list[str]]:
    """Example and boundary chunks for a card's passages, and a warning per example whose passage is gone.

    An example's id is ``<passage id>#example-<n>``; it carries its passage's section and item and
    points at it through ``parent``. A boundary question's id is ``<slug>#not-covered-<n>``.
    """
    by_id = {c.id: c for c in passages}
    slug = passages[0].persona if passages else sidecar.card
    chunks: list[Chunk] = []
    warnings: list[str] = []
    for passage_id, questions in sidecar.examples.items():
        parent = by_id.get(passage_id)
        if parent is None:
            warnings.append(f"examples for {passage_id!r}: the card has no such passage; skipped")
            continue
        for n, question in enumerate(dict.fromkeys(q.strip() for q in questions), start=1):
            chunks.append(_chunk(f"{passage_id}#example-{n}", slug, "example", parent.section, parent.item,
                                 question, len(passages) + len(chunks), parent.id))
    for n, question in enumerate(dict.fromkeys(q.strip() for q in sidecar.not_covered), start=1):
        chunks.append(_chunk(f"{slug}#not-covered-{n}", slug, "boundary", "", None, question,
                             len(passages) + len(chunks), None))
    return chunks, warnings


def _chunk(cid: str, slug: str, kind: str, section: str, item: str | None, question: str, position: int,
           parent: str | None) -> Chunk:
    digest = hashlib.sha256(f"{kind}\x00{parent}\x00{question}".encode()).hexdigest()[:16]
    return Chunk(id=cid, persona=slug, kind=kind, section=section, item=item, text=question,  # type: ignore[arg-type]
                 embed_text=question, content_hash=digest, position=position, parent=parent)


def tuned_chunks(passages: list[Chunk], extra: list[Chunk], vectors: np.ndarray) -> tuple[list[Chunk], np.ndarray]:
    """A ``tuned`` chunk per ranked passage, with its vector, when the sidecar has examples; else nothing.

    ``vectors`` holds the embeddings of ``passages`` then ``extra``, row for row. The passages ranked
    are those retrieval ranks: items, sections without items, the overview (a section with items is
    ranked by its items, see ``retrieval/stages/items.py``). A tuned chunk's id is ``<passage id>#tuned``
    and it points at its passage through ``parent``.
    """
    with_items = {c.section for c in passages if c.kind == "item"}
    ranked = [i for i, c in enumerate(passages) if not (c.kind == "section" and c.section in with_items)]
    row = {passages[i].id: n for n, i in enumerate(ranked)}
    pairs = [(len(passages) + j, row[c.parent]) for j, c in enumerate(extra)
             if c.kind == "example" and c.parent in row]
    if not pairs:
        return [], np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
    tuned = tune_passages(vectors[ranked], vectors[[i for i, _ in pairs]], np.array([p for _, p in pairs]))
    digest = hashlib.sha256(SIGNATURE.encode())
    for chunk in [*passages, *extra]:
        digest.update(f"{chunk.id}\x00{chunk.content_hash}\x00".encode())
    content = digest.hexdigest()[:16]
    chunks = [Chunk(id=f"{passages[i].id}#tuned", persona=passages[i].persona, kind="tuned",
                    section=passages[i].section, item=passages[i].item, text=passages[i].text,
                    embed_text=passages[i].embed_text, content_hash=content,
                    position=len(passages) + len(extra) + n, parent=passages[i].id)
              for n, i in enumerate(ranked)]
    return chunks, tuned


def write_sidecar(path: Path, sidecar: Sidecar, header: str = "") -> None:
    """Write a sidecar as YAML (``header`` becomes leading ``#`` comment lines)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    body = yaml.safe_dump(sidecar.model_dump(exclude_none=True), sort_keys=False, allow_unicode=True, width=120)
    path.write_text("\n".join([*lines, body]) if lines else body, encoding="utf-8")
