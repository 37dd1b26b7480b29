"""Stage: the Overview prior (the overview names the persona, as most questions do)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.search import OVERVIEW_WEIGHT, overview_prior
from retrieval.stages.base import State


@dataclass(frozen=True)
class OverviewPrior:
    """``scored`` -> ``scored``: the Overview chunk's score times ``weight``, so it leads only when clearly closest."""

    weight: float = OVERVIEW_WEIGHT
    reads: ClassVar[tuple[str, ...]] = ("scored",)
    writes: ClassVar[tuple[str, ...]] = ("scored",)
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        overview_prior(state.scored, self.weight)
