"""The library facade the CLI, the HTTP routes, MCP and eval call: personas, retrieve, ask."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from generation import condense
from generation.base import Context, Generator, events
from generation.condense import CONDENSE_FELL_BACK
from generation.registry import generators as registered
from retrieval.conversation import History
from retrieval.embedder import Embedder
from retrieval.registry import Registry
from retrieval.service import Retrieval, Retriever, clean
from retrieval.settings import Settings
from retrieval.stages.coverage import judge, thresholds_of
from retrieval.store import Store
from retrieval.types import Answer, AnswerEvent, Coverage, Hit, PersonaInfo


class PersonaService(Retriever):
    """Retrieval (:class:`retrieval.service.Retriever`) plus answers from the generators it is handed.

    ``generators`` is built at the edge by :func:`generation.registry.generators`; when it is not
    given, that function is called with ``settings``.
    """

    def __init__(self, settings: Settings, embedder: Embedder | None = None, store: Store | None = None,
                 generators: Registry[Generator] | None = None) -> None:
        super().__init__(settings, embedder, store)
        self.generators: Registry[Generator] = generators if generators is not None else registered(settings)

    def generator_name(self, generator: str | None) -> str:
        """The generator to use (the registry's default when none is named); raises when it is unknown."""
        return self.generators.name(generator)

    def context(self, info: PersonaInfo, question: str, hits: list[Hit], instructions: str = "",
                coverage: Coverage | None = None) -> Context:
        """What a generator gets to answer ``question`` from ``hits`` (``coverage`` judged from the best hit
        alone when the retrieval did not judge it)."""
        if coverage is None:
            s = self.settings
            coverage = judge(hits[0].score if hits else 0.0, 0.0, *thresholds_of(info, s))
        return Context(info, question, hits, self.similarity(question), self.settings, instructions, coverage)

    def answer_from(self, info: PersonaInfo, question: str, hits: list[Hit], generator: str | None = None,
                    instructions: str = "") -> Answer:
        """An answer from hits retrieved elsewhere (eval's baselines)."""
        return self.generators.resolve(generator).answer(self.context(info, question, hits, instructions))

    def ask(self, question: str, persona: str | None = None, k: int | None = None,
            generator: str | None = None, instructions: str = "", history: History | None = None) -> Answer:
        """An answer in the persona's voice, every claim cited, or an honest "not covered".

        ``instructions`` (a chat client's system messages) reach generators that can use them; with a
        ``history`` (the chat's earlier turns) the question is searched as the follow-up it is
        (:meth:`search_conversation`), and the answer says what was searched (``searched_for``).
        """
        question = clean(question, "question")
        make = self.generators.resolve(generator)
        found = self.find(question, history, persona, k)
        answer = make.answer(self.context(found.info, question, found.hits, instructions, found.coverage))
        return found.stamp(answer)

    def ask_events(self, question: str, persona: str | None = None, k: int | None = None,
                   generator: str | None = None, instructions: str = "",
                   history: History | None = None) -> Iterator[AnswerEvent]:
        """The answer as a stream: text deltas as they are produced, then the final answer
        (see :func:`generation.base.events`)."""
        question = clean(question, "question")
        make = self.generators.resolve(generator)
        found = self.find(question, history, persona, k)
        context = self.context(found.info, question, found.hits, instructions, found.coverage)
        for event in events(make, context):
            if event.answer is not None:
                event = AnswerEvent(event.type, event.text, found.stamp(event.answer))
            yield event

    def find(self, question: str, history: History | None, persona: str | None = None,
             k: int | None = None) -> Retrieval:
        """The passages a question is answered from: searched alone, or as a follow-up of ``history`` (rewritten
        by the LLM when one is configured, else offline; see :mod:`generation.condense`)."""
        if not history:
            return self.search(question, persona, k)
        if not condense.enabled(self.settings):
            return self.search_conversation(question, history, persona, k)
        self.persona(persona)  # an unknown persona is refused before the LLM is asked
        condensed = condense.condense(self.settings, question, history)
        found = self.search_conversation(question, history, persona, k, condensed.question)
        if condensed.failure is None:
            return found
        return replace(found, warnings=[CONDENSE_FELL_BACK + condensed.failure])
