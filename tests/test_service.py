"""The library facade with the real model and a real index: retrieve and ask."""

from __future__ import annotations

import pytest

from generation.service import PersonaService
from retrieval.embedder import CachedEmbedder
from retrieval.errors import InvalidQuery, UnknownPersona
from retrieval.text import markers


def test_retrieve_finds_pipeline_coverage_with_scores_in_unit_range(service: PersonaService) -> None:
    info, hits = service.retrieve("How much pipeline do I need to hit my quota?", k=5)
    assert info.slug == "sales-manager" and len(hits) == 5
    assert any("pipeline-coverage" in h.id or "coverage" in h.text for h in hits[:3])
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_section_filter_only_returns_that_section(service: PersonaService) -> None:
    _, hits = service.retrieve("forecast", sections=["rules-of-thumb"], k=3)
    assert hits and all(h.section == "Rules of Thumb" for h in hits)
    with pytest.raises(InvalidQuery, match="unknown section"):
        service.retrieve("forecast", sections=["Cooking"])


def test_ask_answers_in_first_person_with_resolving_citations(service: PersonaService) -> None:
    answer = service.ask("How much pipeline do I need to hit my quota?")
    assert answer.grounded
    used = set(markers(answer.text))
    assert used == {c.n for c in answer.citations}
    retrieved = {h.id for h in answer.hits}
    for citation in answer.citations:
        assert citation.id.startswith("sales-manager/") and citation.id in retrieved
    assert any(word in answer.text for word in (" I ", "My ", "I've"))


def test_off_topic_question_is_not_grounded(service: PersonaService) -> None:
    answer = service.ask("How do I bake sourdough bread?")
    assert not answer.grounded and not answer.citations and not markers(answer.text)
    assert "won't make advice up" in answer.text and answer.nearest


def test_unknown_persona_and_bad_input(service: PersonaService) -> None:
    with pytest.raises(UnknownPersona) as caught:
        service.ask("hello", persona="astronaut")
    assert caught.value.available == ["sales-manager"]
    with pytest.raises(InvalidQuery):
        service.ask("   ")
    with pytest.raises(InvalidQuery):
        service.retrieve("forecast", k=0)


def test_ask_events_stream_the_same_answer(service: PersonaService) -> None:
    events = list(service.ask_events("What does OTE mean?"))
    assert [e.type for e in events[:-1]] == ["delta"] * (len(events) - 1) and events[-1].type == "answer"
    assert "".join(e.text for e in events[:-1]) == events[-1].answer.text
    assert events[-1].answer.citations


def test_weakly_covered_questions_get_the_closest_guidance_framed_as_such(service: PersonaService) -> None:
    question = "How much pipeline do I need to hit my quota?"
    assert service.ask(question).confidence == "high"
    tentative = PersonaService(service.settings.model_copy(update={"confident_score": 0.99, "thresholds": "settings"}),
                               embedder=service.embedder, store=service.store)
    found = tentative.search(question)
    assert found.coverage.confidence == "low" and service.settings.min_score <= found.coverage.top < 0.99
    answer = tentative.ask(question)
    assert answer.grounded and answer.confidence == "low" and answer.citations
    assert answer.text.startswith("The closest I have on that: ")
    assert not tentative.ask("How do I bake sourdough bread?").grounded


def test_warm_up_embeds_every_card_sentence_once(seeded_settings, embedder) -> None:
    """After the start-up warm-up an answer embeds nothing of the card: its sentences are cached for good."""

    embedded: list[str] = []

    class Counting:
        name, dimension = embedder.name, embedder.dimension

        def encode(self, texts: list[str], batch_size: int = 64):
            embedded.extend(texts)
            return embedder.encode(texts, batch_size)

    service = PersonaService(seeded_settings, embedder=CachedEmbedder(Counting()))
    service.warm_up()
    warmed = len(embedded)
    assert warmed > 50 and len(set(embedded)) == warmed
    for question in ("How much pipeline do I need?", "How do I coach a rep who is behind?"):
        assert service.ask(question).grounded
    assert embedded[warmed:] == ["How much pipeline do I need?", "How do I coach a rep who is behind?"]
