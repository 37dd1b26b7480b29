"""Indexing: validated cards -> chunks -> embeddings -> a published version in the store.

Every card is validated before anything is written. Unchanged chunks keep their stored vectors;
only new or changed chunks are embedded. A persona whose chunks, info and model are unchanged is
left alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.cards import Card, find_cards, load_card
from ingest.chunking import chunk_card, items_of, normalise, plain
from ingest.examples import load_sidecar, sidecar_chunks, sidecar_path, tuned_chunks
from ingest.lint import LintWarning, lint_card
from retrieval.embedder import Embedder
from retrieval.errors import InvalidCard
from retrieval.sections import MISSION, PRINCIPLES
from retrieval.store import Store
from retrieval.tuning import SIGNATURE
from retrieval.types import Chunk, PersonaInfo

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

    def summary(self) -> str:
        if not self.published:
            return f"{self.slug}: unchanged ({self.chunks} chunks{self._questions()})"
        return (f"{self.slug}: {self.chunks} chunks{self._questions()}, {len(self.added)} added, "
                f"{len(self.changed)} changed, {len(self.removed)} removed, {self.embedded} embedded"
                + (f", {self.tuned} passages tuned to their examples" if self.tuned else ""))

    def _questions(self) -> str:
        return f" + {self.sidecar} sidecar questions" if self.sidecar else ""


@dataclass
class IngestReport:
    changes: list[PersonaChange]
    swept: list[str] = field(default_factory=list)
    warnings: list[LintWarning] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.published for c in self.changes)


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
    )
    digest = hashlib.sha256(json.dumps(body.to_dict(), sort_keys=True).encode())
    if extra:
        digest.update(SIGNATURE.encode())  # how the sidecar's examples tune the passages' vectors
    for chunk in [*chunks, *extra]:
        digest.update(f"{chunk.id}\x00{chunk.content_hash}\x00".encode())
    return PersonaInfo(**{**body.to_dict(), "fingerprint": digest.hexdigest()[:16]})


def load_cards(paths: Sequence[Path]) -> list[tuple[Path, Card]]:
    """Load and validate every card; the first bad one raises :class:`InvalidCard`."""
    cards: list[tuple[Path, Card]] = []
    seen: dict[str, Path] = {}
    for path in find_cards(list(paths)):
        card = load_card(path)
        if card.slug in seen:
            raise InvalidCard(str(path), "slug",
                              f"unique slug expected, {card.slug!r} is also used by {seen[card.slug]}")
        seen[card.slug] = path
        passages = len(chunk_card(card))
        if passages > MAX_CHUNKS:
            raise InvalidCard(str(path), "sections", f"expected at most {MAX_CHUNKS} passages (sections and their "
                              f"items) in one card, got {passages}")
        cards.append((path, card))
    if not cards:
        raise InvalidCard(", ".join(str(p) for p in paths) or "(no path)", "(file)",
                          "expected at least one *.yaml card")
    return cards


def ingest(paths: Sequence[Path], store: Store, embedder: Embedder, model: str,
           batch_size: int = 64, progress: Progress | None = None, sidecars: bool = True) -> IngestReport:
    """Validate all cards (and their sidecars), then publish each persona whose content changed (``sidecars``
    false: the cards alone, as if they had no sidecar; ``persona eval`` measures cards so)."""
    cards = load_cards(paths)
    found = {card.slug: load_sidecar(path, card.slug) if sidecars else None for path, card in cards}
    warnings = [warning for path, card in cards for warning in lint_card(card, str(path))]
    report = IngestReport(changes=[], swept=store.sweep(), warnings=warnings)
    for path, card in cards:
        passages = chunk_card(card)
        sidecar = found[card.slug]
        extra, unknown = sidecar_chunks(sidecar, passages) if sidecar else ([], [])
        report.warnings += [LintWarning(str(sidecar_path(path)), "examples", message) for message in unknown]
        report.changes.append(_ingest_card(path, card, passages, extra, store, embedder, model, batch_size, progress))
    return report


def _ingest_card(path: Path, card: Card, passages: list[Chunk], extra: list[Chunk], store: Store, embedder: Embedder,
                 model: str, batch_size: int, progress: Progress | None) -> PersonaChange:
    """Publish the card's passages and its sidecar's example and boundary questions (``extra``)."""
    chunks = passages + extra
    info = persona_info(card, passages, extra)
    change = PersonaChange(card.slug, str(path), len(passages), sidecar=len(extra))
    pointer = store.pointer(card.slug)
    same_model = bool(pointer) and pointer.get("model") == model
    if same_model and json.loads(pointer["info"]).get("fingerprint") == info.fingerprint:
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
