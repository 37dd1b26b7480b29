"""The seed card chunked: sections, items, ids, texts. Pure functions, no model."""

from __future__ import annotations

from ingest.cards import load_card
from ingest.chunking import chunk_card, items_of, slug
from tests.conftest import SEED


def chunks_by_id() -> dict:
    return {c.id: c for c in chunk_card(load_card(SEED))}


def test_seed_has_twenty_sections_each_with_a_section_chunk() -> None:
    card = load_card(SEED)
    assert len(card.sections) == 20
    sections = [c for c in chunk_card(card) if c.kind == "section"]
    assert [c.section for c in sections] == [s.heading for s in card.sections]


def test_guiding_principles_items_are_slugs_of_their_bold_leads() -> None:
    ids = [i for i in chunks_by_id() if i.startswith("sales-manager/guiding-principles/")]
    assert ids == [
        "sales-manager/guiding-principles/coach-the-seller-not-just-the-deal",
        "sales-manager/guiding-principles/inspect-what-you-expect",
        "sales-manager/guiding-principles/the-forecast-is-a-promise-not-a-hope",
        "sales-manager/guiding-principles/hire-slow-manage-out-fast-ish",
        "sales-manager/guiding-principles/comp-drives-behavior-design-it-like-it-matters",
        "sales-manager/guiding-principles/protect-the-teams-focus-and-morale",
    ]


def test_workflow_numbered_steps_and_scenario_paragraphs_are_items() -> None:
    chunks = chunks_by_id()
    workflow = [c for c in chunks.values() if c.section == "Workflow" and c.kind == "item"]
    assert [c.item for c in workflow] == ["Build the team", "Set the plan", "Run the cadence", "Coach",
                                          "Forecast and report", "Manage performance", "Improve the system"]
    scenarios = [c.id for c in chunks.values() if c.section == "Scenarios" and c.kind == "item"]
    assert scenarios == [
        "sales-manager/scenarios/a-forecast-that-doesnt-add-up",
        "sales-manager/scenarios/a-top-rep-on-a-comp-plan-thats-backfiring",
        "sales-manager/scenarios/an-underperformer-coach-or-part-ways",
    ]


def test_items_without_bold_lead_get_ordinal_ids() -> None:
    chunks = chunks_by_id()
    rule = chunks["sales-manager/rules-of-thumb/item-1"]
    assert rule.text.startswith("If you're closing the deals yourself")
    assert "sales-manager/rules-of-thumb/item-7" in chunks
    assert "sales-manager/rules-of-thumb/item-8" not in chunks


def test_prose_sections_have_only_their_section_chunk() -> None:
    chunks = chunks_by_id()
    for section in ("purpose", "core-mission", "collaboration", "ethics", "related-occupations"):
        assert f"sales-manager/{section}" in chunks
        assert not [i for i in chunks if i.startswith(f"sales-manager/{section}/")]


def test_overview_carries_title_aliases_summary_related_and_sources() -> None:
    overview = chunks_by_id()["sales-manager/overview"]
    assert overview.section == "Overview"
    for needle in ("Sales Manager", "Head of Sales", "predictable revenue engine", "sales engineer",
                   "The Sales Acceleration Formula"):
        assert needle in overview.text


def test_embedded_text_carries_context_and_shown_text_is_the_cards_markdown() -> None:
    chunk = chunks_by_id()["sales-manager/guiding-principles/inspect-what-you-expect"]
    assert chunk.embed_text.startswith("As a Sales Manager, Guiding Principles > Inspect what you expect: ")
    assert chunk.text == ("**Inspect what you expect.** Reps do what's measured and reviewed; a process and "
                          "pipeline that aren't inspected decay into wishful thinking.")


def test_ids_are_unique_and_hashes_stable() -> None:
    first, second = chunk_card(load_card(SEED)), chunk_card(load_card(SEED))
    assert len({c.id for c in first}) == len(first)
    assert [(c.id, c.content_hash) for c in first] == [(c.id, c.content_hash) for c in second]


def test_items_of_joins_continuation_lines_and_dedupes_slugs() -> None:
    items = items_of("- **Same.** one\n  more\n- **Same.** two\n- plain item")
    assert [i.title for i in items] == ["Same", "Same", None]
    assert items[0].markdown == "**Same.** one more"
    assert slug("Hire slow, manage out fast(ish).") == "hire-slow-manage-out-fast-ish"
    assert slug("Don't") == "dont"
