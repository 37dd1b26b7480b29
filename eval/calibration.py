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
