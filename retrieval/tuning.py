"""Passage vectors tuned to the card's example questions: a pure function, run at ingest.

A passage's text embedding is where the card's author put it; its example questions
(``seeds/<slug>.examples.yaml``) say where people's questions about it land. Tuning moves each
passage's vector toward the questions that should find it and away from those that should find
another passage: a softmax classifier over the card's passages, one weight vector per passage,
started at the passage's own embedding and held near it (multinomial logistic regression with the
text embedding as the prior). The result is one unit vector per passage, stored beside the card as
chunks of kind ``tuned`` and searched by cosine like any other (see ``retrieval/examples.py``).

Chosen on ``sales-manager-chat-dev`` and checked once on ``-test``: see
``docs/experiments/retrieval-levers.md``.
"""

from __future__ import annotations

import numpy as np

TEMPERATURE = 20.0
"""Cosines are scaled by this before the softmax: about the spread of cosines between one question's best
and tenth-best passage."""
STRENGTH = 0.01
"""How hard each vector is held to the passage's own embedding (an L2 penalty on the distance)."""
STEPS = 100
RATE = 0.01  # Adam's step size
SIGNATURE = f"tuned/softmax/{TEMPERATURE}/{STRENGTH}/{STEPS}/{RATE}"
"""Enters the content hash of tuned vectors: a change of method re-tunes a published persona."""


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def tune_passages(passages: np.ndarray, questions: np.ndarray, targets: np.ndarray,
                  temperature: float = TEMPERATURE, strength: float = STRENGTH, steps: int = STEPS,
                  rate: float = RATE) -> np.ndarray:
    """Unit vectors, one per row of ``passages``, tuned so that each of ``questions`` is nearest its target.

    ``passages`` (n x d) and ``questions`` (m x d) are embeddings; ``targets`` (m) holds, for each
    question, the row of the passage that answers it. Minimises the mean softmax cross-entropy of
    ``temperature x cos(question, passage)`` plus ``strength x ||tuned - passages||^2`` by Adam from
    the passages themselves: deterministic, numpy only. A passage no question points at moves only
    as the others' gradients push it (it stays near its text).
    """
    start = _unit(np.asarray(passages, dtype=np.float64))
    if not len(questions) or not len(start):
        return start.astype(np.float32)
    x = _unit(np.asarray(questions, dtype=np.float64))
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (len(x),) or targets.min() < 0 or targets.max() >= len(start):
        raise ValueError("targets must give a passage row for every question")
    onehot = np.zeros((len(x), len(start)))
    onehot[np.arange(len(x)), targets] = 1.0
    tuned = start.copy()
    first = np.zeros_like(tuned)
    second = np.zeros_like(tuned)
    for step in range(1, steps + 1):
        norms = np.linalg.norm(tuned, axis=1, keepdims=True)
        unit = tuned / norms
        logits = temperature * x @ unit.T
        logits -= logits.max(axis=1, keepdims=True)
        probability = np.exp(logits)
        probability /= probability.sum(axis=1, keepdims=True)
        grad_unit = temperature * (probability - onehot).T @ x / len(x)
        grad = (grad_unit - (grad_unit * unit).sum(axis=1, keepdims=True) * unit) / norms
        grad += 2.0 * strength * (tuned - start)
        first = 0.9 * first + 0.1 * grad
        second = 0.999 * second + 0.001 * grad * grad
        tuned -= rate * (first / (1 - 0.9 ** step)) / (np.sqrt(second / (1 - 0.999 ** step)) + 1e-8)
    return _unit(tuned).astype(np.float32)
