"""Retrieval as a list of stages: presets, wiring checks, and the same ranking as the scoring functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from generation.service import PersonaService
from retrieval.errors import UnknownPreset
from retrieval.pipeline import PRESETS, Pipeline, check_wiring, pipeline_for
from retrieval.search import CANDIDATES, hybrid_hits, to_hits
from retrieval.settings import Settings
from retrieval.stages.base import State
from retrieval.stages.hits import TopK

QUESTION = "How much pipeline do I need to hit my quota?"


@dataclass(frozen=True)
class NeedsVector:
    reads: ClassVar[tuple[str, ...]] = ("vector",)
    writes: ClassVar[tuple[str, ...]] = ("scored",)
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:  # pragma: no cover - never wired
        raise AssertionError


def test_presets_are_wired_and_chosen_by_settings() -> None:
    for name in PRESETS:
        assert pipeline_for(Settings(retrieval=name)).name == name
    assert pipeline_for(Settings()).name == next(iter(PRESETS)) == "items"
    with pytest.raises(UnknownPreset, match="available: items, hybrid, dense"):
        pipeline_for(Settings(retrieval="telepathy"))
    with pytest.raises(ValueError, match="reads vector before any stage writes it"):
        Pipeline("broken", (NeedsVector(), TopK()))
    with pytest.raises(ValueError, match="no stage writes hits"):
        check_wiring(())
    assert not pipeline_for(Settings()).stages[0].compute, "the embedding runs outside the compute slot"


def test_hybrid_pipeline_ranks_as_the_scoring_functions(service: PersonaService) -> None:
    hybrid = PersonaService(service.settings.model_copy(update={"retrieval": "hybrid"}), embedder=service.embedder,
                            store=service.store)
    info, hits = hybrid.retrieve(QUESTION, k=10)
    indexes = service._persona_indexes(info)
    vector = service.embed_query(QUESTION)
    expected = hybrid_hits(indexes.dense.search(vector, CANDIDATES), indexes.keywords, QUESTION, 10)
    assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in expected]


def test_dense_preset_is_plain_dense_search(service: PersonaService) -> None:
    dense = PersonaService(service.settings.model_copy(update={"retrieval": "dense"}), embedder=service.embedder,
                           store=service.store)
    _, hits = dense.retrieve(QUESTION, k=5)
    chroma = to_hits(service.store.query("sales-manager", service.embed_query(QUESTION), 5))
    assert [h.id for h in hits] == [h.id for h in chroma]
    assert [h.score for h in hits] == pytest.approx([h.score for h in chroma], abs=1e-5)
