"""Retrieval as an ordered list of stages, and the presets a deployment chooses from.

A preset is a list of stage factories. ``PERSONA_RETRIEVAL`` names one (default: the first,
``hybrid``). Adding a stage is a file in :mod:`retrieval.stages` and its line in a preset; a new
way of retrieving is one more preset line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from retrieval.dense import EXACT_LIMIT
from retrieval.errors import UnknownPreset
from retrieval.registry import Registry
from retrieval.settings import Settings
from retrieval.stages.base import Stage, State
from retrieval.stages.candidates import DenseCandidates
from retrieval.stages.coverage import CoverageJudge
from retrieval.stages.dense_scores import DenseScores
from retrieval.stages.embed import EmbedQuery
from retrieval.stages.examples import ExampleMatch
from retrieval.stages.fuse import KeywordFusion
from retrieval.stages.hits import TopK
from retrieval.stages.items import ItemLevel
from retrieval.stages.rerank import OverviewPrior

StageFactory = Callable[[Settings], Stage]


def _new(stage: Callable[[], Stage]) -> StageFactory:
    """A factory for a stage that needs no settings."""
    return lambda _settings: stage()


def _coverage(settings: Settings) -> Stage:
    return CoverageJudge(settings)


def _all_passages(_settings: Settings) -> Stage:
    return DenseCandidates(n=EXACT_LIMIT)  # every passage: its examples may lift any of them


PRESETS: dict[str, tuple[StageFactory, ...]] = {
    # embed -> every passage by cosine -> items (a section by its best item) -> cosine -> the card's
    # example questions vote for their passages, the boundary is measured -> best k -> covered?
    "items": (_new(EmbedQuery), _all_passages, _new(ItemLevel), _new(DenseScores), _new(ExampleMatch), _new(TopK),
              _coverage),
    # embed -> dense candidates -> BM25 fusion -> Overview prior -> best k -> covered?
    "hybrid": (_new(EmbedQuery), _new(DenseCandidates), _new(KeywordFusion), _new(OverviewPrior), _new(TopK),
               _coverage),
    # embed -> dense candidates -> cosine -> best k (no keywords, no prior) -> covered?
    "dense": (_new(EmbedQuery), _new(DenseCandidates), _new(DenseScores), _new(TopK), _coverage),
}


@dataclass(frozen=True)
class Pipeline:
    """Stages run in order on one :class:`State`; the wiring is checked when the pipeline is built."""

    name: str
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        check_wiring(self.stages)

    def run(self, state: State, slot: AbstractContextManager[object]) -> State:
        """Run every stage; the leading ones that need no compute slot run before ``slot`` is taken."""
        first = next((i for i, stage in enumerate(self.stages) if stage.compute), len(self.stages))
        for stage in self.stages[:first]:
            stage.run(state)
        with slot:
            for stage in self.stages[first:]:
                stage.run(state)
        return state


def check_wiring(stages: Sequence[Stage]) -> None:
    """Raise ``ValueError`` when a stage reads a value no earlier stage wrote, or nothing writes ``hits``."""
    fields = set(State.__dataclass_fields__)
    available = set(State.inputs())
    for stage in stages:
        unknown = (set(stage.reads) | set(stage.writes)) - fields
        if unknown:
            raise ValueError(f"{type(stage).__name__} names no State field: {', '.join(sorted(unknown))}")
        missing = set(stage.reads) - available
        if missing:
            raise ValueError(f"{type(stage).__name__} reads {', '.join(sorted(missing))} before any stage writes it")
        available |= set(stage.writes)
    if "hits" not in available:
        raise ValueError("no stage writes hits")


def presets() -> Registry[tuple[StageFactory, ...]]:
    return Registry("retrieval preset", PRESETS, UnknownPreset)


def pipeline_for(settings: Settings) -> Pipeline:
    """The pipeline ``settings.retrieval`` names (the first preset when it names none)."""
    registry = presets()
    name = registry.name(settings.retrieval)
    return Pipeline(name, tuple(make(settings) for make in registry[name]))
