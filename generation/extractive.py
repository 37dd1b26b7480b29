"""The ``extractive`` generator: an answer in the persona's voice made of the card's own sentences.

No language model. Passages are chosen first, then sentences: a retrieved passage is cited only
when it is clearly among the best for the question (at most :data:`MAX_PASSAGES`, often one), and
only its one or two sentences closest to the question are used, best passage first. Each sentence
is framed by the role of the section it comes from ("My rule of thumb:", "A trap I watch for:" ...,
the rows of :mod:`retrieval.sections`) and marked ``[n]`` with its passage, numbered in reading
order. Grounded by construction: every sentence is the card's text, every marker resolves to a
retrieved passage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from generation.base import Context, Similarity
from retrieval.sections import role_of
from retrieval.text import normalise_sentence, sentences, split_bold_lead, strip_markdown
from retrieval.types import Answer, Citation, Confidence, Hit, NearSection, PersonaInfo

GENERATOR = "extractive"
TENTATIVE = "The closest I have on that: {s}"
"""The lead-in of a ``low`` confidence answer's first sentence (a short lead-in the support judge skips)."""
PASSAGE_MARGIN = 0.0  # another passage is cited while its retrieval score is within this of the best one's
# Retrieval's order decides: the top passage, another only on a tie. Chosen on sales-manager-chat-dev with the
# tuned retrieval over mixing in the best sentence's similarity (cited passages on point 0.778 -> 0.871; weight
# of the sentence 0.3 / 0.2 / 0.1 / 0: 0.778 / 0.810 / 0.841 / 0.871), checked on -test (0.681 -> 0.758).
MAX_PASSAGES = 3
SENTENCE_MARGIN = 0.05  # a passage's second sentence must be this close to its best sentence
SENTENCES_PER_PASSAGE = 2
MAX_SENTENCE_WORDS = 45  # longer "sentences" are lists (the overview's related occupations), not answers


@dataclass(frozen=True)
class Candidate:
    """A sentence of a retrieved passage: the passage it cites, its place there, its score.

    ``order`` is its position in the passage (reading order); ``setup`` marks the opening
    situation of a story in a narrative section; ``retrieval`` is the best retrieval score of the
    passages that contain it; ``score`` its similarity to the question once scored.
    """

    sentence: str
    hit: Hit
    title: str | None
    score: float = 0.0
    order: int = 0
    setup: bool = False
    retrieval: float = 0.0


def candidates(hits: Sequence[Hit]) -> list[Candidate]:
    """Every distinct sentence of the hits, attributed to the most precise passage that has it.

    An item's bold lead is not a sentence of its own: it becomes the title the frame names.
    """
    chosen: dict[str, Candidate] = {}
    for hit in hits:
        narrative = role_of(hit.section).narrative
        order = 0
        for block in hit.text.splitlines():
            title, body = split_bold_lead(block)
            story = sentences(body)
            setup = max(1, len(story) // 2) if narrative else 0
            for index, sentence in enumerate(story):
                order += 1
                key = normalise_sentence(sentence)
                if len(key) < 12 or len(sentence.split()) > MAX_SENTENCE_WORDS:
                    continue
                existing = chosen.get(key)
                retrieval = max(hit.score, existing.retrieval if existing else 0.0)
                if existing is None or (existing.hit.kind != "item" and hit.kind == "item"):
                    shown = (title or hit.item) if hit.kind == "item" else title
                    chosen[key] = Candidate(sentence, hit, shown, order=order, setup=index < setup,
                                            retrieval=retrieval)
                else:
                    chosen[key] = replace(existing, retrieval=retrieval)
    return list(chosen.values())


def frame(candidate: Candidate, first_of_passage: bool) -> str:
    """The sentence in the persona's voice, introduced by the role of its section."""
    sentence = candidate.sentence.lstrip("\u2014\u2013- ").strip()
    if not first_of_passage:
        return sentence
    role = role_of(candidate.hit.section)
    title = candidate.title
    if not title or "{" not in role.frame.replace("{s}", ""):
        return role.untitled.format(s=sentence)
    title = title.rstrip(".\u2026").replace(": ", " \u2014 ").strip()
    lowered = _lower_first(title)
    return role.frame.format(t=lowered, T=title, ts=_titled(lowered, sentence), s=sentence)


def _titled(title: str, sentence: str) -> str:
    """"comp plan backfire" + "incentives that ..." -> "comp plan backfire \u2014 incentives that ..."."""
    return f"{title} {sentence}" if sentence.startswith("(") else f"{title} \u2014 {sentence}"


def tentative(candidate: Candidate) -> str:
    """A ``low`` confidence answer's first sentence: :data:`TENTATIVE`, with the item's title when it has one
    (a titled item's text goes on from its title: "incentives that drive discounting" needs "comp plan backfire")."""
    sentence = candidate.sentence.lstrip("\u2014\u2013- ").strip()
    named = "{" in role_of(candidate.hit.section).frame.replace("{s}", "")  # as frame(): sections that name titles
    title = (candidate.title or "").rstrip(".\u2026").replace(": ", " \u2014 ").strip() if named else ""
    return TENTATIVE.format(s=_titled(_lower_first(title), sentence) if title else sentence)


def _lower_first(text: str) -> str:
    """"A forecast" -> "a forecast", "Pipeline coverage" -> "pipeline coverage"; "OTE", "CRM" stay."""
    word = text.split(maxsplit=1)[0] if text.strip() else ""
    if len(word) == 1 or word[1:].islower():
        return text[0].lower() + text[1:]
    return text


def strength(passage: Sequence[Candidate]) -> float:
    """How well a passage answers: its retrieval score."""
    return max(c.retrieval for c in passage)


def select(scored: Sequence[Candidate]) -> list[Candidate]:
    """Passages first, then sentences: the best passages' best sentences, ready to compose.

    A passage is kept while its :func:`strength` is within :data:`PASSAGE_MARGIN` of the best
    one's (at most :data:`MAX_PASSAGES`); nothing is forced, one passage is a fine answer. From
    each, its best sentence and a second one within :data:`SENTENCE_MARGIN` of it, in reading
    order; a story's set-up sentence is never cited. The best passage comes first.
    """
    passages: dict[str, list[Candidate]] = {}
    for candidate in scored:
        passages.setdefault(candidate.hit.id, []).append(candidate)
    citable = {pid: [c for c in group if not c.setup] for pid, group in passages.items()}
    # Ties in strength go to the passage with the best sentence.
    ranked = sorted((group for pid, group in passages.items() if citable[pid]),
                    key=lambda group: (strength(group), max(c.score for c in group)), reverse=True)
    if not ranked:
        return []
    best = strength(ranked[0])
    picked: list[Candidate] = []
    for group in ranked[:MAX_PASSAGES]:
        if strength(group) < best - PASSAGE_MARGIN:
            break
        options = sorted(citable[group[0].hit.id], key=lambda c: c.score, reverse=True)
        top = options[0].score
        kept = [c for c in options if c.score >= top - SENTENCE_MARGIN][:SENTENCES_PER_PASSAGE]
        picked.extend(sorted(kept, key=lambda c: c.order))
    return picked


def compose(info: PersonaInfo, question: str, chosen: Sequence[Candidate], hits: Sequence[Hit],
            confidence: Confidence = "high") -> Answer:
    """Number the cited passages in order of first use and join the framed sentences.

    A ``low`` confidence answer opens with :data:`TENTATIVE`: the closest guidance, said to be such.
    """
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
        if confidence == "low" and not parts:
            text = tentative(candidate).rstrip()
        else:
            text = frame(candidate, needs_frame).rstrip()
        if text[-1:] not in ".!?":
            text += "."
        parts.append(f"{text} [{numbers[hit.id]}]")
    return Answer(info.slug, question, " ".join(parts), citations, True, GENERATOR, hits=list(hits),
                  confidence=confidence)


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
    confidence: Confidence | None = None,
) -> Answer:
    """Answer from the hits, or say the card does not cover the question.

    ``similarity`` scores sentences against the question (cosine of embeddings in the service).
    ``confidence`` is the retrieval's judgement (:class:`retrieval.types.Coverage`); without it the
    best hit's score against ``min_score`` decides between ``high`` and ``none``.
    """
    if confidence is None:
        confidence = "high" if hits and hits[0].score >= min_score else "none"
    if not hits or confidence == "none":
        return not_covered(info, question, hits)
    pool = candidates(hits)
    if not pool:
        return not_covered(info, question, hits)
    sims = similarity([strip_markdown(c.sentence) for c in pool])
    chosen = select([replace(c, score=s) for c, s in zip(pool, sims, strict=True)])
    if not chosen:
        return not_covered(info, question, hits)
    return compose(info, question, chosen, hits, confidence)


@dataclass(frozen=True)
class Extractive:
    """The card's own sentences; there is no model to give the client's instructions to."""

    name: str = GENERATOR
    cpu_only: ClassVar[bool] = True  # waits on nothing (no network, no disk): servers may run it on their event loop

    def answer(self, context: Context) -> Answer:
        return extractive_answer(context.info, context.question, context.hits, context.similarity,
                                 context.settings.min_score, context.confidence)
