"""Leakage between a card's sidecar and the eval sets: an eval question must not be a near-duplicate
of an example question (or a boundary question), or the eval would measure recall of the sidecar.

Two questions are near-duplicates when their embeddings' cosine is at least :data:`MAX_COSINE`
(all-MiniLM-L6-v2) or their normalised text is at least :data:`MAX_RATIO` alike (difflib). The
sidecar's examples were written without seeing the eval sets; the ones that still came out this
close to an eval question were dropped from the sidecar.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_COSINE = 0.85
MAX_RATIO = 0.8


@dataclass(frozen=True)
class NearDuplicate:
    question: str
    example: str
    cosine: float
    ratio: float


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def near_duplicates(questions: Sequence[str], examples: Sequence[str], question_vectors: np.ndarray,
                    example_vectors: np.ndarray) -> list[NearDuplicate]:
    """Every (question, closest example) pair over either limit. Vectors are unit-normalised rows."""
    if not len(questions) or not len(examples):
        return []
    cosines = question_vectors @ example_vectors.T
    plain = [normalise(e) for e in examples]
    found = []
    for i, question in enumerate(questions):
        j = int(np.argmax(cosines[i]))
        mine = normalise(question)
        if cosines[i, j] >= MAX_COSINE or any(_alike(mine, other) for other in plain):
            ratio = max(difflib.SequenceMatcher(None, mine, other).ratio() for other in plain)
            found.append(NearDuplicate(question, examples[j], float(cosines[i, j]), round(ratio, 3)))
    return found


def _alike(a: str, b: str) -> bool:
    """difflib's ratio of ``a`` and ``b`` is at least :data:`MAX_RATIO`; its cheap upper bounds first (as
    ``difflib.get_close_matches`` does), so most pairs never pay for the full ratio. (The ratio depends on the
    order of its arguments: callers that mean either way ask both.)"""
    matcher = difflib.SequenceMatcher(None, a, b)
    return matcher.real_quick_ratio() >= MAX_RATIO and matcher.quick_ratio() >= MAX_RATIO \
        and matcher.ratio() >= MAX_RATIO


def leaking(candidates: Sequence[str], questions: Sequence[str], candidate_vectors: np.ndarray,
            question_vectors: np.ndarray) -> set[str]:
    """The candidates (sidecar questions about to be written) that are near-duplicates of any of ``questions``
    (eval questions): cosine at least :data:`MAX_COSINE`, or text at least :data:`MAX_RATIO` alike."""
    if not len(candidates) or not len(questions):
        return set()
    closest = (candidate_vectors @ question_vectors.T).max(axis=1)
    plain = [normalise(q) for q in questions]

    def alike(candidate: str) -> bool:
        mine = normalise(candidate)
        return any(_alike(mine, other) or _alike(other, mine) for other in plain)

    return {c for c, cosine in zip(candidates, closest, strict=True) if cosine >= MAX_COSINE or alike(c)}
