"""retrieval/tuning.py: passage vectors tuned to example questions (a pure function, synthetic vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.tuning import tune_passages


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three passages; the questions of passage 0 sit nearer passage 1's text than passage 0's."""
    rng = np.random.default_rng(7)
    passages = _unit(rng.normal(size=(3, 16)))
    toward_one = _unit(0.35 * passages[0] + 0.65 * passages[1] + 0.05 * rng.normal(size=(6, 16)))
    of_two = _unit(passages[2] + 0.2 * rng.normal(size=(4, 16)))
    questions = np.vstack([toward_one, of_two])
    return passages, questions, np.array([0] * 6 + [2] * 4)


def test_questions_find_their_passage_after_tuning() -> None:
    passages, questions, targets = _problem()
    before = (questions @ passages.T).argmax(axis=1)
    assert (before[:6] == 1).all(), "the set-up: passage 0's questions are nearest passage 1 before tuning"
    tuned = tune_passages(passages, questions, targets)
    assert ((questions @ tuned.T).argmax(axis=1) == targets).all()
    assert np.allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    assert tuned.dtype == np.float32 and tuned.shape == passages.shape


def test_tuned_vectors_stay_near_the_text_and_are_deterministic() -> None:
    passages, questions, targets = _problem()
    tuned = tune_passages(passages, questions, targets)
    assert np.array_equal(tuned, tune_passages(passages, questions, targets))
    assert (np.sum(tuned * passages, axis=1) > 0.5).all(), "each tuned vector keeps most of its passage's direction"
    held = tune_passages(passages, questions, targets, strength=10.0)
    assert (np.sum(held * passages, axis=1) > np.sum(tuned * passages, axis=1) - 1e-6).all()


def test_no_questions_leaves_the_passages_alone_and_bad_targets_fail() -> None:
    passages, questions, _ = _problem()
    assert np.allclose(tune_passages(passages, questions[:0], np.array([], dtype=int)), passages, atol=1e-6)
    with pytest.raises(ValueError, match="targets"):
        tune_passages(passages, questions, np.array([0, 5] * 5))
