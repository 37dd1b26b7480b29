"""bench/levers.py, the scratch harness levers are measured with, against the pipeline it copies: the same seed
card, the real model, the real index. When the pipeline's ranking or coverage evidence changes, this fails until
the harness follows, so the numbers in docs/experiments/retrieval-levers.md stay comparable."""

from __future__ import annotations

import numpy as np
import pytest

from bench.levers import Card, embed_all, evidence, load, scores
from generation.service import PersonaService
from retrieval.embedder import Embedder


@pytest.fixture(scope="module")
def card() -> Card:
    return load()


def test_the_harness_ranks_and_judges_as_the_pipeline(card: Card, service: PersonaService,
                                                     embedder: Embedder) -> None:
    questions = card.questions["chat-dev"][::6]  # 28 questions, in scope and off topic
    vectors = embed_all(card, lambda texts: np.asarray(embedder.encode(list(texts))))
    matrix = vectors.questions["chat-dev"][::6]
    ranked = scores(card, vectors, matrix)
    support, boundary = evidence(card, vectors, matrix)
    for q, row, s, b in zip(questions, ranked, support, boundary, strict=True):
        found = service.search(q.question, "sales-manager")
        assert card.ids[int(np.argmax(row))] == found.hits[0].id, q.question
        assert found.coverage.top == pytest.approx(float(s), abs=1e-4), q.question
        assert found.coverage.boundary == pytest.approx(float(b), abs=1e-4), q.question


def test_the_harness_reads_the_whole_sidecar(card: Card) -> None:
    assert len(card.ids) == 89
    assert len(card.examples) == len(card.targets) > 1500
    assert set(card.targets.tolist()) <= set(range(len(card.ids)))
    assert len(card.boundary) > 100
