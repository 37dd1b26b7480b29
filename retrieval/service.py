"""The retrieval facade: personas, and the passages of a card nearest to a query.

:class:`generation.service.PersonaService` adds answering on top; the CLI, the HTTP routes, MCP
and eval all call that one.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from retrieval.conversation import History, own_weights, with_context
from retrieval.dense import EXACT_LIMIT, DenseIndex
from retrieval.embedder import CachedEmbedder, Embedder, serving_embedder
from retrieval.errors import InvalidQuery, PersonaRequired, UnknownPersona
from retrieval.examples import ExampleIndex, generic_questions
from retrieval.nonblocking import WouldBlock, blocking_allowed
from retrieval.pipeline import Pipeline, pipeline_for
from retrieval.search import KeywordIndex
from retrieval.settings import Settings
from retrieval.stages.base import Corpus, PersonaIndexes, State
from retrieval.stages.coverage import judge, thresholds_of
from retrieval.store import Store
from retrieval.text import is_blank, passage_sentences
from retrieval.types import PASSAGE_KINDS, Answer, Coverage, Hit, PersonaInfo

MAX_QUERY_CHARS = 2000
MAX_K = 50
FOLLOW_UP_POOL = MAX_K
"""Passages each of a follow-up's two searches ranks (a passage missing from one counts that list's lowest score)."""
SENTENCE_CACHE = 16384  # card sentences whose vectors are kept (a card has a few hundred)


@dataclass(frozen=True)
class Retrieval:
    """What a search found: the persona, its ranked passages, how well they cover the query, and the query
    searched (a follow-up's standalone query)."""

    info: PersonaInfo
    hits: list[Hit]
    coverage: Coverage
    searched_for: str = ""
    warnings: list[str] = field(default_factory=list)  # what the search could not do as asked (an LLM's rewrite)

    def stamp(self, answer: Answer) -> Answer:
        """``answer`` with what this search searched for and its warnings."""
        return replace(answer, searched_for=self.searched_for, warnings=[*self.warnings, *answer.warnings])


class Retriever:
    """Owns the embedder and the store (both created on first use) and runs the retrieval pipeline."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self._store = store
        self._sentences: Embedder | None = None
        self._lock = threading.Lock()
        self.pipeline: Pipeline = pipeline_for(settings)
        self._indexes: dict[str, tuple[str, PersonaIndexes]] = {}
        self._indexes_lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # per persona: its indexes are loaded once
        # The search (dense + BM25 fusion, pure Python and numpy under the GIL) runs for at most this
        # many requests at once: the others wait without fighting over the GIL, so the event loop
        # stays responsive. Embedding is not under a slot (the pipeline runs stages with
        # ``compute = False`` first): queries waiting there are what the embedder batches.
        self._compute = threading.BoundedSemaphore(settings.compute_slots or 2 * (os.cpu_count() or 1))

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = serving_embedder(self.settings)
        return self._embedder

    @property
    def sentence_embedder(self) -> Embedder:
        """The embedder of the card's sentences (scored against every question by the extractive composer):
        the query embedder's inner one behind a cache of its own, so a stream of new questions never evicts
        them and each is embedded once."""
        if self._sentences is None:
            embedder = self.embedder
            with self._lock:
                if self._sentences is None:
                    inner = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
                    self._sentences = CachedEmbedder(inner, SENTENCE_CACHE)
        return self._sentences

    @property
    def store(self) -> Store:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = Store(self.settings)
        return self._store

    # -- personas -----------------------------------------------------------------------------
    def personas(self) -> list[PersonaInfo]:
        return self.store.personas()

    def persona(self, slug: str | None) -> PersonaInfo:
        """The named persona, or the only one indexed when ``slug`` is empty."""
        if slug:
            info = self.store.persona(slug)
            if info is None:
                raise UnknownPersona(slug, [p.slug for p in self.personas()])
            return info
        available = self.personas()
        if len(available) != 1:
            raise PersonaRequired([p.slug for p in available])
        return available[0]

    def load_indexes(self) -> None:
        """Load every persona's search indexes (BM25, vectors, sidecar questions) from the store."""
        for info in self.personas():
            self._persona_indexes(info)

    def warm_up(self) -> None:
        """Load every persona's indexes, then embed their cards' sentences (those the extractive composer scores
        against each question) while they fit in the sentence cache, so that no question pays for either (the server
        runs this at start-up, in the background; a question to a persona not loaded yet loads it itself)."""
        self.load_indexes()
        for info in self.personas():
            if not self._warm_sentences(info):
                break

    def refresh(self, slugs: Sequence[str] = ()) -> None:
        """After a live ingest: forget the indexes of personas no longer published, and load and warm those of
        ``slugs`` (their new versions), so that no question pays for either and an old version's indexes go."""
        published = {info.slug: info for info in self.personas()}
        with self._indexes_lock:
            for slug in set(self._indexes) - set(published):
                del self._indexes[slug]
                self._loading.pop(slug, None)
        for slug in slugs:
            if slug in published:
                self._warm_sentences(published[slug])

    def _warm_sentences(self, info: PersonaInfo) -> bool:
        """Load a persona's indexes and embed its card's sentences, if they fit in the sentence cache beside those
        already there (``False`` when they do not: warming more would evict what was warmed)."""
        dense = self._persona_indexes(info).dense
        if dense is None:
            return True
        texts = sorted({t for meta in dense.metadata for t in passage_sentences(str(meta.get("text", "")))})
        embedder = self.sentence_embedder
        if isinstance(embedder, CachedEmbedder) and len(texts) > embedder.room(texts):
            return False
        embedder.encode(texts)
        return True

    # -- retrieval ----------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        return self.embedder.encode([text])[0]

    def retrieve(self, query: str, persona: str | None = None, k: int | None = None,
                 sections: Sequence[str] | None = None) -> tuple[PersonaInfo, list[Hit]]:
        """The ``k`` passages of a persona's card nearest to ``query``, by :attr:`pipeline`."""
        found = self.search(query, persona, k, sections)
        return found.info, found.hits

    def search(self, query: str, persona: str | None = None, k: int | None = None,
               sections: Sequence[str] | None = None, vector: np.ndarray | None = None) -> Retrieval:
        """:meth:`retrieve`, with the pipeline's judgement of how well the card covers ``query`` (``vector``: its
        embedding, when the caller has it already)."""
        query = clean(query, "query")
        k = self.settings.default_k if k is None else k
        if not 1 <= k <= MAX_K:
            raise InvalidQuery(f"k must be between 1 and {MAX_K}, got {k}")
        info = self.persona(persona)
        wanted = _match_sections(info, sections) if sections else None
        corpus = Corpus(info, self.embedder, self.store, self._persona_indexes)
        state = self.pipeline.run(State(query, info, k, wanted, corpus, vector), self._compute)
        coverage = state.coverage or self._judge(info, state.hits[0].score if state.hits else 0.0, state.boundary)
        return Retrieval(info, state.hits, coverage, query)

    def _judge(self, info: PersonaInfo, top: float, boundary: float) -> Coverage:
        """The coverage judgement with the persona's own thresholds (else the settings')."""
        return judge(top, boundary, *thresholds_of(info, self.settings))

    def search_conversation(self, question: str, history: History, persona: str | None = None,
                            k: int | None = None, standalone: str | None = None) -> Retrieval:
        """A question in the chat before it: the passages of the standalone query it stands for.

        ``standalone`` is that query when something rewrote the question already (an LLM's condensed
        question). Otherwise it is made here: the question searched alone and after the user's earlier
        questions (:func:`retrieval.conversation.with_context`, named in ``searched_for``), each passage ranked by
        its two scores weighed by how much the question says on its own, and coverage judged on the two
        searches' evidence and boundary weighed the same way (:func:`retrieval.conversation.own_weights`). The
        passages the previous reply used stay eligible. A question with no earlier user turn is searched as it is.
        """
        if standalone is not None:
            return self.search(standalone, persona, k)
        question = clean(question, "question")
        earlier = history.questions(MAX_QUERY_CHARS)
        if not earlier:
            return self.search(question, persona, k)
        weights = own_weights(question)
        if weights.rank >= 1.0 and weights.coverage >= 1.0:  # a question of its own
            return self.search(question, persona, k)
        k = self.settings.default_k if k is None else k
        contextual = with_context(earlier, question, MAX_QUERY_CHARS)
        own_vector, context_vector = self.embedder.encode([question, contextual])  # one batch
        alone = self.search(question, persona, max(k, FOLLOW_UP_POOL), vector=own_vector)
        both = self.search(contextual, persona, max(k, FOLLOW_UP_POOL), vector=context_vector)
        w = weights.rank
        own = {h.id: h.score for h in alone.hits}
        topic = {h.id: h.score for h in both.hits}
        floor_own, floor_topic = min(own.values(), default=0.0), min(topic.values(), default=0.0)
        pool = {h.id: h for h in [*both.hits, *alone.hits]}
        scored = sorted(((w * own.get(cid, floor_own) + (1 - w) * topic.get(cid, floor_topic), hit)
                         for cid, hit in pool.items()), key=lambda p: -p[0])[:k]
        c = weights.coverage
        coverage = self._judge(alone.info, c * alone.coverage.top + (1 - c) * both.coverage.top,
                               c * alone.coverage.boundary + (1 - c) * both.coverage.boundary)
        return Retrieval(alone.info, _ranked([h for _, h in scored], [s for s, _ in scored]), coverage, contextual)

    def _persona_indexes(self, info: PersonaInfo) -> PersonaIndexes:
        """The persona's BM25 index and in-memory vectors, loaded on first use and again when it changes.

        Cached by the persona's content fingerprint (it changes with every published change of
        chunks), or by its live collection name for an index written without one. A persona of
        more than ``EXACT_LIMIT`` chunks keeps no vectors in memory: Chroma searches it (and its
        sidecar's questions are not used). The card's passages feed BM25 and the dense index; the
        sidecar's example and boundary questions feed the :class:`ExampleIndex`.
        """
        key = info.fingerprint or str((self.store.pointer(info.slug) or {}).get("collection", ""))
        cached = self._indexes.get(info.slug)
        if cached is None or cached[0] != key:
            if not blocking_allowed():  # on the event loop: loading reads the index; the caller runs this in a thread
                raise WouldBlock("loading the persona's indexes")
            with self._loading_lock(info.slug):  # one load per persona at a time; other personas load meanwhile
                cached = self._indexes.get(info.slug)
                if cached is None or cached[0] != key:
                    cached = (key, self._load(info))
                    self._indexes[info.slug] = cached
        return cached[1]

    def _loading_lock(self, slug: str) -> threading.Lock:
        with self._indexes_lock:
            return self._loading.setdefault(slug, threading.Lock())

    def _load(self, info: PersonaInfo) -> PersonaIndexes:
        """A persona's indexes, read from the store; a card without boundary questions of its own is judged against
        the generic boundary (:attr:`generic_boundary`)."""
        exact = info.chunks <= EXACT_LIMIT
        stored = self.store.chunks(info.slug, with_embeddings=exact)
        chunks = [c for c in stored if c.metadata.get("kind", "section") in PASSAGE_KINDS]
        examples = ExampleIndex.build(stored, {c.id for c in chunks}) if exact else None
        if examples is not None and not len(examples.boundary):
            examples = replace(examples, boundary=self.generic_boundary)
        return PersonaIndexes(KeywordIndex.build(chunks), DenseIndex.build(chunks) if exact else None, examples)

    @functools.cached_property
    def generic_boundary(self) -> np.ndarray:
        """The generic boundary's vectors (``retrieval/generic_boundary.yaml``: questions no occupation's card
        answers), embedded once a process and shared by every card without a boundary of its own."""
        return self.embedder.encode(generic_questions())

    def similarity(self, question: str) -> Callable[[list[str]], list[float]]:
        """A scorer of sentences against a question: cosine of their embeddings."""
        def score(texts: list[str]) -> list[float]:
            if not texts:
                return []
            vectors = np.concatenate([self.embedder.encode([question]), self.sentence_embedder.encode(texts)])
            return [float(v) for v in vectors[1:] @ vectors[0]]
        return score


def _ranked(hits: Sequence[Hit], scores: Sequence[float]) -> list[Hit]:
    """``hits`` with the given scores, ranked 1.. in this order."""
    return [replace(h, score=float(s), rank=i) for i, (h, s) in enumerate(zip(hits, scores, strict=True), 1)]


def clean(text: str, field: str) -> str:
    """``text`` stripped; raises :class:`InvalidQuery` when it is blank or too long."""
    if not isinstance(text, str) or is_blank(text):
        raise InvalidQuery(f"{field} must be a non-empty string")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"{field} must be at most {MAX_QUERY_CHARS} characters, got {len(text)}")
    return text.strip()


def _match_sections(info: PersonaInfo, sections: Sequence[str]) -> list[str]:
    """Map requested section names (heading or slug, any case) to the card's headings verbatim."""
    known = ["Overview", *info.sections]
    lookup = {h.lower(): h for h in known}
    lookup.update({h.lower().replace(" ", "-"): h for h in known})
    out = []
    for name in sections:
        heading = lookup.get(str(name).strip().lower())
        if heading is None:
            raise InvalidQuery(f"unknown section {name!r} for persona {info.slug!r}; sections: {', '.join(known)}")
        out.append(heading)
    return out
