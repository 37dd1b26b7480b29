"""The one table of section roles, as the composer, the prompts and ingest read it."""

from __future__ import annotations

import string

from retrieval.sections import DEFAULT_ROLE, MISSION, PRINCIPLES, SECTION_ROLES, heading_of, role_of


def test_every_heading_has_one_role_and_frames_that_take_the_sentence() -> None:
    headings = [r.heading.lower() for r in SECTION_ROLES]
    roles = [r.role for r in SECTION_ROLES]
    assert len(set(headings)) == len(headings) and len(set(roles)) == len(roles)
    for row in (*SECTION_ROLES, DEFAULT_ROLE):
        assert "{s}" in row.frame or "{ts}" in row.frame, row
        assert placeholders(row.frame) <= {"s", "t", "T", "ts"}, row
        assert placeholders(row.untitled) == {"s"} and row.intent, row


def placeholders(frame: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(frame) if name is not None}


def test_only_stories_are_narrative() -> None:
    assert [r.heading for r in SECTION_ROLES if r.narrative] == ["Scenarios"]
    assert not DEFAULT_ROLE.narrative


def test_lookup_by_heading_and_by_role() -> None:
    assert role_of("  rules of THUMB ").role == "rule"
    assert role_of("Cooking") is DEFAULT_ROLE
    assert role_of("Scenarios").narrative and not role_of("Vocabulary").narrative
    assert (MISSION, PRINCIPLES) == ("Core Mission", "Guiding Principles")
    assert (heading_of("mission"), heading_of("principle")) == (MISSION, PRINCIPLES)
