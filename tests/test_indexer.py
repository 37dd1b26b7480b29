"""Ingest into a real Chroma in tmp_path with the real model: idempotent, incremental, atomic."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ingest.examples import sidecar_path
from ingest.indexer import CardFile, ingest, validate
from retrieval.calibration import BARE
from retrieval.embedder import Embedder
from retrieval.errors import InvalidCard
from retrieval.settings import Settings
from retrieval.store import Store
from retrieval.types import Calibration, CardStatus
from tests.conftest import SEED


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.texts: list[str] = []

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.encode(texts, batch_size)


def run(seeds: Path, store: Store, embedder, settings: Settings):
    return ingest([seeds], store, embedder, settings.model)


def edit_seed(seeds_dir: Path, change) -> None:
    path = seeds_dir / SEED.name
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def test_first_ingest_publishes_every_chunk(seeds_dir: Path, store: Store, settings: Settings,
                                            embedder: Embedder) -> None:
    counting = CountingEmbedder(embedder)
    report = run(seeds_dir, store, counting, settings)
    assert report.changes[0].published and report.changes[0].embedded == 103
    [info] = store.personas()
    assert info.slug == "sales-manager" and info.chunks == 103 and len(info.sections) == 20
    assert len(store.chunks("sales-manager")) == 103


def test_reingest_unchanged_changes_nothing(seeds_dir: Path, store: Store, settings: Settings,
                                            embedder: Embedder) -> None:
    run(seeds_dir, store, embedder, settings)
    before = store.pointer("sales-manager")
    counting = CountingEmbedder(embedder)
    report = run(seeds_dir, store, counting, settings)
    assert not report.changed and counting.texts == []
    assert store.pointer("sales-manager") == before


def test_changed_item_reembeds_only_that_id_and_removed_item_disappears(
        seeds_dir: Path, store: Store, settings: Settings, embedder: Embedder) -> None:
    run(seeds_dir, store, embedder, settings)
    before = {c.id: c.embedding for c in store.chunks("sales-manager", with_embeddings=True)}

    def change(data: dict) -> None:
        rules = next(s for s in data["sections"] if s["heading"] == "Rules of Thumb")
        lines = rules["markdown"].split("\n- ")
        lines[-1] = "A rep in a slump needs a coaching plan and belief, never just pressure."
        rules["markdown"] = "\n- ".join(lines)
        anti = next(s for s in data["sections"] if s["heading"] == "Anti-patterns")
        anti["markdown"] = anti["markdown"].split("\n- **Happy-ears forecasting**")[0]

    edit_seed(seeds_dir, change)
    counting = CountingEmbedder(embedder)
    [persona] = run(seeds_dir, store, counting, settings).changes
    assert persona.changed == ["sales-manager/rules-of-thumb", "sales-manager/rules-of-thumb/item-7",
                               "sales-manager/anti-patterns"]
    assert persona.removed == ["sales-manager/anti-patterns/happy-ears-forecasting"]
    assert persona.embedded == 3 and len(counting.texts) == 3
    after = {c.id: c for c in store.chunks("sales-manager", with_embeddings=True)}
    assert "sales-manager/anti-patterns/happy-ears-forecasting" not in after
    assert "coaching plan" in after["sales-manager/rules-of-thumb/item-7"].metadata["text"]
    kept = after["sales-manager/guiding-principles/inspect-what-you-expect"].embedding
    assert np.allclose(kept, before["sales-manager/guiding-principles/inspect-what-you-expect"])


PASTRY_CHEF = {
    "title": "Pastry Chef", "slug": "pastry-chef", "aliases": ["Patissier"],
    "summary": "Makes desserts and breads in a professional kitchen.",
    "sections": [
        {"heading": "Core Mission", "markdown": "Turn out consistent, beautiful pastry every service."},
        {"heading": "Rules of Thumb", "markdown": "- Weigh everything; never measure flour by volume.\n"
                                                  "- Rest laminated dough cold before every fold."},
    ],
}


def test_second_card_gives_second_persona(seeds_dir: Path, store: Store, settings: Settings,
                                          embedder: Embedder) -> None:
    (seeds_dir / "pastry-chef.yaml").write_text(yaml.safe_dump(PASTRY_CHEF), encoding="utf-8")
    run(seeds_dir, store, embedder, settings)
    assert [p.slug for p in store.personas()] == ["pastry-chef", "sales-manager"]
    chef = store.chunks("pastry-chef")
    assert [c.id for c in chef] == ["pastry-chef/overview", "pastry-chef/core-mission", "pastry-chef/rules-of-thumb",
                                    "pastry-chef/rules-of-thumb/item-1", "pastry-chef/rules-of-thumb/item-2"]


@pytest.mark.parametrize("bad", ["not: [yaml", "title: X\nslug: x\n", "title: X\nslug: x\nsections:\n- markdown: hi\n"])
def test_bad_card_leaves_the_index_intact(seeds_dir: Path, store: Store, settings: Settings,
                                          embedder: Embedder, bad: str) -> None:
    run(seeds_dir, store, embedder, settings)
    before = store.pointer("sales-manager")
    edit_seed(seeds_dir, lambda d: d["sections"][0].update(markdown="Changed purpose text."))
    (seeds_dir / "zz-bad.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(InvalidCard) as caught:
        run(seeds_dir, store, embedder, settings)
    assert "zz-bad.yaml" in caught.value.file
    assert store.pointer("sales-manager") == before
    assert len(store.chunks("sales-manager")) == 103


def test_interrupted_publish_leaves_old_version_and_is_swept(seeds_dir: Path, store: Store, settings: Settings,
                                                              embedder: Embedder) -> None:
    run(seeds_dir, store, embedder, settings)
    before = store.pointer("sales-manager")
    orphan = store.client.create_collection("p-sales-manager-orphan", embedding_function=None)
    orphan.add(ids=["x"], embeddings=[[0.1] * 384])
    assert store.pointer("sales-manager") == before
    assert "p-sales-manager-orphan" in store.sweep()
    assert len(store.chunks("sales-manager")) == 103


def test_each_card_s_status_is_recorded_with_its_persona(seeds_dir: Path, store: Store, settings: Settings,
                                                         embedder: Embedder) -> None:
    """What each card has (its sidecar's example and boundary questions, where its thresholds come from) is stored
    at ingest beside the persona, and read back, not recomputed; a card without them is told `persona enrich`."""
    shutil.copy(sidecar_path(SEED), seeds_dir)
    (seeds_dir / "pastry-chef.yaml").write_text(yaml.safe_dump(PASTRY_CHEF), encoding="utf-8")
    report = run(seeds_dir, store, embedder, settings)
    manager = store.persona("sales-manager")
    assert manager.status == CardStatus(1746, 188, Calibration("card", 0.368, 0.035, 0.439)) and manager.warnings == []
    assert report.changes[1].status_line() == "  1746 example questions, 188 boundary questions; thresholds: card"
    chef = store.persona("pastry-chef")
    assert (chef.status.examples, chef.status.boundary) == (0, 0)  # the generic boundary is not its own
    assert chef.status.calibration == Calibration("rule", BARE.min_score, BARE.boundary_margin, BARE.confident_score)
    assert not any(c.metadata["kind"] == "boundary" for c in store.chunks("pastry-chef")), "the generic one is not"
    [warning] = [line for line in report.lines() if line.startswith("warning:")]
    assert f"`persona enrich {seeds_dir / 'pastry-chef.yaml'}`" in warning and "pastry-chef.examples.yaml" in warning


def test_prune_removes_the_personas_of_cards_not_ingested(seeds_dir: Path, store: Store, settings: Settings,
                                                          embedder: Embedder) -> None:
    (seeds_dir / "pastry-chef.yaml").write_text(yaml.safe_dump(PASTRY_CHEF), encoding="utf-8")
    run(seeds_dir, store, embedder, settings)
    kept = ingest([seeds_dir / "pastry-chef.yaml"], store, embedder, settings.model)  # without --prune: kept
    assert not kept.removed and store.slugs() == ["pastry-chef", "sales-manager"]
    gone = store.pointer("sales-manager")["collection"]
    report = ingest([seeds_dir / "pastry-chef.yaml"], store, embedder, settings.model, prune=True)
    assert report.removed == ["sales-manager"] and store.slugs() == ["pastry-chef"]
    assert gone not in set(store._collection_names()) and store.chunks("sales-manager") == []
    assert "sales-manager: removed (its card was not among those ingested)" in report.lines()


def test_cards_sent_as_text_are_validated_naming_the_file_they_came_from() -> None:
    card = CardFile("cards/chef.yaml", yaml.safe_dump(PASTRY_CHEF), sidecar="card: someone-else\n")
    with pytest.raises(InvalidCard) as caught:
        validate([card])
    assert caught.value.message == ("cards/chef.examples.yaml: field 'card': the slug of the card beside it "
                                    "('pastry-chef') expected, got 'someone-else'")
    [ok] = validate([CardFile("cards/chef.yaml", yaml.safe_dump(PASTRY_CHEF))])
    assert ok.card.slug == "pastry-chef" and [c.kind for c in ok.passages] == ["overview", "section", "section",
                                                                               "item", "item"] and ok.extra == []
