"""The abstention threshold (``Settings.min_score``), derived from data rather than guessed.

Rule (:func:`derive_threshold`), applied to the best retrieval score of each dev-set question:
let ``o`` be the highest score of any out-of-scope question and ``q`` the lowest in-scope score
once the lowest ``max_refused`` share of in-scope questions is allowed to be refused
(``floor(max_refused * n)`` of them). When ``o < q`` the threshold is the midpoint of the gap,
the largest margin on both sides; when they overlap, refusing every out-of-scope question comes
first and the threshold sits just above ``o``. ``persona eval`` reports the derived value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_REFUSED = 0.02
STEP = 0.001


@dataclass(frozen=True)
class Calibration:
    """A derived threshold and the two scores it was placed between."""

    threshold: float
    out_of_scope_max: float
    in_scope_floor: float
    in_scope: int
    out_of_scope: int


def derive_threshold(in_scope: Sequence[float], out_of_scope: Sequence[float],
                     max_refused: float = MAX_REFUSED) -> Calibration:
    """The abstention threshold by the rule in the module docstring, rounded to :data:`STEP`."""
    if not in_scope or not out_of_scope:
        raise ValueError("need in-scope and out-of-scope scores to derive a threshold")
    ordered = sorted(in_scope)
    floor = ordered[min(math.floor(max_refused * len(ordered)), len(ordered) - 1)]
    top_out = max(out_of_scope)
    if top_out < floor:
        threshold = round((top_out + floor) / 2 / STEP) * STEP
    else:
        threshold = math.floor(top_out / STEP) * STEP + STEP
    return Calibration(round(threshold, 3), top_out, floor, len(in_scope), len(out_of_scope))


@dataclass(frozen=True)
class CoverageCalibration:
    """The three thresholds of the coverage judgement (``retrieval/stages/coverage.py``), derived together."""

    min_score: float
    boundary_margin: float
    confident_score: float
    in_scope_refused: int
    out_of_scope_answered: int
    in_scope: int
    out_of_scope: int


MARGINS = [round(-0.2 + i * 0.005, 3) for i in range(81)]  # boundary margins tried, -0.2 ... 0.2
CONFIDENT_SHARE = 0.10  # the weakest tenth of dev's answered in-scope questions is answered as "closest guidance"


def derive_coverage(in_scope: Sequence[tuple[float, float]], out_of_scope: Sequence[tuple[float, float]],
                    confident_share: float = CONFIDENT_SHARE) -> CoverageCalibration:
    """``min_score``, ``boundary_margin`` and ``confident_score`` from dev questions' (top, boundary) scores.

    A question is refused when ``top < min_score`` or ``boundary > top + margin``. For each margin
    the smallest ``min_score`` that refuses every out-of-scope question is found (a step above the
    best top score the margin lets through), then placed midway to the weakest in-scope question it
    would still answer, for the largest distance on both sides. The margin that refuses the fewest
    in-scope questions wins; ties go to the middle of the tied run of margins (the least tuned
    choice). ``confident_score`` is the top score below which the weakest ``confident_share`` of
    the answered in-scope questions fall: those are answered as the card's closest guidance.
    """
    if not in_scope or not out_of_scope:
        raise ValueError("need in-scope and out-of-scope scores to derive the coverage thresholds")
    results = []
    for margin in MARGINS:
        through = [top for top, boundary in out_of_scope if boundary <= top + margin]
        needed = math.floor(max(through) / STEP) * STEP + STEP if through else 0.0
        kept = [top for top, boundary in in_scope if boundary <= top + margin and top >= needed]
        threshold = round((needed + min(kept)) / 2 / STEP) * STEP if through and kept else needed
        refused = sum(1 for top, boundary in in_scope if top < threshold or boundary > top + margin)
        answered = sum(1 for top, boundary in out_of_scope if top >= threshold and boundary <= top + margin)
        results.append((answered, refused, margin, round(threshold, 3)))
    best = min((a, r) for a, r, _, _ in results)
    tied = [(m, t) for a, r, m, t in results if (a, r) == best]
    margin, threshold = tied[len(tied) // 2]
    answered_tops = sorted(top for top, boundary in in_scope if top >= threshold and boundary <= top + margin)
    confident = answered_tops[min(int(confident_share * len(answered_tops)), len(answered_tops) - 1)] \
        if answered_tops else threshold
    return CoverageCalibration(threshold, margin, round(max(confident, threshold), 3), best[1], best[0],
                               len(in_scope), len(out_of_scope))
