"""The library facade the CLI and the HTTP routes both call: personas, retrieve, ask."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from retrieval import llm
from retrieval.answer import GENERATOR as EXTRACTIVE
from retrieval.answer import extractive_answer
from retrieval.dense import EXACT_LIMIT, DenseIndex
from retrieval.embedder import BatchingEmbedder, CachedEmbedder, Embedder, embedder_for
from retrieval.errors import GeneratorUnavailable, InvalidQuery, PersonaRequired, UnknownPersona
from retrieval.search import CANDIDATES, KeywordIndex, hybrid_hits
from retrieval.settings import Settings
from retrieval.store import Store
from retrieval.text import is_blank
from retrieval.types import Answer, AnswerEvent, Hit, PersonaInfo

MAX_QUERY_CHARS = 2000
MAX_K = 50

# A generator is called as make(service, info, question, hits, instructions=...): ``instructions`` are a
# client's extra wishes ("answer in French"); they never replace the persona or its grounding.
Generator = Callable[..., Answer]
Streamer = Callable[..., Iterator[AnswerEvent]]


class PersonaService:
    """Owns the embedder and the store (both created on first use) and answers questions."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self._store = store
        self._lock = threading.Lock()
        self.generators: dict[str, Generator] = {EXTRACTIVE: _extractive}
        self.streamers: dict[str, Streamer] = {}
        llm.register(self.generators, self.streamers)
        self._indexes: dict[str, tuple[str, KeywordIndex, DenseIndex | None]] = {}
        self._indexes_lock = threading.Lock()
        # The search (dense + BM25 fusion, pure Python and numpy under the GIL) runs for at most this
        # many requests at once: the others wait without fighting over the GIL, so the event loop
        # stays responsive. Embedding is not under a slot: queries waiting there are what the
        # embedder batches.
        self._compute = threading.BoundedSemaphore(settings.compute_slots or 2 * (os.cpu_count() or 1))

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = CachedEmbedder(BatchingEmbedder(embedder_for(self.settings)))
        return self._embedder

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

    # -- retrieval ----------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        return self.embedder.encode([text])[0]

    def retrieve(self, query: str, persona: str | None = None, k: int | None = None,
                 sections: Sequence[str] | None = None) -> tuple[PersonaInfo, list[Hit]]:
        """The ``k`` passages of a persona's card nearest to ``query``."""
        query = _clean(query, "query")
        k = self.settings.default_k if k is None else k
        if not 1 <= k <= MAX_K:
            raise InvalidQuery(f"k must be between 1 and {MAX_K}, got {k}")
        info = self.persona(persona)
        wanted = _match_sections(info, sections) if sections else None
        vector = self.embed_query(query)  # outside the slots: waiting queries batch in the embedder
        with self._compute:
            keywords, dense = self._persona_indexes(info)
            n = max(k, CANDIDATES)
            matches = dense.search(vector, n, wanted) if dense else self.store.query(info.slug, vector, n, wanted)
            return info, hybrid_hits(matches, keywords, query, k, wanted)

    def keyword_index(self, info: PersonaInfo) -> KeywordIndex:
        """The persona's BM25 index (see :meth:`_persona_indexes`)."""
        return self._persona_indexes(info)[0]

    def _persona_indexes(self, info: PersonaInfo) -> tuple[KeywordIndex, DenseIndex | None]:
        """The persona's BM25 index and in-memory vectors, loaded on first use and again when it changes.

        Cached by the persona's content fingerprint (it changes with every published change of
        chunks), or by its live collection name for an index written without one. A persona of
        more than ``EXACT_LIMIT`` chunks keeps no vectors in memory: Chroma searches it.
        """
        key = info.fingerprint or str((self.store.pointer(info.slug) or {}).get("collection", ""))
        cached = self._indexes.get(info.slug)
        if cached is None or cached[0] != key:
            with self._indexes_lock:
                cached = self._indexes.get(info.slug)
                if cached is None or cached[0] != key:
                    exact = info.chunks <= EXACT_LIMIT
                    chunks = self.store.chunks(info.slug, with_embeddings=exact)
                    cached = (key, KeywordIndex.build(chunks), DenseIndex.build(chunks) if exact else None)
                    self._indexes[info.slug] = cached
        return cached[1], cached[2]

    # -- answers ------------------------------------------------------------------------------
    def ask(self, question: str, persona: str | None = None, k: int | None = None,
            generator: str | None = None, instructions: str = "") -> Answer:
        """An answer in the persona's voice, every claim cited, or an honest "not covered".

        ``instructions`` (a chat client's system messages) reach generators that can use them.
        """
        question = _clean(question, "question")
        make = self.generators[self.generator_name(generator)]
        info, hits = self.retrieve(question, persona, k)
        return make(self, info, question, hits, instructions=instructions)

    def generator_name(self, generator: str | None) -> str:
        """The generator to use (``extractive`` when none is named); raises when it is unknown."""
        name = generator or EXTRACTIVE
        if name not in self.generators:
            raise GeneratorUnavailable(f"unknown generator {name!r}; available: {', '.join(sorted(self.generators))}")
        return name

    def ask_events(self, question: str, persona: str | None = None, k: int | None = None,
                   generator: str | None = None, instructions: str = "") -> Iterator[AnswerEvent]:
        """The answer as a stream: text deltas as they are produced, then the final answer.

        Generators that produce text incrementally can register in :attr:`streamers`; the others
        are answered whole and their text is streamed word by word.
        """
        name = generator or EXTRACTIVE
        stream = self.streamers.get(name)
        if stream is not None:
            question = _clean(question, "question")
            info, hits = self.retrieve(question, persona, k)
            yield from stream(self, info, question, hits, instructions=instructions)
            return
        answer = self.ask(question, persona, k, generator, instructions)
        for word in re.findall(r"\S+\s*", answer.text):
            yield AnswerEvent("delta", word)
        yield AnswerEvent("answer", answer.text, answer)

    def similarity(self, question: str) -> Callable[[list[str]], list[float]]:
        """A scorer of sentences against a question: cosine of their embeddings."""
        def score(texts: list[str]) -> list[float]:
            vectors = self.embedder.encode([question, *texts])
            return [float(v) for v in vectors[1:] @ vectors[0]]
        return score


def _extractive(service: PersonaService, info: PersonaInfo, question: str, hits: list[Hit],
                instructions: str = "") -> Answer:
    """The card's own sentences; there is no model to give ``instructions`` to."""
    return extractive_answer(info, question, hits, service.similarity(question), service.settings.min_score)


def _clean(text: str, field: str) -> str:
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
