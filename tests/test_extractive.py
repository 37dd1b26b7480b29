"""The extractive generator's logic on crafted hits, with a deterministic scorer (no model)."""

from __future__ import annotations

from generation.extractive import candidates, extractive_answer
from retrieval.text import markers, sentences
from retrieval.types import Hit, PersonaInfo

INFO = PersonaInfo(slug="sales-manager", title="Sales Manager", aliases=[], summary="", sections=[], chunks=0)


def hit(id_: str, section: str, item: str | None, text: str, score: float, rank: int) -> Hit:
    return Hit(id_, "sales-manager", "item" if item else "section", section, item, text, score, rank)


HITS = [
    hit("sales-manager/rules-of-thumb/item-2", "Rules of Thumb", "Watch pipeline coverage…",
        "Watch pipeline coverage — the missed quarter is visible months before it happens.", 0.7, 1),
    hit("sales-manager/mental-models/pipeline-coverage", "Mental Models", "Pipeline coverage",
        "**Pipeline coverage.** You need several multiples of the quota in qualified pipeline because most deals "
        "don't close. Thin coverage now is a missed number later.", 0.65, 2),
    hit("sales-manager/mental-models", "Mental Models", None,
        "- **Pipeline coverage.** You need several multiples of the quota in qualified pipeline because most deals "
        "don't close. Thin coverage now is a missed number later.", 0.6, 3),
]


def by_length(texts: list[str]) -> list[float]:
    return [min(1.0, len(t) / 100) for t in texts]


def test_sentences_keep_abbreviations_together() -> None:
    assert sentences("Diagnose skill vs. will first. Then act.") == ["Diagnose skill vs. will first.", "Then act."]


def test_candidates_prefer_the_item_over_its_section_and_drop_bold_leads() -> None:
    pool = candidates(HITS)
    texts = [c.sentence for c in pool]
    assert len(texts) == len(set(texts)) == 3
    assert all(c.hit.kind == "item" for c in pool)
    assert not any(t.startswith("Pipeline coverage.") for t in texts)


def test_answer_markers_resolve_to_citations_in_order_of_use() -> None:
    answer = extractive_answer(INFO, "How much pipeline?", HITS, by_length, min_score=0.3)
    assert answer.grounded and answer.generator == "extractive"
    used = markers(answer.text)
    assert sorted(set(used)) == [c.n for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    assert {c.id for c in answer.citations} <= {h.id for h in HITS}
    assert 2 <= len(used) <= 4
    assert "My rule of thumb:" in answer.text or "The way I think about pipeline coverage:" in answer.text


def test_weak_best_hit_is_not_covered_and_names_nearest_sections() -> None:
    weak = [hit(h.id, h.section, h.item, h.text, 0.1, h.rank) for h in HITS]
    answer = extractive_answer(INFO, "How do I bake bread?", weak, by_length, min_score=0.3)
    assert not answer.grounded and answer.citations == [] and markers(answer.text) == []
    assert "Rules of Thumb" in answer.text and "Mental Models" in answer.text
    assert [n.section for n in answer.nearest] == ["Rules of Thumb", "Mental Models"]


def test_run_on_lists_are_not_used_as_sentences() -> None:
    listing = "Related occupations: " + "; ".join(f"role {i} (kind): does thing {i}" for i in range(12)) + "."
    long_hit = hit("sales-manager/overview", "Overview", None, listing, 0.9, 1)
    assert candidates([long_hit]) == []


def test_each_titled_item_of_a_section_passage_keeps_its_frame() -> None:
    vocabulary = hit("sales-manager/vocabulary", "Vocabulary", None,
                     "- **Quota** — the revenue target a rep or team must hit.\n"
                     "- **OTE** — on-target earnings; total comp at 100% of quota.", 0.8, 1)
    answer = extractive_answer(INFO, "quota and OTE?", [vocabulary], by_length, min_score=0.3)
    assert "When I say quota, I mean the revenue target" in answer.text
    assert "When I say OTE, I mean on-target earnings" in answer.text
