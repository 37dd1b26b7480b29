"""The baselines the pipeline is measured against, built from the same card and model.

* ``item-dense``: plain item-level dense search, the simplest method that uses the card's
  structure: one vector per item (and one per section without items, and the Overview), embedded
  as "Sales Manager > Heading > Item: text"; a section is ranked by its best item. No BM25, no
  section chunks, no weights. Its chunk ids are the pipeline's, so passage-level metrics apply.

* ``fixed-500``: the card's text cut into windows of 500 characters overlapping by 50, whatever
  the headings, dense search only.
* ``sections``: one chunk per section (heading and whole markdown), dense search only.

Both keep the Overview text so every configuration sees the same card. A chunk's ``section`` is
the heading that holds most of its characters; its embedded text is its own text, without context.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from ingest.cards import Card
from ingest.chunking import OVERVIEW, chunk_card, normalise, overview_text, plain, section_text
from retrieval.embedder import Embedder
from retrieval.store import Store
from retrieval.types import Chunk, PersonaInfo

FIXED_SIZE, FIXED_OVERLAP = 500, 50


def _parts(card: Card) -> list[tuple[str, str]]:
    """(heading, text) of the Overview and of every section, text as shown in the card."""
    parts = [(OVERVIEW, normalise(overview_text(card)))]
    parts += [(s.heading.strip(), f"{s.heading.strip()}\n{section_text(s.markdown)}") for s in card.sections]
    return parts


def _chunk(slug: str, cid: str, section: str, text: str, position: int) -> Chunk:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Chunk(id=cid, persona=slug, kind="section", section=section, item=None, text=text, embed_text=text,
                 content_hash=digest, position=position)


def fixed_size_chunks(card: Card, slug: str, size: int = FIXED_SIZE, overlap: int = FIXED_OVERLAP) -> list[Chunk]:
    """The card's text as one string, cut into ``size``-character windows that overlap by ``overlap``."""
    if not 0 <= overlap < size:
        raise ValueError("overlap must be smaller than size")
    text, owner = "", []
    for heading, part in _parts(card):
        piece = part + "\n\n"
        text += piece
        owner += [heading] * len(piece)
    chunks = []
    for start in range(0, max(1, len(text) - overlap), size - overlap):
        window = text[start:start + size]
        if not window.strip():
            continue
        section = Counter(owner[start:start + size]).most_common(1)[0][0]
        chunks.append(_chunk(slug, f"{slug}/fixed-{len(chunks) + 1:03d}", section, window.strip(), len(chunks)))
    return chunks


def section_chunks(card: Card, slug: str) -> list[Chunk]:
    """One chunk per section (and one for the Overview)."""
    return [_chunk(slug, f"{slug}/section-{i:02d}", heading, text, i) for i, (heading, text) in enumerate(_parts(card))]


def item_chunks(card: Card, slug: str) -> list[Chunk]:
    """The pipeline's item chunks, sections without items and the Overview, embedded with a plain path."""
    chunks = chunk_card(card)
    with_items = {c.section for c in chunks if c.kind == "item"}
    kept = []
    for chunk in chunks:
        if chunk.kind == "section" and chunk.section in with_items:
            continue
        path = " > ".join([card.title, chunk.section, *([chunk.item] if chunk.item else [])])
        kept.append(replace(chunk, persona=slug, embed_text=f"{path}: {plain(chunk.text)}", position=len(kept)))
    return kept


@dataclass(frozen=True)
class Baseline:
    """A baseline chunking: its name (the configuration name in reports) and its chunker."""

    name: str
    description: str
    chunker: Callable[[Card, str], list[Chunk]]
    item_ids: bool = False  # True when its chunk ids are the pipeline's (passage-level metrics apply)

    def slug(self, persona: str) -> str:
        """The slug the baseline's copy of a persona is published under."""
        return f"{persona}--{self.name}"


FIXED = Baseline("fixed-500", f"fixed-size chunks of {FIXED_SIZE} characters, {FIXED_OVERLAP} overlap, dense only",
                 fixed_size_chunks)
SECTIONS = Baseline("sections", "one chunk per section, dense only", section_chunks)
ITEMS = Baseline("item-dense", "plain item-level dense: one vector per item, a section ranked by its best item",
                 item_chunks, item_ids=True)
BASELINES = (ITEMS, FIXED, SECTIONS)


def publish_baseline(baseline: Baseline, card: Card, info: PersonaInfo, store: Store, embedder: Embedder,
                     model: str) -> PersonaInfo:
    """Embed the baseline's chunks of a card and publish them under the baseline's slug."""
    chunks = baseline.chunker(card, baseline.slug(card.slug))
    vectors = embedder.encode([c.embed_text for c in chunks])
    copy = replace(info, slug=baseline.slug(card.slug), chunks=len(chunks))
    store.publish(copy, chunks, vectors, model)
    return copy
