"""Stage: how well the card covers the query: answer, answer tentatively, or refuse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.settings import Settings
from retrieval.stages.base import State
from retrieval.types import Confidence, Coverage, PersonaInfo


def judge(top: float, boundary: float, min_score: float, boundary_margin: float, confident_score: float) -> Coverage:
    """``none`` when the best passage scores below ``min_score`` or the question is ``boundary_margin``
    closer to the card's boundary than to its best passage; ``high`` from ``confident_score`` on; else ``low``."""
    confidence: Confidence
    if top < min_score or boundary > top + boundary_margin:
        confidence = "none"
    elif top >= confident_score:
        confidence = "high"
    else:
        confidence = "low"
    return Coverage(confidence, round(top, 6), round(boundary, 6))


@dataclass(frozen=True)
class CoverageJudge:
    """``hits`` + ``support`` + ``boundary`` -> ``coverage``, with the card's own thresholds (recorded at ingest,
    ``ingest/calibrate.py``), else those of the settings (see :func:`thresholds_of`); the evidence judged is
    ``support`` when a stage measured it, else the best hit's score."""

    settings: Settings
    reads: ClassVar[tuple[str, ...]] = ("hits", "support", "boundary")
    writes: ClassVar[tuple[str, ...]] = ("coverage",)
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        top = state.support if state.support is not None else state.hits[0].score if state.hits else 0.0
        state.coverage = judge(top, state.boundary, *thresholds_of(state.info, self.settings))


def thresholds_of(info: PersonaInfo, settings: Settings) -> tuple[float, float, float]:
    """``(min_score, boundary_margin, confident_score)`` of a persona: its card's own when recorded (unless
    ``PERSONA_THRESHOLDS=settings``), else the settings'."""
    own = info.status.calibration if info.status else None
    if settings.thresholds == "card" and own is not None and own.recorded:
        return own.min_score, own.boundary_margin, own.confident_score  # type: ignore[return-value]
    return settings.min_score, settings.boundary_margin, settings.confident_score
