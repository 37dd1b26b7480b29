"""The one table of card section roles: what each heading is for and how the persona voices it.

Read by the extractive composer (the frame that introduces a sentence), the prompts (the
sections that make the persona's identity) and ingest (which sections fill :class:`PersonaInfo`).
A heading not in the table gets :data:`DEFAULT_ROLE`.

A frame has ``{s}`` for the sentence and, in ``frame``, ``{t}`` for the item's title (its bold
lead); ``untitled`` is used when there is no title.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SectionRole:
    """One row: a card heading, its role, its answer frames and the kind of question it answers."""

    heading: str
    role: str
    frame: str
    untitled: str
    intent: str
    title_as_written: bool = False  # item titles are names (tools): not lower-cased inside the frame


def _row(heading: str, role: str, frame: str, intent: str, untitled: str | None = None,
         title_as_written: bool = False) -> SectionRole:
    return SectionRole(heading, role, frame, frame if untitled is None else untitled, intent, title_as_written)


SECTION_ROLES: tuple[SectionRole, ...] = (
    _row("Overview", "identity", "About me: {s}", "who the persona is"),
    _row("Purpose", "purpose", "As I see my job: {s}", "why the job exists"),
    _row("Core Mission", "mission", "My mission, in short: {s}", "what the persona is there to achieve"),
    _row("Primary Responsibilities", "responsibility", "Day to day, this is my job: {s}", "what the persona does"),
    _row("Guiding Principles", "principle", "A principle I live by, {t}: {s}", "what the persona believes",
         untitled="A principle I live by: {s}"),
    _row("Mental Models", "model", "The way I think about {t}: {s}", "how the persona thinks about a topic",
         untitled="The way I think about it: {s}"),
    _row("First Principles", "axiom", "What I hold to be true: {s}", "what the persona takes as given"),
    _row("Questions Experts Constantly Ask", "question", "A question I keep asking myself: {s}",
         "what the persona checks"),
    _row("Decision Frameworks", "framework", "When I face this, I reach for {t}: {s}", "how to decide",
         untitled="When I face this, I weigh it like this: {s}"),
    _row("Workflow", "workflow", "In how I run the team, {t}: {s}", "how the work is run",
         untitled="In how I run the team: {s}"),
    _row("Common Tradeoffs", "tradeoff", "The tradeoff I weigh is {t}: {s}", "what to weigh against what",
         untitled="The tradeoff I weigh: {s}"),
    _row("Rules of Thumb", "rule", "My rule of thumb: {s}", "a quick rule to apply"),
    _row("Failure Modes", "trap", "The trap I watch for is {t}: {s}", "what goes wrong",
         untitled="The trap I watch for: {s}"),
    _row("Anti-Patterns", "refusal", "What I refuse to do is {t}: {s}", "what not to do",
         untitled="What I refuse to do: {s}"),
    _row("Vocabulary", "term", "When I say {t}, I mean {s}", "what a word means", untitled="In my vocabulary: {s}"),
    _row("Tools", "tool", "A tool I rely on, {t}: {s}", "what to use", untitled="A tool I rely on: {s}",
         title_as_written=True),
    _row("Collaboration", "collaboration", "How I work with others: {s}", "how to work with others"),
    _row("Ethics", "ethics", "Where I draw the line: {s}", "where the line is"),
    _row("Scenarios", "scenario", "I've been here, {t}: {s}", "what happened in a situation",
         untitled="I've been here: {s}"),
    _row("Related Occupations", "neighbour", "The people around me: {s}", "who the persona works beside"),
    _row("References", "reference", "What I'd point you to: {s}", "where to read more"),
)
DEFAULT_ROLE = _row("", "experience", "From my experience with {t}: {s}", "anything else",
                    untitled="From my experience: {s}")

_BY_HEADING = {row.heading.lower(): row for row in SECTION_ROLES}
_BY_ROLE = {row.role: row for row in SECTION_ROLES}


def role_of(heading: str) -> SectionRole:
    """The row of a card heading (any case, surrounding spaces ignored), or :data:`DEFAULT_ROLE`."""
    return _BY_HEADING.get(heading.strip().lower(), DEFAULT_ROLE)


def heading_of(role: str) -> str:
    """The card heading that plays ``role`` (``"mission"`` -> ``"Core Mission"``)."""
    return _BY_ROLE[role].heading


MISSION = heading_of("mission")
PRINCIPLES = heading_of("principle")
