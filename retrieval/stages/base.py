"""What flows through the retrieval pipeline (:class:`State`) and what a stage is (:class:`Stage`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Protocol

import numpy as np

from retrieval.dense import DenseIndex
from retrieval.embedder import Embedder
from retrieval.examples import ExampleIndex
from retrieval.search import KeywordIndex, Scored
from retrieval.store import Match, Store
from retrieval.types import Coverage, Hit, PersonaInfo


class PersonaIndexes(NamedTuple):
    """A persona's in-memory indexes: BM25 always, vectors unless the persona is too large (then Chroma),
    and its sidecar's example and boundary questions (with the vectors)."""

    keywords: KeywordIndex
    dense: DenseIndex | None
    examples: ExampleIndex | None = None


class Corpus:
    """What one query searches: the embedder, the store and the persona's indexes (loaded on first use)."""

    def __init__(self, info: PersonaInfo, embedder: Embedder, store: Store,
                 load: Callable[[PersonaInfo], PersonaIndexes]) -> None:
        self.info = info
        self.embedder = embedder
        self.store = store
        self._load = load

    @functools.cached_property
    def indexes(self) -> PersonaIndexes:
        return self._load(self.info)


@dataclass(slots=True)
class State:
    """The request (first five fields) and every value a stage has produced so far."""

    query: str
    info: PersonaInfo
    k: int
    sections: list[str] | None
    corpus: Corpus
    vector: np.ndarray | None = None  # the query's embedding (a request may bring it)
    candidates: list[Match] = field(default_factory=list)  # nearest chunks, by cosine distance
    scored: list[Scored] = field(default_factory=list)  # candidates with a score, in any order
    hits: list[Hit] = field(default_factory=list)  # the answer: the best k, ranked
    boundary: float = 0.0  # the query's closest cosine to a question the card does not cover
    support: float | None = None  # evidence that the card covers the query (default: the best hit's score)
    coverage: Coverage | None = None  # how well the card covers the query (refuse, answer tentatively, answer)

    @classmethod
    def inputs(cls) -> frozenset[str]:
        """The fields a request fills before the first stage runs (``boundary`` starts at 0: no boundary known;
        ``support`` at ``None``: the best hit's score)."""
        return frozenset(("query", "info", "k", "sections", "corpus", "boundary", "support"))


class Stage(Protocol):
    """One step of retrieval: reads some fields of the :class:`State`, writes others.

    ``reads``/``writes`` are checked when a pipeline is built (every read is written by an earlier
    stage or is a request input). Stages with ``compute = False`` (the query embedding) run before
    the compute slot is taken, so that queries waiting for it batch in the embedder.
    """

    reads: ClassVar[tuple[str, ...]]
    writes: ClassVar[tuple[str, ...]]
    compute: ClassVar[bool]

    def run(self, state: State) -> None: ...
