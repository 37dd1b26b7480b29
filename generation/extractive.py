"""The ``extractive`` generator: an answer in the persona's voice made of the card's own sentences.

No language model: the best sentences of the retrieved passages are chosen, framed by the kind of
section they come from ("My rule of thumb:", "The trap I watch for:" ...), and marked ``[n]``
with their source. Grounded by construction: every sentence is the card's text, every marker
resolves to a retrieved passage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from generation.base import Context, Similarity
from retrieval.sections import role_of
from retrieval.text import normalise_sentence, sentences, split_bold_lead, strip_markdown
from retrieval.types import Answer, Citation, Hit, NearSection, PersonaInfo

GENERATOR = "extractive"
MIN_SENTENCES, MAX_SENTENCES = 2, 4
KEEP_WITHIN = 0.12  # a sentence is kept while its score is within this of the best one
SENTENCE_WEIGHT = 0.6  # sentence-to-question similarity vs. its passage's retrieval score
MAX_SENTENCE_WORDS = 45  # longer "sentences" are lists (the overview's related occupations), not answers

@dataclass(frozen=True)
class Candidate:
    """A sentence of a retrieved passage, with the passage it cites and its score."""

    sentence: str
    hit: Hit
    title: str | None
    score: float = 0.0


def candidates(hits: Sequence[Hit]) -> list[Candidate]:
    """Every distinct sentence of the hits, attributed to the most precise passage that has it.

    An item's bold lead is not a sentence of its own: it becomes the title the frame names.
    """
    chosen: dict[str, Candidate] = {}
    for hit in hits:
        for block in hit.text.splitlines():
            title, body = split_bold_lead(block)
            for sentence in sentences(body):
                key = normalise_sentence(sentence)
                if len(key) < 12 or len(sentence.split()) > MAX_SENTENCE_WORDS:
                    continue
                existing = chosen.get(key)
                if existing is None or (existing.hit.kind != "item" and hit.kind == "item"):
                    chosen[key] = Candidate(sentence, hit, title or hit.item if hit.kind == "item" else title)
    return list(chosen.values())


def frame(candidate: Candidate, first_of_passage: bool) -> str:
    """The sentence in the persona's voice, introduced by what kind of knowledge it is."""
    sentence = candidate.sentence.lstrip("—–- ").strip()
    if not first_of_passage:
        return sentence
    role = role_of(candidate.hit.section)
    title = candidate.title
    if title and "{t}" in role.frame:
        return role.frame.format(t=title if role.title_as_written else _lower_first(title), s=sentence)
    return role.untitled.format(s=sentence)


def _lower_first(text: str) -> str:
    if len(text) > 1 and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def select(scored: Sequence[Candidate]) -> list[Candidate]:
    """Two to four sentences, best first, within :data:`KEEP_WITHIN` of the best score."""
    ranked = sorted(scored, key=lambda c: c.score, reverse=True)
    if not ranked:
        return []
    best = ranked[0].score
    picked = [c for c in ranked if c.score >= best - KEEP_WITHIN][:MAX_SENTENCES]
    if len(picked) < MIN_SENTENCES:
        picked = ranked[:MIN_SENTENCES]
    return picked


def compose(info: PersonaInfo, question: str, chosen: Sequence[Candidate], hits: Sequence[Hit]) -> Answer:
    """Number the cited passages in order of first use and join the framed sentences."""
    numbers: dict[str, int] = {}
    framed: dict[str, str | None] = {}  # passage id -> the item title its last framed sentence named
    citations: list[Citation] = []
    parts: list[str] = []
    for candidate in chosen:
        hit = candidate.hit
        if hit.id not in numbers:
            numbers[hit.id] = len(numbers) + 1
            citations.append(Citation.of(numbers[hit.id], hit))
        needs_frame = hit.id not in framed or framed[hit.id] != candidate.title
        framed[hit.id] = candidate.title
        text = frame(candidate, needs_frame).rstrip()
        if text[-1:] not in ".!?":
            text += "."
        parts.append(f"{text} [{numbers[hit.id]}]")
    return Answer(info.slug, question, " ".join(parts), citations, True, GENERATOR, hits=list(hits))


def nearest_sections(hits: Sequence[Hit], limit: int = 3) -> list[NearSection]:
    """The distinct sections of the best hits, best first, with their section ids."""
    seen: dict[str, NearSection] = {}
    for hit in hits:
        if hit.section not in seen:
            section_id = hit.id.rsplit("/", 1)[0] if hit.kind == "item" else hit.id
            seen[hit.section] = NearSection(section_id, hit.section)
    return list(seen.values())[:limit]


def not_covered(info: PersonaInfo, question: str, hits: Sequence[Hit], generator: str = GENERATOR) -> Answer:
    """The persona says the card does not cover the question and names the nearest sections."""
    near = nearest_sections(hits)
    text = (f"That's not something I can speak to as a {info.title}: what I know doesn't cover it, "
            "and I won't make advice up.")
    if near:
        text += " The closest things I can talk about are " + _join([n.section for n in near]) + "."
    return Answer(info.slug, question, text, [], False, generator, hits=list(hits), nearest=near)


def _join(items: Sequence[str]) -> str:
    quoted = [f"“{i}”" for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def extractive_answer(
    info: PersonaInfo,
    question: str,
    hits: Sequence[Hit],
    similarity: Similarity,
    min_score: float,
) -> Answer:
    """Answer from the hits, or say the card does not cover the question.

    ``similarity`` scores sentences against the question (cosine of embeddings in the service).
    """
    if not hits or hits[0].score < min_score:
        return not_covered(info, question, hits)
    pool = candidates(hits)
    if not pool:
        return not_covered(info, question, hits)
    sims = similarity([strip_markdown(c.sentence) for c in pool])
    scored = [Candidate(c.sentence, c.hit, c.title, SENTENCE_WEIGHT * s + (1 - SENTENCE_WEIGHT) * c.hit.score)
              for c, s in zip(pool, sims, strict=True)]
    return compose(info, question, select(scored), hits)


@dataclass(frozen=True)
class Extractive:
    """The card's own sentences; there is no model to give the client's instructions to."""

    name: str = GENERATOR

    def answer(self, context: Context) -> Answer:
        return extractive_answer(context.info, context.question, context.hits, context.similarity,
                                 context.settings.min_score)
