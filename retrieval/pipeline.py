"""Retrieval as an ordered list of stages, and the presets a deployment chooses from.

A preset is a list of stage factories. ``PERSONA_RETRIEVAL`` names one (default: the first,
``hybrid``). Adding a stage is a file in :mod:`retrieval.stages` and its line in a preset; a new
way of retrieving is one more preset line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from retrieval.errors import UnknownPreset
from retrieval.registry import Registry
from retrieval.settings import Settings
from retrieval.stages.base import Stage, State
from retrieval.stages.candidates import DenseCandidates
from retrieval.stages.dense_scores import DenseScores
from retrieval.stages.embed import EmbedQuery
from retrieval.stages.fuse import KeywordFusion
from retrieval.stages.hits import TopK
from retrieval.stages.rerank import OverviewPrior
from retrieval.types import Hit

PRESETS: dict[str, tuple[Callable[[], Stage], ...]] = {
    # embed -> dense candidates -> BM25 fusion -> Overview prior -> best k
    "hybrid": (EmbedQuery, DenseCandidates, KeywordFusion, OverviewPrior, TopK),
    # embed -> dense candidates -> cosine -> best k (no keywords, no prior)
    "dense": (EmbedQuery, DenseCandidates, DenseScores, TopK),
}


@dataclass(frozen=True)
class Pipeline:
    """Stages run in order on one :class:`State`; the wiring is checked when the pipeline is built."""

    name: str
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        check_wiring(self.stages)

    def run(self, state: State, slot: AbstractContextManager[object]) -> list[Hit]:
        """Run every stage; the leading ones that need no compute slot run before ``slot`` is taken."""
        first = next((i for i, stage in enumerate(self.stages) if stage.compute), len(self.stages))
        for stage in self.stages[:first]:
            stage.run(state)
        with slot:
            for stage in self.stages[first:]:
                stage.run(state)
        return state.hits


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


def presets() -> Registry[tuple[Callable[[], Stage], ...]]:
    return Registry("retrieval preset", PRESETS, UnknownPreset)


def pipeline_for(settings: Settings) -> Pipeline:
    """The pipeline ``settings.retrieval`` names (the first preset when it names none)."""
    registry = presets()
    name = registry.name(settings.retrieval)
    return Pipeline(name, tuple(make() for make in registry[name]))
