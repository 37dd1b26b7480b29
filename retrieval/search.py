"""Retrieval over one persona's chunks: dense search, and dense fused with BM25 keyword search.

The hybrid score of a chunk is ``DENSE_WEIGHT * cosine + KEYWORD_WEIGHT * bm25 / (bm25 + KEYWORD_SATURATION)``:
the cosine similarity (clipped to [0, 1]) plus a saturated BM25 score, so it stays in [0, 1] and
keeps an absolute meaning (a question that shares no words with the card gets its dense score
scaled by ``DENSE_WEIGHT``), which the abstention threshold relies on. The ``Overview`` chunk (the
card's title, aliases and summary, which share the persona's name with nearly every question) has
its score multiplied by ``OVERVIEW_WEIGHT``, so it leads only when it is clearly the closest. Weights
were chosen on the eval dev set (see docs/evaluation.md).

The functions here are the arithmetic; :mod:`retrieval.stages` wraps them as pipeline stages.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.store import Match, StoredChunk
from retrieval.types import Hit

DENSE_WEIGHT = 0.8
KEYWORD_WEIGHT = 0.2
KEYWORD_SATURATION = 5.0  # a BM25 score of 5 counts half of KEYWORD_WEIGHT
OVERVIEW_WEIGHT = 0.9  # the overview chunk's prior: it names the persona that most questions name too
CANDIDATES = 50  # dense candidates fetched before fusion, whatever k is, so rankings do not depend on k

Scored = tuple[float, str, dict[str, Any]]
"""A candidate with its score: (score, chunk id, metadata). Plain tuples: thousands per query."""


def to_hits(matches: Sequence[Match]) -> list[Hit]:
    """Chroma matches -> hits with a score in [0, 1]: cosine similarity, negatives clipped to 0."""
    return [_hit(m.id, m.metadata, _cosine(m), rank) for rank, m in enumerate(matches, start=1)]


def _cosine(match: Match) -> float:
    return min(1.0, max(0.0, 1.0 - match.distance))


def _hit(cid: str, meta: dict[str, Any], score: float, rank: int) -> Hit:
    return Hit(
        id=cid,
        persona=str(meta.get("persona", "")),
        kind=meta.get("kind", "section"),
        section=str(meta.get("section", "")),
        item=meta.get("item") or None,
        text=str(meta.get("text", "")),
        score=round(score, 6),
        rank=rank,
    )


@functools.lru_cache(maxsize=1)
def _stemmer() -> Callable[[list[str]], list[str]]:
    # PyStemmer: the Snowball stemmers in C; "english" is Porter2 (nltk's pure-Python one cost a second to import)
    import Stemmer

    return Stemmer.Stemmer("english").stemWords


def _tokens(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def keyword_text(meta: dict[str, Any]) -> str:
    """What BM25 indexes for a chunk: its section heading, item title and text."""
    return " ".join(str(meta.get(key) or "") for key in ("section", "item", "text"))


@dataclass(frozen=True)
class KeywordIndex:
    """BM25 (``bm25s``, Porter-stemmed, English stop words dropped) over one persona's chunks."""

    ids: list[str]
    metadata: list[dict[str, Any]]
    bm25: Any

    @functools.cached_property
    def sections_with_items(self) -> frozenset[str]:
        """Headings of the sections whose items are indexed as passages of their own."""
        return frozenset(str(m.get("section", "")) for m in self.metadata if m.get("kind") == "item")

    @classmethod
    def build(cls, chunks: Sequence[StoredChunk]) -> KeywordIndex:
        import bm25s

        bm25 = bm25s.BM25()
        if chunks:
            bm25.index(_tokens([keyword_text(c.metadata) for c in chunks]), show_progress=False)
        return cls([c.id for c in chunks], [c.metadata for c in chunks], bm25)

    def scores(self, query: str) -> np.ndarray:
        """Saturated BM25 score of every chunk for ``query``, each in [0, 1)."""
        words = [w for w in _tokens([query])[0] if w]
        if not self.ids or not words:
            return np.zeros(len(self.ids), dtype=np.float32)
        raw = np.asarray(self.bm25.get_scores(words), dtype=np.float32)
        return raw / (raw + KEYWORD_SATURATION)


def fuse(matches: Sequence[Match], keywords: KeywordIndex, query: str,
         sections: Sequence[str] | None = None) -> list[Scored]:
    """Dense candidates fused with keyword scores, in the keyword index's order (not ranked).

    Chunks found by keywords but not among the dense candidates are scored with the lowest
    candidate cosine (a bound: they are no closer than the last dense candidate).
    """
    keyword = keywords.scores(query)
    dense = {m.id: _cosine(m) for m in matches}
    floor = min(dense.values(), default=0.0)
    wanted = set(sections) if sections else None
    fused = []
    for index, (cid, meta) in enumerate(zip(keywords.ids, keywords.metadata, strict=True)):
        if wanted is not None and meta.get("section") not in wanted:
            continue
        if cid not in dense and keyword[index] <= 0:
            continue
        fused.append((DENSE_WEIGHT * dense.get(cid, floor) + KEYWORD_WEIGHT * float(keyword[index]), cid, meta))
    return fused


def overview_prior(scored: list[Scored], weight: float = OVERVIEW_WEIGHT) -> list[Scored]:
    """The ``Overview`` chunk's score multiplied by ``weight`` (in place; the same list is returned)."""
    for index, (score, cid, meta) in enumerate(scored):
        if meta.get("kind") == "overview":
            scored[index] = (score * weight, cid, meta)
    return scored


def dense_scores(matches: Sequence[Match]) -> list[Scored]:
    """Dense candidates scored by their cosine alone (no keywords)."""
    return [(_cosine(m), m.id, m.metadata) for m in matches]


def top_hits(scored: list[Scored], k: int) -> list[Hit]:
    """The best ``k`` by score (ties keep their order), ranked from 1. Sorts ``scored`` in place."""
    scored.sort(key=lambda item: -item[0])
    return [_hit(cid, meta, score, rank) for rank, (score, cid, meta) in enumerate(scored[:k], start=1)]


def hybrid_hits(matches: Sequence[Match], keywords: KeywordIndex, query: str, k: int,
                sections: Sequence[str] | None = None) -> list[Hit]:
    """The ``hybrid`` preset's scoring in one call: :func:`fuse`, :func:`overview_prior`, :func:`top_hits`."""
    return top_hits(overview_prior(fuse(matches, keywords, query, sections)), k)
