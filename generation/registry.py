"""The generators a process offers, built once at the edge (``create_app``, the CLI, eval).

To add a generator, write a module with a class that keeps :class:`generation.base.Generator`
and add one line to :data:`GENERATORS`. The first one is the default.
"""

from __future__ import annotations

from collections.abc import Callable

from generation.base import Generator
from generation.extractive import Extractive
from generation.openai_chat import OpenAIChat
from retrieval.errors import GeneratorUnavailable
from retrieval.registry import Registry
from retrieval.settings import Settings

GENERATORS: tuple[Callable[[], Generator], ...] = (
    Extractive,
    OpenAIChat,
)


def generators(settings: Settings) -> Registry[Generator]:
    """Every registered generator, by name, in registration order (the first is the default).

    Generators read their settings from :class:`generation.base.Context` on every call; ``settings``
    here decides which are offered (all of them, today).
    """
    made = [make() for make in GENERATORS]
    return Registry("generator", {g.name: g for g in made}, GeneratorUnavailable)
