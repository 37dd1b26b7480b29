"""A persona's sidecar in memory: example questions that point at passages, the passages' vectors tuned
to them, and the boundary.

Built from the stored chunks of kind ``example``, ``tuned`` and ``boundary`` (see ``ingest/examples.py``)
beside the passages' :class:`retrieval.dense.DenseIndex`, from the same read of the store.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from retrieval.store import StoredChunk

GENERIC_BOUNDARY = Path(__file__).resolve().parent / "generic_boundary.yaml"


def generic_questions() -> list[str]:
    """The generic boundary: questions people type into an occupation persona's chat that no occupation's card
    answers (far topics, work-adjacent law, pay, HR and software questions, chit-chat)."""
    data = yaml.safe_load(GENERIC_BOUNDARY.read_text(encoding="utf-8"))
    return list(dict.fromkeys(q.strip() for q in data["not_covered"]))


def _unit(rows: list[np.ndarray], dimension: int) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), dimension)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


@dataclass(frozen=True)
class ExampleIndex:
    """Example vectors with the id of the passage each points at, tuned passage vectors, the boundary's vectors."""

    parents: list[str]
    vectors: np.ndarray
    boundary: np.ndarray
    tuned_ids: tuple[str, ...] = ()
    tuned: np.ndarray | None = None

    @classmethod
    def build(cls, chunks: Sequence[StoredChunk], passage_ids: set[str]) -> ExampleIndex:
        """From a persona's stored chunks; examples whose passage is not among ``passage_ids`` are left out."""
        examples = [c for c in chunks if c.metadata.get("kind") == "example" and c.embedding is not None
                    and c.metadata.get("parent") in passage_ids]
        boundary = [c for c in chunks if c.metadata.get("kind") == "boundary" and c.embedding is not None]
        tuned = [c for c in chunks if c.metadata.get("kind") == "tuned" and c.embedding is not None
                 and c.metadata.get("parent") in passage_ids]
        with_vector = next((c for c in chunks if c.embedding is not None), None)
        dimension = len(with_vector.embedding) if with_vector is not None and with_vector.embedding is not None else 0
        examples.sort(key=lambda c: str(c.metadata["parent"]))  # each passage's examples side by side
        # the passage's own id object for each of its ~20 examples, not a copy each (100 cards: ~17 MB of copies)
        passage = {pid: pid for pid in passage_ids}
        return cls([passage[str(c.metadata["parent"])] for c in examples],
                   _unit([c.embedding for c in examples], dimension),
                   _unit([c.embedding for c in boundary], dimension),
                   tuple(passage[str(c.metadata["parent"])] for c in tuned),
                   _unit([c.embedding for c in tuned], dimension) if tuned else None)

    def best_by_passage(self, vector: np.ndarray) -> dict[str, float]:
        """The highest cosine of ``vector`` to any example of each passage that has examples."""
        if not self.parents:
            return {}
        similarity = self.vectors @ np.asarray(vector, dtype=np.float32)
        return dict(zip(self._groups[0], np.maximum.reduceat(similarity, self._groups[1]).tolist(), strict=True))

    @functools.cached_property
    def _groups(self) -> tuple[list[str], np.ndarray]:
        """Each passage with examples, and the row where its run of examples starts (``parents`` is sorted)."""
        starts = [i for i, parent in enumerate(self.parents) if i == 0 or parent != self.parents[i - 1]]
        return [self.parents[i] for i in starts], np.asarray(starts, dtype=np.intp)

    def tuned_by_passage(self, vector: np.ndarray) -> dict[str, float]:
        """The cosine of ``vector`` to each passage's tuned vector (passages without one are absent)."""
        if self.tuned is None:
            return {}
        return dict(zip(self.tuned_ids, (self.tuned @ np.asarray(vector, dtype=np.float32)).tolist(), strict=True))

    def boundary_score(self, vector: np.ndarray) -> float:
        """The highest cosine of ``vector`` to a question the card does not cover (0 when there are none)."""
        if not len(self.boundary):
            return 0.0
        return max(0.0, float(np.max(self.boundary @ np.asarray(vector, dtype=np.float32))))
