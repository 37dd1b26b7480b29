"""A card's own coverage thresholds: the rule on its examples (pure, on crafted vectors), and what ingest records
for a card with a sidecar, with a calibration of its own, and without any (real model, real Chroma)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from generation.service import PersonaService
from ingest.examples import sidecar_path
from ingest.indexer import ingest
from retrieval.calibration import BARE, BOUNDARY_MARGIN, MIN_EXAMPLES, from_examples, held_out_support
from retrieval.embedder import Embedder
from retrieval.errors import InvalidCard
from retrieval.examples import generic_questions
from retrieval.settings import Settings
from retrieval.store import Store
from tests.conftest import ROOT, SEED


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_an_example_is_held_out_from_its_own_passage() -> None:
    passages = unit(np.eye(3))
    examples = unit(np.array([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1], [0.0, 1.0, 0.0]]))
    support = held_out_support(passages, examples, np.array([0, 0, 1]))
    own = examples @ passages.T
    # the first example's best example is the second (itself left out); the third has no other example, so its
    # passage counts its cosine alone, and the best over the passages is taken
    assert np.isclose(support[0], max((own[0, 0] + examples[0] @ examples[1]) / 2, own[0, 2]))
    assert np.isclose(support[2], max(own[2, 1], (own[2, 0] + (examples[2] @ examples[:2].T).max()) / 2))


def test_thresholds_come_from_the_examples_quantiles() -> None:
    rng = np.random.default_rng(0)
    passages = unit(rng.normal(size=(10, 16)))
    targets = np.repeat(np.arange(10), 5)
    examples = unit(passages[targets] + 0.5 * rng.normal(size=(50, 16)))
    derived = from_examples(passages, examples, targets)
    assert derived is not None and derived.boundary_margin == BOUNDARY_MARGIN
    support = held_out_support(passages, examples, targets)
    assert derived.min_score <= derived.confident_score <= float(np.median(support))
    assert np.mean(support < derived.min_score) <= 0.02
    assert from_examples(passages, examples[:MIN_EXAMPLES - 1], targets[:MIN_EXAMPLES - 1]) is None


def test_each_card_is_judged_with_thresholds_of_its_own(tmp_path: Path, embedder: Embedder) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED, seeds)
    shutil.copy(sidecar_path(SEED), seeds)
    chef = ROOT / "eval" / "cards" / "executive-chef.yaml"
    shutil.copy(chef, seeds)
    shutil.copy(sidecar_path(chef), seeds)
    bare = ROOT / "eval" / "cards" / "registered-nurse.yaml"
    shutil.copy(bare, seeds)  # without its sidecar
    settings = Settings(data_dir=tmp_path / "index", min_score=0.99, confident_score=0.99)
    report = ingest([seeds], Store(settings), embedder, settings.model)
    status = {c.slug: c.status for c in report.changes}
    assert status["sales-manager"].calibration.source == "card"  # its sidecar's own
    assert status["executive-chef"].calibration.source == "examples"
    assert 0.2 < status["executive-chef"].calibration.min_score < 0.45
    assert status["registered-nurse"].calibration.source == "rule"
    assert status["registered-nurse"].calibration.min_score == BARE.min_score
    # Served with those thresholds, not the settings' (which would refuse everything here)
    service = PersonaService(settings, embedder=embedder)
    chef_answer = service.ask("my food cost keeps creeping up every month, where do i look first",
                              "executive-chef")
    nurse_answer = service.ask("my patient's blood pressure is dropping after surgery, when do i call the "
                               "rapid response team", "registered-nurse")
    assert chef_answer.grounded and nurse_answer.grounded
    for slug in ("executive-chef", "registered-nurse"):
        assert not service.ask("can you recommend a cheap flight to lisbon in may", slug).grounded
    # A card without a boundary of its own is judged against the generic boundary, embedded once for all.
    assert len(generic_questions()) >= 200
    nurse = service._persona_indexes(service.persona("registered-nurse")).examples
    chef = service._persona_indexes(service.persona("executive-chef")).examples
    assert nurse is not None and nurse.boundary is service.generic_boundary
    assert chef is not None and len(chef.boundary) == len(yaml.safe_load(sidecar_path(ROOT / "eval" / "cards" /
                                                                                        "executive-chef.yaml")
                                                                          .read_text())["not_covered"])


def test_a_sidecar_calibration_is_validated(tmp_path: Path, embedder: Embedder) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED, seeds)
    sidecar = yaml.safe_load(sidecar_path(SEED).read_text())
    sidecar["calibration"] = {"all-MiniLM-L6-v2": {"min_score": 2.0, "boundary_margin": 0.0, "confident_score": 0.5}}
    sidecar_path(seeds / SEED.name).write_text(yaml.safe_dump(sidecar))
    with pytest.raises(InvalidCard, match=r"calibration\.all-MiniLM-L6-v2\.min_score"):
        ingest([seeds], Store(Settings(data_dir=tmp_path / "index")), embedder, "all-MiniLM-L6-v2")
