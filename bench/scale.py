"""Optional parts of ``persona bench``: ingest throughput on many synthetic cards (``--cards N``); copies of the seed
card with its sidecar (``bench/cards.py``)."""

from __future__ import annotations

import copy
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ingest.cards import load_card
from ingest.chunking import chunk_card
from ingest.examples import sidecar_path
from ingest.indexer import ingest
from retrieval.embedder import Embedder
from retrieval.settings import Settings
from retrieval.store import Store

Log = Callable[[str], None]


def synthetic_cards(seed_card: Path, n: int, folder: Path, seed: int = 8) -> list[Path]:
    """``n`` cards made from the seed's text: new slugs and titles, sections and their items shuffled."""
    base = yaml.safe_load(seed_card.read_text())
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        card = copy.deepcopy(base)
        card["slug"] = f"{base['slug']}-synth-{i:03d}"
        card["title"] = f"{base['title']} {i}"
        rng.shuffle(card["sections"])
        for section in card["sections"]:
            section["markdown"] = _shuffle_items(section["markdown"], rng)
        path = folder / f"{card['slug']}.yaml"
        path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
        paths.append(path)
    return paths


def copied_cards(seed_card: Path, n: int, folder: Path, first: int = 0) -> list[Path]:
    """``n`` copies of the seed card with its sidecar, numbered from ``first``: new slugs and titles, and each sidecar
    question marked with its copy's number, so that every copy's texts are new to the embedder and an ingest pays
    what ``n`` distinct cards with sidecars cost (copies test cost, not quality)."""
    base = yaml.safe_load(seed_card.read_text(encoding="utf-8"))
    sidecar = yaml.safe_load(sidecar_path(seed_card).read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(first, first + n):
        slug = f"{base['slug']}-copy-{i:03d}"
        card = {**base, "slug": slug, "title": f"{base['title']} {i}"}
        examples = {passage.replace(f"{base['slug']}/", f"{slug}/", 1): [f"{q} ({i})" for q in questions]
                    for passage, questions in sidecar.get("examples", {}).items()}
        boundary = [f"{q} ({i})" for q in sidecar.get("not_covered", [])]
        own = {"card": slug, "examples": examples, "not_covered": boundary}
        path = folder / f"{slug}.yaml"
        path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")
        sidecar_path(path).write_text(yaml.safe_dump(own, sort_keys=False, allow_unicode=True), encoding="utf-8")
        paths.append(path)
    return paths


def _shuffle_items(markdown: str, rng: random.Random) -> str:
    bullets = re.split(r"\n(?=(?:[-*+]|\d{1,3}[.)])\s)", markdown.strip())
    if len(bullets) > 1:
        rng.shuffle(bullets)
        return "\n".join(bullets) + "\n"
    paragraphs = re.split(r"\n\s*\n", markdown.strip())
    rng.shuffle(paragraphs)
    return "\n\n".join(paragraphs) + "\n"


def ingest_throughput(embedder: Embedder, settings: Settings, seed_card: Path, cards: int, work: Path, log: Log,
                      group: int = 10) -> dict[str, Any]:
    """Ingest of the synthetic corpus against raw encode of the same texts, interleaved by groups of
    cards so that both meet the same machine load."""
    paths = synthetic_cards(seed_card, cards, work / "synthetic")
    batch = settings.embed_batch_size
    store = Store(Settings(data_dir=work / "ingest-index", seeds_dir=work / "synthetic"))
    embedder.encode([c.embed_text for c in chunk_card(load_card(paths[0]))][:batch], batch)  # warm
    raw_seconds = ingest_seconds = 0.0
    texts = chunks = 0
    for first in range(0, len(paths), group):
        part = paths[first:first + group]
        part_texts = [c.embed_text for p in part for c in chunk_card(load_card(p))]
        start = time.perf_counter()
        for i in range(0, len(part_texts), batch):
            embedder.encode(part_texts[i:i + batch], batch)
        raw_seconds += time.perf_counter() - start
        start = time.perf_counter()
        report = ingest(part, store, embedder, settings.model, batch_size=batch)
        ingest_seconds += time.perf_counter() - start
        texts += len(part_texts)
        chunks += sum(c.chunks for c in report.changes)
        log(f"  {first + len(part)}/{cards} cards: raw {texts / raw_seconds:.0f} texts/s, "
            f"ingest {chunks / ingest_seconds:.0f} chunks/s")
    raw, rate = texts / raw_seconds, chunks / ingest_seconds
    return {"cards": cards, "chunks": chunks, "raw_texts_per_s": round(raw, 1),
            "ingest_chunks_per_s": round(rate, 1), "ingest_seconds": round(ingest_seconds, 1),
            "ratio": round(rate / raw, 3)}
