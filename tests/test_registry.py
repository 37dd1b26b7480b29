"""The generator registry: built from one list, the first the default, unknown names listed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from generation.base import Context, Generator, StreamingGenerator, events
from generation.extractive import Extractive
from generation.openai_chat import OpenAIChat
from generation.registry import GENERATORS, generators
from retrieval.errors import GeneratorUnavailable
from retrieval.settings import Settings
from retrieval.types import Answer, PersonaInfo

INFO = PersonaInfo("p", "Pilot", [], "", [], 0)


@dataclass(frozen=True)
class Echo:
    name: str = "echo"

    def answer(self, context: Context) -> Answer:
        return Answer(context.info.slug, context.question, f"You asked: {context.question}", [], False, self.name)


def test_registry_lists_every_generator_in_order_and_names_the_unknown() -> None:
    registry = generators(Settings())
    assert list(registry) == [make().name for make in GENERATORS]
    assert registry.default == registry.name(None) == next(iter(registry))
    assert all(isinstance(g, Generator) for g in registry.values())
    with pytest.raises(GeneratorUnavailable, match="unknown generator 'telepathy'; available: ") as caught:
        registry.resolve("telepathy")
    assert all(name in caught.value.message for name in registry)


def test_streaming_is_the_generators_own_or_word_by_word() -> None:
    assert isinstance(OpenAIChat(), StreamingGenerator) and not isinstance(Extractive(), StreamingGenerator)
    context = Context(INFO, "is it two words?", [], lambda texts: [0.0] * len(texts), Settings())
    streamed = list(events(Echo(), context))
    assert [e.type for e in streamed] == ["delta"] * 6 + ["answer"]
    assert "".join(e.text for e in streamed[:-1]) == streamed[-1].answer.text == "You asked: is it two words?"
    assert not context.covered
