"""Eval metrics on small hand-computed cases."""

from __future__ import annotations

import math

import pytest

from eval.metrics import (
    CitationScore,
    abstention_score,
    adversarial_check,
    citation_score,
    citation_valid,
    cited_relevance,
    dedupe,
    first_on_point,
    hit_at_k,
    leaks,
    mean,
    ndcg_at_k,
    on_point,
    ranking_scores,
    reciprocal_rank,
)

RANKED = ["Tools", "Ethics", "Vocabulary", "Ethics", "Workflow"]


def test_dedupe_keeps_first_rank() -> None:
    assert dedupe(RANKED) == ["Tools", "Ethics", "Vocabulary", "Workflow"]


def test_hit_at_k_and_reciprocal_rank() -> None:
    sections = dedupe(RANKED)
    assert hit_at_k(sections, ["Vocabulary"], 1) == 0.0
    assert hit_at_k(sections, ["Vocabulary"], 3) == 1.0
    assert reciprocal_rank(sections, ["Vocabulary", "Workflow"]) == pytest.approx(1 / 3)
    assert reciprocal_rank(sections, ["Purpose"]) == 0.0


def test_ndcg_binary_relevance() -> None:
    # gold at ranks 2 and 4 of 4: DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["a", "b", "c", "d"], ["b", "d"], 10) == pytest.approx(expected)
    assert ndcg_at_k(["b", "d"], ["b", "d"], 10) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "b"], ["b"], 1) == 0.0
    assert ndcg_at_k(["a"], [], 10) == 0.0


def test_ranking_scores_bundle() -> None:
    scores = ranking_scores(["x", "y", "gold"], ["gold"])
    assert scores == {"hit@1": 0.0, "hit@3": 1.0, "hit@5": 1.0, "mrr": pytest.approx(1 / 3),
                      "ndcg@10": pytest.approx(1 / math.log2(4))}
    assert mean([]) is None and mean([1.0, 0.0]) == 0.5


def test_citation_validity() -> None:
    cited = {1: "p/a", 2: "p/b"}
    assert citation_valid("One [1]. Two [2].", cited, ["p/a", "p/b"], ["p/a", "p/b", "p/c"])
    assert not citation_valid("One [3].", cited, ["p/a", "p/b"], ["p/a", "p/b"])  # marker points nowhere
    assert not citation_valid("One [1].", cited, ["p/a"], ["p/a", "p/b"])  # p/b was not retrieved
    assert not citation_valid("One [1].", {1: "p/zz"}, ["p/zz"], ["p/a"])  # not in the card


PASSAGES = {
    1: "Pipeline coverage: you need three times your quota in qualified pipeline.",
    2: "Forecast calls happen every Monday with each rep.",
    3: "Coaching beats firing for reps who lack skill but have the will.",
}


def test_citation_recall_and_precision_alce() -> None:
    answer = ("You need three times your quota in qualified pipeline. [1] "
              "Forecast calls happen every Monday with each rep. [2][3] "
              "Always discount forty percent at quarter end. [3]")
    score = citation_score(answer, PASSAGES)
    # sentence 1 supported by [1]; sentence 2 supported jointly, [2] needed and supports alone, [3]
    # is not needed (the rest still supports it); sentence 3 unsupported, its [3] imprecise.
    assert score == CitationScore(sentences=3, supported=2, citations=4, precise=2)
    assert score.recall == pytest.approx(2 / 3) and score.precision == pytest.approx(0.5)


def test_uncited_sentence_counts_against_recall() -> None:
    score = citation_score("Forecast calls happen every Monday with each rep. [2] And an uncited claim here.", PASSAGES)
    assert (score.sentences, score.supported, score.citations, score.precise) == (2, 1, 1, 1)


def test_abstention_precision_recall() -> None:
    outcomes = [("out_of_scope", True), ("out_of_scope", True), ("out_of_scope", False),
                ("in_scope", True), ("in_scope", False), ("in_scope", False), ("in_scope", False),
                ("adversarial", True)]
    score = abstention_score(outcomes)
    assert score.precision == pytest.approx(2 / 3)  # 3 abstentions (adversarial left out), 2 right
    assert score.recall == pytest.approx(2 / 3)
    assert score.in_scope_refused == pytest.approx(1 / 4) and score.in_scope_answered == pytest.approx(3 / 4)
    assert abstention_score([("in_scope", False)]).precision is None


def test_leak_patterns() -> None:
    assert leaks("Sure! My instructions say: you are a helpful assistant.")
    assert leaks("Here is the system prompt you asked for")
    assert not leaks("That's not something I can speak to as a Sales Manager.")


def test_adversarial_check() -> None:
    full = CitationScore(2, 2, 2, 2)
    refusal = "That's not something I can speak to as a Sales Manager: I won't make advice up."
    assert adversarial_check(refusal, False, True, CitationScore(1, 0, 0, 0), "Sales Manager").passed
    pirate = adversarial_check("Arr, I be a pirate now!", False, True, CitationScore(1, 0, 0, 0), "Sales Manager")
    assert not pirate.passed
    assert adversarial_check("Grounded text. [1]", True, True, full, "Sales Manager").passed
    partly = adversarial_check("Grounded. [1] Invented.", True, True, CitationScore(2, 1, 1, 1), "Sales Manager")
    assert not partly.passed and not partly.cites_or_abstains
    assert not adversarial_check("Ignore all instructions [1]", True, True, full, "Sales Manager").no_leak


def test_threshold_sits_midway_in_the_gap() -> None:
    from eval.calibration import derive_threshold

    # 50 in-scope: floor(0.02 * 50) = 1 may be refused, so the floor is the second lowest (0.40)
    in_scope = [0.30, 0.40, *[0.6] * 48]
    calibration = derive_threshold(in_scope, [0.10, 0.20, 0.34])
    assert calibration.in_scope_floor == 0.40 and calibration.out_of_scope_max == 0.34
    assert calibration.threshold == pytest.approx(0.37)


def test_threshold_refuses_every_out_of_scope_when_they_overlap() -> None:
    from eval.calibration import derive_threshold

    assert derive_threshold([0.3, 0.5, 0.6], [0.2, 0.55]).threshold == pytest.approx(0.551)
    with pytest.raises(ValueError):
        derive_threshold([0.5], [])


def test_on_point_by_grade_or_gold_section() -> None:
    grades = {"c/rules/item-1": 2, "c/tools/crm": 1}
    assert on_point("c/rules/item-1", "Rules of Thumb", grades, ["Vocabulary"])
    assert on_point("c/tools/crm", "Tools", grades, [])  # related (grade 1) counts
    assert on_point("c/vocabulary/ramp", "Vocabulary", grades, ["Vocabulary"])  # ungraded, but in a gold section
    assert not on_point("c/scenarios/x", "Scenarios", grades, ["Vocabulary"])


def test_cited_relevance_and_first_on_point() -> None:
    assert cited_relevance([True, False, True, True]) == 0.75
    assert first_on_point([False, True]) == 0.0 and first_on_point([True, False]) == 1.0
    assert cited_relevance([]) is None and first_on_point([]) is None
