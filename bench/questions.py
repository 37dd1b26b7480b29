"""The questions the bench asks: the eval sets' questions, realistic in wording and length."""

from __future__ import annotations

import random

from eval.sets import default_sets, load_set


def bench_questions(seed: int | None = None) -> list[str]:
    """Every question of the shipped eval sets (shuffled with ``seed`` when given)."""
    found = [q.question for path in default_sets() for q in load_set(path).questions]
    if seed is not None:
        random.Random(seed).shuffle(found)
    return found
