"""The coverage judgement (retrieval/stages/coverage.py) and its calibration (eval/calibration.py)."""

from __future__ import annotations

import pytest

from eval.calibration import derive_coverage
from retrieval.settings import DERIVED_THRESHOLDS, Settings
from retrieval.stages.coverage import judge


def test_judge_refuses_low_scores_and_questions_nearer_the_boundary() -> None:
    assert judge(0.30, 0.0, 0.4, 0.1, 0.5).confidence == "none"  # below min_score
    assert judge(0.60, 0.75, 0.4, 0.1, 0.5).confidence == "none"  # the boundary beats it by more than the margin
    assert judge(0.60, 0.65, 0.4, 0.1, 0.5).confidence == "high"  # within the margin
    assert judge(0.45, 0.0, 0.4, 0.1, 0.5).confidence == "low"  # covered, but weakly: the closest guidance
    assert judge(0.45, 0.0, 0.4, 0.1, 0.5).covered


def test_derive_coverage_refuses_every_dev_off_topic_question() -> None:
    in_scope = [(0.5 + i / 100, 0.2) for i in range(20)] + [(0.45, 0.7)]
    out_of_scope = [(0.40, 0.3), (0.48, 0.75), (0.2, 0.1)]
    derived = derive_coverage(in_scope, out_of_scope)
    assert derived.out_of_scope_answered == 0
    for top, boundary in out_of_scope:
        assert judge(top, boundary, derived.min_score, derived.boundary_margin, derived.confident_score).confidence \
            == "none"
    assert derived.in_scope_refused == sum(
        judge(t, b, derived.min_score, derived.boundary_margin, derived.confident_score).confidence == "none"
        for t, b in in_scope)
    assert derived.in_scope_refused <= 1 and derived.min_score <= derived.confident_score


def test_each_packaged_model_gets_the_thresholds_derived_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().min_score == DERIVED_THRESHOLDS["all-MiniLM-L6-v2"]["min_score"]
    mpnet = Settings(model="sentence-transformers/all-mpnet-base-v2")
    assert (mpnet.min_score, mpnet.boundary_margin, mpnet.confident_score) == tuple(
        DERIVED_THRESHOLDS["all-mpnet-base-v2"].values())
    monkeypatch.setenv("PERSONA_MODEL", "all-mpnet-base-v2")
    monkeypatch.setenv("PERSONA_MIN_SCORE", "0.5")
    assert Settings().min_score == 0.5 and Settings().confident_score == DERIVED_THRESHOLDS["all-mpnet-base-v2"][
        "confident_score"]
