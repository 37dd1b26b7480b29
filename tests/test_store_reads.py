"""The query path's reuse of registry reads: a reader on one index sees another writer's publish."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ingest.indexer import ingest
from retrieval.embedder import Embedder
from retrieval.settings import Settings
from retrieval.store import POINTER_TTL, Store


def test_reader_follows_a_publish_by_another_store(seeds_dir: Path, settings: Settings,
                                                   embedder: Embedder) -> None:
    writer, reader = Store(settings), Store(settings)
    ingest([seeds_dir], writer, embedder, settings.model)
    vector = embedder.encode(["How much pipeline coverage do I need?"])[0]
    before = reader.query("sales-manager", vector, 3)
    assert before and reader.persona("sales-manager") is not None

    card_path = seeds_dir / "sales-manager.yaml"
    card = yaml.safe_load(card_path.read_text(encoding="utf-8"))
    card["title"] = "Sales Leader"
    card_path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")
    ingest([seeds_dir], writer, embedder, settings.model)  # a new collection; the old one is dropped

    # within the TTL the reader still holds the old pointer: its query meets the dropped
    # collection, reads the registry afresh and answers from the new version
    after = reader.query("sales-manager", vector, 3)
    assert [m.id for m in after] and all(m.metadata["persona"] == "sales-manager" for m in after)
    time.sleep(POINTER_TTL + 0.1)
    assert reader.persona("sales-manager").title == "Sales Leader"
    assert writer.persona("sales-manager").title == "Sales Leader"  # its own write is seen at once


def test_querying_a_persona_that_is_not_published_is_unknown_persona(settings: Settings) -> None:
    from retrieval.errors import UnknownPersona

    with pytest.raises(UnknownPersona) as caught:
        Store(settings).query("nobody", np.ones(384, dtype=np.float32), 3)
    assert caught.value.status_code == 404 and caught.value.code == "unknown_persona"
