"""The serving copy of each published version (retrieval/snapshot.py) on a real embedded Chroma in tmp_path: the same
chunks as the collection, written and dropped with it, and Chroma read when a copy is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from ingest.indexer import ingest
from retrieval import snapshot
from retrieval.embedder import Embedder
from retrieval.settings import Settings
from retrieval.store import Store
from tests.conftest import SEED


def test_the_copy_holds_what_the_collection_holds(seeds_dir: Path, store: Store, settings: Settings,
                                                  embedder: Embedder) -> None:
    ingest([seeds_dir], store, embedder, settings.model)
    name = store.pointer("sales-manager")["collection"]
    copy = snapshot.path_of(settings.data_dir, name)
    assert copy.is_file()
    from_copy = store.chunks("sales-manager", with_embeddings=True)
    got = store._collection(name).get(include=["metadatas", "embeddings"])
    from_chroma = dict(zip(got["ids"], zip(got["metadatas"], got["embeddings"], strict=True), strict=True))
    assert len(from_copy) == len(from_chroma) == 103
    for chunk in from_copy:
        metadata, vector = from_chroma[chunk.id]
        assert chunk.metadata == metadata and np.allclose(chunk.embedding, vector, atol=1e-6)
    assert [c.metadata["position"] for c in from_copy] == sorted(c.metadata["position"] for c in from_copy)


def test_the_copy_goes_with_its_version_and_strays_are_swept(seeds_dir: Path, store: Store, settings: Settings,
                                                             embedder: Embedder) -> None:
    ingest([seeds_dir], store, embedder, settings.model)
    old = store.pointer("sales-manager")["collection"]
    card = yaml.safe_load((seeds_dir / SEED.name).read_text(encoding="utf-8"))
    card["summary"] = "A changed summary."
    (seeds_dir / SEED.name).write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    ingest([seeds_dir], store, embedder, settings.model)
    new = store.pointer("sales-manager")["collection"]
    assert not snapshot.path_of(settings.data_dir, old).exists() and snapshot.path_of(settings.data_dir, new).exists()
    stray = snapshot.path_of(settings.data_dir, "p-sales-manager-killed-midway")
    stray.write_bytes(b"half a file")
    store.sweep()
    assert sorted(p.name for p in snapshot.folder_of(settings.data_dir).iterdir()) == [f"{new}.npz"]
    store.remove("sales-manager")
    assert list(snapshot.folder_of(settings.data_dir).iterdir()) == []


def test_a_version_without_a_copy_is_read_from_chroma(seeds_dir: Path, store: Store, settings: Settings,
                                                      embedder: Embedder) -> None:
    """An index published before the copies existed, or one whose copy was lost or damaged."""
    ingest([seeds_dir], store, embedder, settings.model)
    copy = snapshot.path_of(settings.data_dir, store.pointer("sales-manager")["collection"])
    expected = store.chunks("sales-manager", with_embeddings=True)
    copy.write_bytes(b"damaged")
    damaged = store.chunks("sales-manager", with_embeddings=True)
    copy.unlink()
    missing = store.chunks("sales-manager", with_embeddings=True)
    for read in (damaged, missing):
        assert [c.id for c in read] == [c.id for c in expected]
        assert all(np.allclose(a.embedding, b.embedding, atol=1e-6) for a, b in zip(read, expected, strict=True))
