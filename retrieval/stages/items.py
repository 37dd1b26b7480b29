"""Stage: item-level retrieval, the card's most precise passages (a section only when it has no items)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.stages.base import State


@dataclass(frozen=True)
class ItemLevel:
    """``candidates`` -> ``candidates``: a section's whole-section chunk is dropped when its items are indexed,
    so a section is ranked by its best item."""

    reads: ClassVar[tuple[str, ...]] = ("candidates", "corpus")
    writes: ClassVar[tuple[str, ...]] = ("candidates",)
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        with_items = state.corpus.indexes.keywords.sections_with_items
        state.candidates = [m for m in state.candidates
                            if not (m.metadata.get("kind") == "section" and m.metadata.get("section") in with_items)]
