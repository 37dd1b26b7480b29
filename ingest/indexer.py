"""Indexing: validated cards -> chunks -> embeddings -> a published version in the store.

Every card is validated before anything is written. Unchanged chunks keep their stored vectors;
only new or changed chunks are embedded. A persona whose chunks, info and model are unchanged is
left alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ingest.calibrate import CALIBRATION, thresholds
from ingest.cards import Card, card_of, find_cards, read_card_text
from ingest.chunking import chunk_card, items_of, normalise, plain
from ingest.examples import Sidecar, read_sidecar_text, sidecar_chunks, sidecar_of, sidecar_path, tuned_chunks
from ingest.lint import LintWarning, lint_card
from retrieval.embedder import Embedder
from retrieval.errors import InvalidCard
from retrieval.sections import MISSION, PRINCIPLES
from retrieval.store import Store
from retrieval.tuning import SIGNATURE
from retrieval.types import CardStatus, Chunk, PersonaInfo

MAX_CHUNKS = 5000
"""Passages one card may produce; more is a card that would take an unreasonable time to embed."""

Progress = Callable[[str, int, int], None]
"""Called as ``progress(description, done, total)`` while embedding and writing."""


@dataclass
class PersonaChange:
    """What one ingest did to one persona."""

    slug: str
    file: str
    chunks: int  # the card's passages
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    embedded: int = 0
    published: bool = False

    sidecar: int = 0  # its sidecar's example and boundary questions
    tuned: int = 0  # passages whose vectors were tuned to the sidecar's examples
    status: CardStatus = field(default_factory=CardStatus)

    def summary(self) -> str:
        if not self.published:
            return f"{self.slug}: unchanged ({self.chunks} chunks{self._questions()})"
        return (f"{self.slug}: {self.chunks} chunks{self._questions()}, {len(self.added)} added, "
                f"{len(self.changed)} changed, {len(self.removed)} removed, {self.embedded} embedded"
                + (f", {self.tuned} passages tuned to their examples" if self.tuned else ""))

    def status_line(self) -> str:
        """What the card has: ``  1876 example questions, 80 boundary questions; thresholds: settings``."""
        status = self.status
        return (f"  {status.examples} example questions, {status.boundary} boundary questions; "
                f"thresholds: {status.calibration.source}")

    def _questions(self) -> str:
        return f" + {self.sidecar} sidecar questions" if self.sidecar else ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonaChange:
        return cls(**{**data, "status": CardStatus.from_dict(data.get("status") or {})})


@dataclass
class IngestReport:
    changes: list[PersonaChange]
    swept: list[str] = field(default_factory=list)
    warnings: list[LintWarning] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # personas whose card was not ingested, removed (``prune``)

    @property
    def changed(self) -> bool:
        return any(c.published for c in self.changes) or bool(self.removed)

    def lines(self) -> list[str]:
        """What ``persona ingest`` prints: each persona's summary and status, the removed ones, then every warning
        (the cards' text, their sidecars, and what each card lacks)."""
        out = [line for change in self.changes for line in (change.summary(), change.status_line())]
        out += [f"{slug}: removed (its card was not among those ingested)" for slug in self.removed]
        out += [f"warning: {warning}" for warning in self.warnings]
        return out + [f"warning: {text}" for change in self.changes
                      for text in change.status.warnings(change.slug, change.file)]

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes], "swept": list(self.swept),
                "warnings": [asdict(w) for w in self.warnings], "removed": list(self.removed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestReport:
        return cls([PersonaChange.from_dict(c) for c in data.get("changes", [])], list(data.get("swept", [])),
                   [LintWarning(**w) for w in data.get("warnings", [])], list(data.get("removed", [])))


@dataclass(frozen=True)
class CardFile:
    """A card as read from its file: the name it goes by, its text, and its sidecar's text (``None``: it has none).

    What ``persona ingest`` reads, and what it hands a running server (:func:`ingest_files`)."""

    path: str
    text: str
    sidecar: str | None = None

    @property
    def sidecar_path(self) -> str:
        return str(sidecar_path(Path(self.path)))


@dataclass(frozen=True)
class CardToIngest:
    """A validated card: its file, the card, its passages and its sidecar's questions (``extra``), and a warning per
    sidecar example whose passage the card does not have."""

    file: CardFile
    card: Card
    passages: list[Chunk]
    extra: list[Chunk]
    unknown: list[str]
    sidecar: Sidecar | None = None


def persona_info(card: Card, chunks: Sequence[Chunk], extra: Sequence[Chunk] = ()) -> PersonaInfo:
    """What the service needs to know of a persona without reading its card again.

    ``chunks`` counts as the persona's passages; ``extra`` (sidecar questions) only enters the
    fingerprint, so a changed sidecar publishes a new version.
    """
    mission = card.section(MISSION)
    principles = card.section(PRINCIPLES)
    body = PersonaInfo(
        slug=card.slug,
        title=card.title,
        aliases=list(card.aliases),
        summary=normalise(card.summary).replace("\n", " "),
        sections=[s.heading.strip() for s in card.sections],
        chunks=len(chunks),
        core_mission=plain(mission.markdown) if mission else "",
        principles=[plain(i.markdown) for i in items_of(principles.markdown)] if principles else [],
        category=card.category or "",
        tags=list(card.tags),
        status=CardStatus.of(extra),
    )
    digest = hashlib.sha256(json.dumps(body.to_dict(), sort_keys=True).encode())
    if extra:
        digest.update(SIGNATURE.encode())  # how the sidecar's examples tune the passages' vectors
    digest.update(CALIBRATION.encode())  # how its thresholds are derived
    for chunk in [*chunks, *extra]:
        digest.update(f"{chunk.id}\x00{chunk.content_hash}\x00".encode())
    return replace(body, fingerprint=digest.hexdigest()[:16])


def read_cards(paths: Sequence[Path]) -> list[CardFile]:
    """The card files under ``paths`` (:func:`ingest.cards.find_cards`) with their sidecars, read; an unreadable one
    raises :class:`InvalidCard`, and so does finding none."""
    files = [CardFile(str(path), read_card_text(path), read_sidecar_text(path)) for path in find_cards(list(paths))]
    if not files:
        raise InvalidCard(", ".join(str(p) for p in paths) or "(no path)", "(file)",
                          "expected at least one *.yaml card")
    return files


def validate(files: Sequence[CardFile]) -> list[CardToIngest]:
    """Every card and sidecar validated and chunked; the first bad one raises :class:`InvalidCard` naming its file and
    field. Nothing is written."""
    if not files:
        raise InvalidCard("(no path)", "(file)", "expected at least one *.yaml card")
    cards: list[CardToIngest] = []
    seen: dict[str, str] = {}
    for file in files:
        card = card_of(file.text, file.path)
        if card.slug in seen:
            raise InvalidCard(file.path, "slug",
                              f"unique slug expected, {card.slug!r} is also used by {seen[card.slug]}")
        seen[card.slug] = file.path
        passages = chunk_card(card)
        if len(passages) > MAX_CHUNKS:
            raise InvalidCard(file.path, "sections", f"expected at most {MAX_CHUNKS} passages (sections and their "
                              f"items) in one card, got {len(passages)}")
        sidecar = sidecar_of(file.sidecar, file.sidecar_path, card.slug) if file.sidecar is not None else None
        extra, unknown = sidecar_chunks(sidecar, passages) if sidecar else ([], [])
        cards.append(CardToIngest(file, card, passages, extra, unknown, sidecar))
    return cards


def ingest(paths: Sequence[Path], store: Store, embedder: Embedder, model: str,
           batch_size: int = 64, progress: Progress | None = None, prune: bool = False,
           sidecars: bool = True) -> IngestReport:
    """Validate all cards (and their sidecars), then publish each persona whose content changed (see
    :func:`publish_cards`; ``sidecars`` false: the cards alone, as if they had none, as ``persona eval`` measures
    them too)."""
    files = read_cards(paths)
    if not sidecars:
        files = [replace(f, sidecar=None) for f in files]
    return publish_cards(validate(files), store, embedder, model, batch_size, progress, prune)


def publish_cards(cards: Sequence[CardToIngest], store: Store, embedder: Embedder, model: str,
                  batch_size: int = 64, progress: Progress | None = None, prune: bool = False) -> IngestReport:
    """Publish each validated card whose content changed, one persona at a time (each switch is atomic).

    ``prune``: then remove the indexed personas whose card is not among ``cards``."""
    warnings = [warning for c in cards for warning in lint_card(c.card, c.file.path)]
    warnings += [LintWarning(c.file.sidecar_path, "examples", message) for c in cards for message in c.unknown]
    report = IngestReport(changes=[], swept=store.sweep(), warnings=warnings)
    for c in cards:
        report.changes.append(_ingest_card(c, store, embedder, model, batch_size, progress))
    if prune:
        kept = {c.card.slug for c in cards}
        report.removed = [slug for slug in sorted(store.slugs()) if slug not in kept and store.remove(slug)]
    return report


def _ingest_card(loaded: CardToIngest, store: Store, embedder: Embedder, model: str, batch_size: int,
                 progress: Progress | None) -> PersonaChange:
    """Publish the card's passages and its sidecar's example and boundary questions (``extra``)."""
    card, passages, extra = loaded.card, loaded.passages, loaded.extra
    chunks = passages + extra
    info = persona_info(card, passages, extra)
    change = PersonaChange(card.slug, loaded.file.path, len(passages), sidecar=len(extra),
                           status=info.status or CardStatus())
    pointer = store.pointer(card.slug)
    same_model = bool(pointer) and pointer.get("model") == model
    if same_model and json.loads(pointer["info"]).get("fingerprint") == info.fingerprint:
        change.status = PersonaInfo.from_dict(json.loads(pointer["info"])).status or change.status
        return change
    stored = {c.id: c for c in store.chunks(card.slug, with_embeddings=same_model)} if pointer else {}
    new_ids = {c.id for c in chunks}
    change.added = [c.id for c in chunks if c.id not in stored]
    change.changed = [c.id for c in chunks
                      if c.id in stored and stored[c.id].metadata.get("content_hash") != c.content_hash]
    change.removed = sorted(set(stored) - new_ids - {f"{c.id}#tuned" for c in passages})
    reuse = {cid: s.embedding for cid, s in stored.items() if same_model and s.embedding is not None}
    todo = [c for c in chunks if c.id in change.added or c.id in change.changed or c.id not in reuse]
    vectors = _embed(todo, embedder, batch_size, progress, card.slug)
    by_id = {c.id: v for c, v in zip(todo, vectors, strict=True)}
    matrix = np.stack([by_id[c.id] if c.id in by_id else reuse[c.id] for c in chunks]).astype(np.float32)
    change.embedded = len(todo)
    info = replace(info, status=replace(info.status or CardStatus.of(extra),
                                        calibration=thresholds(loaded.sidecar, passages, extra, matrix, model)))
    change.status = info.status or CardStatus()
    tuned, tuned_vectors = tuned_chunks(passages, extra, matrix)
    if tuned:
        chunks, matrix = chunks + tuned, np.concatenate([matrix, tuned_vectors])
        change.tuned = len(tuned)
    written = 0

    def on_batch(n: int) -> None:
        nonlocal written
        written += n
        if progress:
            progress(f"writing {card.slug}", written, len(chunks))

    store.publish(info, chunks, matrix, model, on_batch=on_batch)
    change.published = True
    return change


def _embed(chunks: Sequence[Chunk], embedder: Embedder, batch_size: int,
           progress: Progress | None, slug: str) -> np.ndarray:
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    out = []
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start:start + batch_size]
        out.append(embedder.encode([c.embed_text for c in batch], batch_size=batch_size))
        if progress:
            progress(f"embedding {slug}", min(start + batch_size, len(chunks)), len(chunks))
    return np.concatenate(out)
