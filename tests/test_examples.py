"""The card sidecar (ingest/examples.py): loading, its chunks, what it does to retrieval, and no leakage
into the eval sets (eval/leakage.py). Real Chroma in tmp_path, the real model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from eval.leakage import near_duplicates
from eval.sets import CARDS_DIR, default_sets, load_set
from generation.service import PersonaService
from ingest.cards import find_cards, load_card
from ingest.chunking import chunk_card
from ingest.examples import Sidecar, load_sidecar, sidecar_chunks, sidecar_path
from ingest.indexer import ingest
from retrieval.embedder import Embedder
from retrieval.errors import InvalidCard
from retrieval.settings import Settings
from retrieval.store import Store
from tests.conftest import ROOT, SEED

SIDECAR = sidecar_path(SEED)


def test_the_seed_card_has_a_sidecar_that_loads_and_is_not_a_card() -> None:
    sidecar = load_sidecar(SEED, "sales-manager")
    assert sidecar is not None and len(sidecar.not_covered) >= 100
    passages = chunk_card(load_card(SEED))
    chunks, warnings = sidecar_chunks(sidecar, passages)
    assert warnings == []
    examples = [c for c in chunks if c.kind == "example"]
    assert len(examples) >= 300 and all(c.parent in {p.id for p in passages} for c in examples)
    assert {c.kind for c in chunks} == {"example", "boundary"}
    assert SIDECAR not in find_cards([SEED.parent])


def test_bad_sidecars_are_one_clear_error(tmp_path: Path) -> None:
    card = tmp_path / "sales-manager.yaml"
    shutil.copy(SEED, card)
    sidecar = sidecar_path(card)
    sidecar.write_text(yaml.safe_dump({"card": "someone-else", "examples": {}}))
    with pytest.raises(InvalidCard, match="field 'card'"):
        load_sidecar(card, "sales-manager")
    sidecar.write_text(yaml.safe_dump({"card": "sales-manager", "examples": {"x": ["  "]}}))
    with pytest.raises(InvalidCard, match="examples"):
        load_sidecar(card, "sales-manager")
    sidecar.write_text("card: [unclosed")
    with pytest.raises(InvalidCard, match="valid YAML"):
        load_sidecar(card, "sales-manager")


def test_examples_for_a_missing_passage_are_a_warning_not_a_failure() -> None:
    passages = chunk_card(load_card(SEED))
    sidecar = Sidecar(card="sales-manager", examples={"sales-manager/vocabulary/ote": ["ote?"],
                                                      "sales-manager/gone": ["where did it go"]})
    chunks, warnings = sidecar_chunks(sidecar, passages)
    assert [c.id for c in chunks] == ["sales-manager/vocabulary/ote#example-1"]
    assert warnings and "sales-manager/gone" in warnings[0]


def test_examples_lift_their_passage_and_the_boundary_refuses(tmp_path: Path,
                                                               embedder: Embedder) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED, seeds / SEED.name)
    question = "my reps keep wanting to bring me into their calls to close for them"
    boundary = "how do i set up dkim records for our outbound email domain"
    (seeds / SIDECAR.name).write_text(yaml.safe_dump({
        "card": "sales-manager",
        "examples": {"sales-manager/anti-patterns/hero-deal-closing": [question]},
        "not_covered": [boundary]}))
    settings = Settings(data_dir=tmp_path / "index", seeds_dir=seeds)
    report = ingest([seeds], Store(settings), embedder, settings.model)
    assert report.changes[0].published and report.changes[0].tuned == 89  # every ranked passage gets a tuned vector
    stored = Store(settings).chunks("sales-manager")
    assert sum(c.metadata.get("kind") == "tuned" for c in stored) == 89
    service = PersonaService(settings, embedder=embedder)
    found = service.search(question)
    assert found.hits[0].id == "sales-manager/anti-patterns/hero-deal-closing"
    assert all("#" not in h.id for h in found.hits), "sidecar questions are never hits"
    refused = service.ask(boundary)
    assert not refused.grounded and refused.confidence == "none" and refused.citations == []
    # A changed sidecar publishes a new version; an unchanged one leaves the index alone.
    assert not ingest([seeds], Store(settings), embedder, settings.model).changed
    (seeds / SIDECAR.name).write_text(yaml.safe_dump({"card": "sales-manager", "not_covered": [boundary]}))
    assert ingest([seeds], Store(settings), embedder, settings.model).changed


def test_no_eval_question_is_a_near_duplicate_of_its_cards_sidecar_question(embedder: Embedder) -> None:
    """Every card's sidecar (the seed's and the eval cards') against the eval questions about that card."""
    questions = [q for path in default_sets() for q in load_set(path).questions]
    cards = [*find_cards([ROOT / "seeds"]), *find_cards([CARDS_DIR])]
    checked = 0
    for card in cards:
        slug = load_card(card).slug
        sidecar = load_sidecar(card, slug)
        mine = [q.question for q in questions if q.persona == slug]
        if not sidecar or not mine:
            continue
        sidecar_questions = [q for qs in sidecar.examples.values() for q in qs] + sidecar.not_covered
        found = near_duplicates(mine, sidecar_questions, embedder.encode(mine), embedder.encode(sidecar_questions))
        assert found == [], slug + ": " + "\n".join(f"{d.cosine:.2f} {d.ratio:.2f} {d.question!r} ~ {d.example!r}"
                                                   for d in found[:10])
        checked += 1
    assert checked == 7, "the seed card and the six eval cards"


def test_near_duplicates_are_found() -> None:
    import numpy as np

    unit = np.eye(3, dtype=np.float32)
    found = near_duplicates(["What does OTE mean?", "b", "c"], ["what does ote mean", "x", "y"], unit, unit[[2, 2, 2]])
    assert [d.question for d in found] == ["What does OTE mean?", "c"]
