"""Live ingest (server/ingest_api.py, server/ingest_client.py) over real HTTP: a server on a free port (uvicorn), the
real model and a real Chroma index in tmp_path, questions asked throughout."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.servers import uvicorn_server
from generation.service import PersonaService
from ingest.indexer import CardFile, ingest, read_cards
from retrieval.embedder import Embedder
from retrieval.errors import RemoteError
from retrieval.settings import Settings
from retrieval.store import Store
from server.app import create_app
from server.ingest_client import ingest_through, request_body, server_events
from tests.conftest import SEED
from tests.test_faults import TOPICS, version_of, versioned_card

CHEF = """title: Pastry Chef
slug: pastry-chef
summary: Makes desserts and breads in a professional kitchen.
sections:
  - heading: Rules of Thumb
    markdown: |
      - **Weigh everything.** Never measure flour by volume; a cup of flour weighs anything from 120 to 160 grams.
      - **Rest the dough.** Rest laminated dough cold before every fold.
"""


@pytest.fixture
def live(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[str, Settings]]:
    """A server (the serving model, as `persona serve` builds it) over an index of the ``alpha`` versioned card."""
    settings = Settings(data_dir=tmp_path / "index", rate_limit=None)
    ingest([versioned_card(tmp_path / "alpha.yaml", "alpha")], Store(settings), embedder, settings.model)
    with uvicorn_server(create_app(settings, service=PersonaService(settings))) as url:
        yield url, settings


@dataclass
class Readers:
    """Threads asking the ``versioned`` persona over HTTP until stopped; every failure and every mixed answer noted."""

    url: str
    seen: list[set[str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def ask(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                question = f"what is the rule about {rng.choice(TOPICS)}"
                if rng.random() < 0.5:
                    response = client.post("/v1/ask", json={"question": question, "persona": "versioned", "k": 8})
                    texts = [c["text"] for c in response.json().get("citations", [])] if response.is_success else []
                else:
                    response = client.post("/v1/retrieve", json={"query": question, "persona": "versioned", "k": 10})
                    texts = [h["text"] for h in response.json().get("results", [])] if response.is_success else []
                if not response.is_success:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
                elif len(version_of(texts)) > 1:
                    self.failures.append(f"mixed versions {version_of(texts)} for {question!r}")
                elif texts:
                    self.seen.append(version_of(texts))

    def __enter__(self) -> Readers:
        self.threads = [threading.Thread(target=self.ask, args=(n,)) for n in range(4)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_cards_ingested_through_the_server_are_answered_while_questions_run(
        live: tuple[str, Settings], tmp_path: Path) -> None:
    url, settings = live
    (tmp_path / "cards").mkdir()
    versioned_card(tmp_path / "cards" / "versioned.yaml", "beta")
    (tmp_path / "cards" / "pastry-chef.yaml").write_text(CHEF, encoding="utf-8")
    steps: list[tuple[str, int, int]] = []
    with Readers(url) as readers:
        time.sleep(1.0)  # questions answered from alpha first
        report = ingest_through(url, read_cards([tmp_path / "cards"]),
                                progress=lambda *step: steps.append(step))
        time.sleep(1.0)  # and from beta after
    assert not readers.failures, readers.failures[:5]
    assert {"alpha"} in readers.seen and {"beta"} in readers.seen and len(readers.seen) > 20
    assert readers.seen.index({"beta"}) > readers.seen.index({"alpha"})
    assert [(c.slug, c.published) for c in report.changes] == [("pastry-chef", True), ("versioned", True)]
    assert any(d.startswith("embedding versioned") and done == total for d, done, total in steps)
    assert any(d.startswith("writing pastry-chef") for d, _, _ in steps)

    with httpx.Client(base_url=url, timeout=60) as client:  # the new persona answers, no restart
        answer = client.post("/v1/ask", json={"question": "how do I measure flour?", "persona": "pastry-chef"}).json()
        personas = {p["slug"]: p for p in client.get("/v1/personas").json()["personas"]}
        health = client.get("/healthz")
    assert answer["grounded"] and answer["citations"][0]["id"] == "pastry-chef/rules-of-thumb/weigh-everything"
    assert personas["pastry-chef"]["example_questions"] == 0 and personas["pastry-chef"]["calibration"] == {
        "source": "rule", "min_score": 0.27, "boundary_margin": 0.09, "confident_score": 0.33}
    assert "persona enrich" in personas["pastry-chef"]["warnings"][0]
    assert health.status_code == 200 and health.json() == {"status": "ok"}  # a card without a sidecar is no fault
    assert version_of([c.metadata["text"] for c in Store(settings).chunks("versioned")]) == {"beta"}


def test_a_bad_card_is_refused_naming_file_and_field_and_nothing_changes(
        live: tuple[str, Settings], tmp_path: Path) -> None:
    url, settings = live
    store = Store(settings)
    before = store.pointer("versioned")
    good = CardFile(str(tmp_path / "pastry-chef.yaml"), CHEF)
    bad = CardFile("cards/broken.yaml", "title: Broken\nslug: broken\n")
    with pytest.raises(RemoteError) as caught:
        ingest_through(url, [good, bad])
    assert caught.value.message == "cards/broken.yaml: field 'sections': is required but missing"
    assert (caught.value.surface.status, caught.value.surface.code, caught.value.surface.exit_code) == (
        422, "invalid_card", 2)
    assert store.pointer("versioned") == before and store.slugs() == ["versioned"]


def test_prune_removes_a_card_no_longer_in_the_folder(live: tuple[str, Settings]) -> None:
    url, _ = live
    report = ingest_through(url, [CardFile("pastry-chef.yaml", CHEF)], prune=True)
    assert report.removed == ["versioned"] and report.lines()[-1].startswith("warning: pastry-chef has no example")
    with httpx.Client(base_url=url, timeout=60) as client:
        gone = client.post("/v1/ask", json={"question": "what is the rule about quota", "persona": "versioned"})
        assert [p["slug"] for p in client.get("/v1/personas").json()["personas"]] == ["pastry-chef"]
    assert gone.status_code == 404 and gone.json()["code"] == "unknown_persona"


def test_the_sidecar_travels_with_its_card_and_the_status_says_what_it_has(
        live: tuple[str, Settings], tmp_path: Path) -> None:
    url, _ = live
    card = tmp_path / "pastry-chef.yaml"
    card.write_text(CHEF, encoding="utf-8")
    (tmp_path / "pastry-chef.examples.yaml").write_text(
        "card: pastry-chef\nexamples:\n  pastry-chef/rules-of-thumb/weigh-everything:\n"
        "    - should i use cups for flour\n    - how do i get consistent cakes\n", encoding="utf-8")
    [change] = ingest_through(url, read_cards([card])).changes
    assert (change.status.examples, change.status.boundary, change.sidecar) == (2, 0, 2)
    assert [line.split(":")[0] for line in change.status.warnings("pastry-chef")] == [
        "pastry-chef has no boundary questions of its own (not_covered in pastry-chef.examples.yaml; the generic "
        "boundary stands in)"]


def test_only_a_client_allowed_to_ingest_is_heard(tmp_path: Path, embedder: Embedder) -> None:
    """With PERSONA_API_KEY: the key (401 without it); without one: this machine only (403 from elsewhere)."""
    keyed = Settings(data_dir=tmp_path / "keyed", rate_limit=None, api_key="s3cret")
    with uvicorn_server(create_app(keyed, service=PersonaService(keyed, embedder=embedder))) as url:
        refused = httpx.post(f"{url}/v1/ingest", json=request_body([CardFile("c.yaml", CHEF)], False))
        report = ingest_through(url, [CardFile("c.yaml", CHEF)], api_key="s3cret")
    assert refused.status_code == 401 and report.changes[0].published
    open_settings = Settings(data_dir=tmp_path / "open", rate_limit=None)
    with TestClient(create_app(open_settings, service=PersonaService(open_settings, embedder=embedder))) as remote:
        elsewhere = remote.post("/v1/ingest", json=request_body([CardFile("c.yaml", CHEF)], False))
        too_large = remote.post("/v1/ingest", content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert elsewhere.status_code == 403 and elsewhere.json()["code"] == "forbidden"
    assert too_large.status_code == 413  # not a client that may ingest: the ordinary body limit


def test_server_events_are_read_as_sent() -> None:
    lines = ["event: progress", 'data: {"description": "embedding x", "done": 1, "total": 2}', "",
             "event: report", 'data: {"changes": []}', "", "event: done", "data: {}", ""]
    assert list(server_events(lines)) == [("progress", {"description": "embedding x", "done": 1, "total": 2}),
                                          ("report", {"changes": []}), ("done", {})]


def test_the_seed_card_goes_through_whole(live: tuple[str, Settings]) -> None:
    """The shipped card with its 1,956 sidecar questions, sent as text: the same status as a local ingest."""
    url, _ = live
    [change] = ingest_through(url, read_cards([SEED])).changes
    assert (change.slug, change.chunks, change.sidecar, change.tuned) == ("sales-manager", 103, 1934, 89)
    assert (change.status.examples, change.status.boundary) == (1746, 188)
    assert change.status.warnings("sales-manager") == []
