"""The offline support judge, shared by answer checking and the eval harness.

A cited sentence is *supported* by a passage when most of its words appear in the passage in the
same order: ROUGE-L precision of the sentence against the passage (``rouge-score``, Porter
stemming) is at least :data:`SUPPORT_THRESHOLD`. The persona's short framing lead-in ("My rule of
thumb:") is not judged; a sentence that paraphrases freely or invents content falls below it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from retrieval.text import MARKER, strip_markdown

SUPPORT_THRESHOLD = 0.5
MAX_FRAME_WORDS = 8
_CITED = re.compile(r"(?P<body>.+?)(?P<marks>(?:\s*\[\d{1,3}\])+)(?=\s|$)", re.DOTALL)


@dataclass(frozen=True)
class CitedSentence:
    """A sentence of an answer and the citation numbers that follow it."""

    text: str
    markers: list[int]


@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def claim_of(sentence: str) -> str:
    """The sentence without markers and without a short lead-in ("My rule of thumb: ...").

    A lead-in of at most :data:`MAX_FRAME_WORDS` words ending in a colon is the persona's framing,
    not a claim about the card, and is not judged.
    """
    text = strip_markdown(MARKER.sub(" ", sentence))
    head, colon, rest = text.partition(": ")
    if colon and rest.strip() and len(head.split()) <= MAX_FRAME_WORDS:
        return rest.strip()
    return text


def support_score(sentence: str, passage: str) -> float:
    """Share of the claim's words found in order in the passage (ROUGE-L precision), in [0, 1]."""
    sentence = claim_of(sentence)
    passage = strip_markdown(passage)
    if not sentence.strip() or not passage.strip():
        return 0.0
    return float(_scorer().score(passage, sentence)["rougeL"].precision)


def is_supported(sentence: str, passage: str, threshold: float = SUPPORT_THRESHOLD) -> bool:
    return support_score(sentence, passage) >= threshold


def cited_sentences(answer: str) -> list[CitedSentence]:
    """Split an answer into sentences, each with the ``[n]`` markers that close it.

    Text after the last marker is returned as a sentence with no markers (an uncited claim).
    """
    out: list[CitedSentence] = []
    end = 0
    for match in _CITED.finditer(answer):
        body = match.group("body").strip()
        if body:
            out.append(CitedSentence(body, [int(n) for n in MARKER.findall(match.group("marks"))]))
        end = match.end()
    tail = answer[end:].strip()
    if tail and re.search(r"[A-Za-z]{3}", tail):
        out.append(CitedSentence(tail, []))
    return out
