"""The one table of section roles, as the composer, the prompts and ingest read it."""

from __future__ import annotations

from retrieval.sections import DEFAULT_ROLE, MISSION, PRINCIPLES, SECTION_ROLES, heading_of, role_of


def test_every_heading_has_one_role_and_frames_that_take_the_sentence() -> None:
    headings = [r.heading.lower() for r in SECTION_ROLES]
    roles = [r.role for r in SECTION_ROLES]
    assert len(set(headings)) == len(headings) and len(set(roles)) == len(roles)
    for row in (*SECTION_ROLES, DEFAULT_ROLE):
        assert "{s}" in row.frame and "{s}" in row.untitled and "{t}" not in row.untitled and row.intent


def test_lookup_by_heading_and_by_role() -> None:
    assert role_of("  rules of THUMB ").role == "rule"
    assert role_of("Cooking") is DEFAULT_ROLE
    assert role_of("Tools").title_as_written and not role_of("Vocabulary").title_as_written
    assert (MISSION, PRINCIPLES) == ("Core Mission", "Guiding Principles")
    assert (heading_of("mission"), heading_of("principle")) == (MISSION, PRINCIPLES)
