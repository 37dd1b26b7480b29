"""The contract every answer generator keeps: :class:`Generator`, fed a narrow :class:`Context`.

A generator turns retrieved passages into an :class:`~retrieval.types.Answer`. It sees the
persona, the question, the hits, a sentence scorer and the settings, never the service. One
that produces text incrementally also implements :class:`StreamingGenerator`; every other one is
streamed word by word by :func:`events`. One that waits on nothing (no network, no disk: the extractive
composer) says so with a class attribute ``cpu_only = True``, and the server then answers with it on its event
loop (:mod:`server.inline`); any other generator answers in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from retrieval.settings import Settings
from retrieval.types import Answer, AnswerEvent, Confidence, Coverage, Hit, PersonaInfo

Similarity = Callable[[list[str]], list[float]]
"""Scores sentences against the question (cosine of their embeddings), one float per sentence."""


@dataclass(frozen=True)
class Context:
    """What a generator may use to answer one question."""

    info: PersonaInfo
    question: str
    hits: Sequence[Hit]
    similarity: Similarity
    settings: Settings
    instructions: str = ""  # a chat client's extra wishes ("answer in French"); never replace the persona
    coverage: Coverage | None = None  # the retrieval's judgement; from the best hit and min_score when absent

    @property
    def confidence(self) -> Confidence:
        """``high``, ``low`` (answer with the closest guidance, framed as such) or ``none`` (refuse)."""
        if self.coverage is not None:
            return self.coverage.confidence
        return "high" if self.hits and self.hits[0].score >= self.settings.min_score else "none"

    @property
    def covered(self) -> bool:
        """Whether the card covers the question well enough to answer at all."""
        return self.confidence != "none"


@runtime_checkable
class Generator(Protocol):
    """Answers a question from retrieved passages. ``name`` is what clients ask for."""

    name: str

    def answer(self, context: Context) -> Answer: ...


@runtime_checkable
class StreamingGenerator(Generator, Protocol):
    """A generator that yields text as it produces it: ``delta`` events, then one final ``answer``."""

    def stream(self, context: Context) -> Iterator[AnswerEvent]: ...


def events(generator: Generator, context: Context) -> Iterator[AnswerEvent]:
    """The answer as a stream: the generator's own, or its whole answer word by word."""
    if isinstance(generator, StreamingGenerator):
        yield from generator.stream(context)
        return
    answer = generator.answer(context)
    for word in re.findall(r"\S+\s*", answer.text):
        yield AnswerEvent("delta", word)
    yield AnswerEvent("answer", answer.text, answer)
