"""Hybrid retrieval: BM25 keyword scores fused with dense cosine, through the service as users call it."""

from __future__ import annotations

from pathlib import Path

import pytest

from generation.service import PersonaService
from ingest.indexer import ingest
from retrieval.search import DENSE_WEIGHT, KEYWORD_WEIGHT, OVERVIEW_WEIGHT, KeywordIndex, hybrid_hits
from retrieval.settings import Settings
from retrieval.store import Match, Store, StoredChunk


def _meta(section: str, text: str) -> dict[str, object]:
    return {"persona": "p", "kind": "item", "section": section, "item": "", "text": text}


CHUNKS = [
    StoredChunk("p/a", _meta("Vocabulary", "OTE means on-target earnings: base plus variable pay.")),
    StoredChunk("p/b", _meta("Rules of Thumb", "Keep three times quota in pipeline coverage.")),
    StoredChunk("p/c", _meta("Ethics", "Never promise features that are not on the roadmap.")),
]


def test_keyword_scores_are_saturated_and_stemmed() -> None:
    index = KeywordIndex.build(CHUNKS)
    scores = index.scores("what do earnings mean?")
    assert scores.argmax() == 0 and all(0.0 <= s < 1.0 for s in scores)
    assert index.scores("promising a feature")[2] > 0  # "promising" ~ "promise" after stemming
    assert not index.scores("the and of").any()  # stop words only


def test_hybrid_fuses_dense_and_keyword_scores() -> None:
    index = KeywordIndex.build(CHUNKS)
    dense = [Match("p/b", CHUNKS[1].metadata, 0.5), Match("p/c", CHUNKS[2].metadata, 0.6)]  # cosines 0.5, 0.4
    hits = {h.id: h for h in hybrid_hits(dense, index, "on-target earnings", k=3)}
    keyword = index.scores("on-target earnings")
    assert keyword[0] > 0 and keyword[1] == keyword[2] == 0
    # p/a is found by keywords only: its dense part is the lowest candidate cosine (0.4)
    assert hits["p/a"].score == pytest.approx(DENSE_WEIGHT * 0.4 + KEYWORD_WEIGHT * float(keyword[0]), abs=1e-6)
    assert hits["p/b"].score == pytest.approx(DENSE_WEIGHT * 0.5)
    assert hits["p/c"].score == pytest.approx(DENSE_WEIGHT * 0.4)
    ranked = sorted(hits.values(), key=lambda h: h.rank)
    assert [h.rank for h in ranked] == [1, 2, 3]
    assert [h.score for h in ranked] == sorted(hits[i].score for i in hits)[::-1]
    assert [h.id for h in hybrid_hits(dense, index, "on-target earnings", k=3, sections=["Ethics"])] == ["p/c"]


def test_overview_chunk_is_weighted_down() -> None:
    meta = {**_meta("Overview", "Sales Manager (also: Head of Sales)."), "kind": "overview"}
    overview = StoredChunk("p/overview", meta)
    chunks = [*CHUNKS, overview]
    index = KeywordIndex.build(chunks)
    dense = [Match("p/overview", overview.metadata, 0.4), Match("p/b", CHUNKS[1].metadata, 0.4)]  # equal cosines
    hits = hybrid_hits(dense, index, "zzz", k=2)
    assert [h.id for h in hits] == ["p/b", "p/overview"]
    assert hits[1].score == pytest.approx(OVERVIEW_WEIGHT * DENSE_WEIGHT * 0.6)


def test_retrieve_ranks_the_vocabulary_item_first_with_unit_scores(service: PersonaService) -> None:
    _, hits = service.retrieve("What does OTE mean in a job offer?", k=10)
    assert hits[0].id == "sales-manager/vocabulary/ote"
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    _, top = service.retrieve("What does OTE mean in a job offer?", k=1)
    assert top[0].id == hits[0].id and top[0].score == hits[0].score  # the ranking does not depend on k


def test_keyword_index_follows_a_reingest(settings: Settings, seeds_dir: Path, embedder) -> None:
    store = Store(settings)
    ingest([seeds_dir], store, embedder, settings.model)
    service = PersonaService(settings, embedder=embedder, store=store)
    _, before = service.retrieve("zorblax", k=3)
    assert not any("zorblax" in h.text.lower() for h in before)
    card = seeds_dir / "sales-manager.yaml"
    text = card.read_text(encoding="utf-8")
    card.write_text(text.replace("      - **Quota** — the revenue target a rep or team must hit.",
                                 "      - **Zorblax** — a zorblax is a made-up word for this test.\n\n"
                                 "      - **Quota** — the revenue target a rep or team must hit."), encoding="utf-8")
    ingest([seeds_dir], store, embedder, settings.model)
    _, after = service.retrieve("zorblax", k=3)
    assert after[0].id == "sales-manager/vocabulary/zorblax"
