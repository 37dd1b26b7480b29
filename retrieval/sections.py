"""The one table of card section roles: what each heading is for and how the persona voices it.

Read by the extractive composer (the frame that introduces a sentence, and whether a passage is
a story whose opening is never cited), the prompts (the sections that make the persona's
identity) and ingest (which sections fill :class:`PersonaInfo`). A heading not in the table gets
:data:`DEFAULT_ROLE`.

Frames are short lead-ins ending in ": " (or naming a title the passage itself contains), so the
support judge checks the card's words only. ``{s}`` is the sentence. ``frame`` is used when the
sentence's item has a title (its bold lead) and may name it: ``{t}`` is the title with its first
letter lowered ("A forecast" -> "a forecast"; "OTE", "CRM" stay), ``{T}`` the title as written,
``{ts}`` the title joined to the sentence as the card writes a definition ("CRM (Salesforce,
HubSpot) — the system of record ..."). ``untitled`` is used when there is no title and has
``{s}`` only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SectionRole:
    """One row: a card heading, its role, its answer frames and the kind of question it answers.

    ``narrative``: the section's items are stories whose first sentence sets up the situation;
    the composer never cites the opening half of a story (at least its first sentence), only the
    sentences with the decision and the advice that follow.
    """

    heading: str
    role: str
    frame: str
    untitled: str
    intent: str
    narrative: bool = False


def _row(heading: str, role: str, frame: str, intent: str, untitled: str | None = None,
         narrative: bool = False) -> SectionRole:
    return SectionRole(heading, role, frame, frame if untitled is None else untitled, intent, narrative)


SECTION_ROLES: tuple[SectionRole, ...] = (
    _row("Overview", "identity", "About me: {T} {s}", "who the persona is", untitled="About me: {s}"),
    _row("Purpose", "purpose", "As I see my job: {s}", "why the job exists"),
    _row("Core Mission", "mission", "My mission, in short: {s}", "what the persona is there to achieve"),
    _row("Primary Responsibilities", "responsibility", "What the job involves: {s}", "what the persona does"),
    _row("Guiding Principles", "principle", "A principle I live by: {T}. {s}", "what the persona believes",
         untitled="A principle I live by: {s}"),
    _row("Mental Models", "model", "The way I think about {t}: {s}", "how the persona thinks about a topic",
         untitled="The way I think about it: {s}"),
    _row("First Principles", "axiom", "What I hold to be true: {s}", "what the persona takes as given"),
    _row("Questions Experts Constantly Ask", "question", "A question I keep asking myself: {s}",
         "what the persona checks"),
    _row("Decision Frameworks", "framework", "How I decide on {t}: {s}", "how to decide",
         untitled="How I decide: {s}"),
    _row("Workflow", "workflow", "In my workflow, I {t}: {s}", "how the work is run",
         untitled="In how I run the team: {s}"),
    _row("Common Tradeoffs", "tradeoff", "The tradeoff I weigh is {t}: {s}", "what to weigh against what",
         untitled="The tradeoff I weigh: {s}"),
    _row("Rules of Thumb", "rule", "My rule of thumb: {s}", "a quick rule to apply"),
    _row("Failure Modes", "trap", "A trap I watch for: {ts}", "what goes wrong",
         untitled="A trap I watch for: {s}"),
    _row("Anti-Patterns", "refusal", "What I refuse to do: {ts}", "what not to do",
         untitled="What I refuse to do: {s}"),
    _row("Vocabulary", "term", "When I say {t}, I mean {s}", "what a word means", untitled="In my vocabulary: {s}"),
    _row("Tools", "tool", "What I rely on: {ts}", "what to use", untitled="What I rely on: {s}"),
    _row("Collaboration", "collaboration", "How I work with others: {s}", "how to work with others"),
    _row("Ethics", "ethics", "Where I draw the line: {s}", "where the line is"),
    _row("Scenarios", "scenario", "I've faced {t}: {s}", "what happened in a situation",
         untitled="I've been here: {s}", narrative=True),
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
