"""In-memory exact dense search: the same neighbours, in the same order, as Chroma's own query."""

from __future__ import annotations

import numpy as np
import pytest

from generation.service import PersonaService
from retrieval import dense
from retrieval.dense import DenseIndex
from retrieval.store import StoredChunk
from retrieval.types import PASSAGE_KINDS

QUESTIONS = [
    "How much pipeline do I need to hit my number?",
    "What does OTE mean?",
    "Should I fire a rep who missed quota twice?",
    "How do I bake sourdough bread?",
]


@pytest.fixture(scope="module")
def index(service: PersonaService) -> DenseIndex:
    stored = service.store.chunks("sales-manager", with_embeddings=True)
    return DenseIndex.build([c for c in stored if c.metadata.get("kind") in PASSAGE_KINDS])


@pytest.mark.parametrize("question", QUESTIONS)
def test_dense_search_matches_chroma_query(service: PersonaService, index: DenseIndex, question: str) -> None:
    vector = service.embed_query(question)
    ours = index.search(vector, 50)
    chroma = service.store.query("sales-manager", vector, 50)
    assert [m.id for m in ours] == [m.id for m in chroma]
    assert [m.distance for m in ours] == pytest.approx([m.distance for m in chroma], abs=1e-5)
    assert ours[0].metadata == chroma[0].metadata


def test_dense_search_filters_sections_like_chroma(service: PersonaService, index: DenseIndex) -> None:
    vector = service.embed_query("How do I keep my forecast honest?")
    wanted = ["Rules of Thumb", "Vocabulary"]
    ours = index.search(vector, 50, wanted)
    chroma = service.store.query("sales-manager", vector, 50, wanted)
    assert [m.id for m in ours] == [m.id for m in chroma]
    assert ours and {m.metadata["section"] for m in ours} <= set(wanted)
    assert index.search(vector, 5, ["No Such Section"]) == []


def test_build_normalises_and_refuses_missing_vectors() -> None:
    chunks = [StoredChunk("p/a", {"section": "A"}, np.array([3.0, 4.0])),
              StoredChunk("p/b", {"section": "B"}, np.array([0.0, 2.0]))]
    index = DenseIndex.build(chunks)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0)
    top = index.search(np.array([0.0, 1.0]), 1)
    assert [m.id for m in top] == ["p/b"] and top[0].distance == pytest.approx(0.0, abs=1e-6)
    assert DenseIndex.build([]).search(np.array([1.0, 0.0]), 3) == []
    with pytest.raises(ValueError, match="p/c"):
        DenseIndex.build([StoredChunk("p/c", {"section": "A"})])


def test_a_persona_over_the_limit_is_searched_through_chroma(service: PersonaService,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The hybrid preset: the sidecar's examples are only used in memory, so compare a preset without them."""
    hybrid = service.settings.model_copy(update={"retrieval": "hybrid"})
    exact = PersonaService(hybrid, embedder=service.embedder, store=service.store).retrieve(
        "What does OTE mean in a job offer?", k=10)[1]
    fresh = PersonaService(hybrid, embedder=service.embedder, store=service.store)
    monkeypatch.setattr("retrieval.service.EXACT_LIMIT", 10)
    assert fresh._persona_indexes(fresh.persona("sales-manager"))[1] is None
    through_chroma = fresh.retrieve("What does OTE mean in a job offer?", k=10)[1]
    assert [h.id for h in through_chroma] == [h.id for h in exact]
    assert [h.score for h in through_chroma] == pytest.approx([h.score for h in exact], abs=1e-5)
    assert dense.EXACT_LIMIT > 10_000
