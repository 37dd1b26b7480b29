"""Faults: re-ingest while serving, ``persona ingest`` killed with SIGKILL midway, and the embedding
model or the Chroma server missing. Readers always see one complete version of a persona."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from generation.service import PersonaService
from ingest.indexer import ingest
from retrieval.embedder import Embedder, onnx_folder
from retrieval.settings import DEFAULT_MODEL, Settings
from retrieval.store import Store
from server.app import create_app
from tests.conftest import ROOT

TOPICS = ["forecasting", "coaching", "hiring", "pricing", "pipeline", "territories", "onboarding", "quota",
          "renewals", "discounts", "handoffs", "tooling", "ethics", "reviews", "planning", "churn"]


def versioned_card(path: Path, tag: str, sections: int = 12, items: int = 6) -> Path:
    """A card whose every passage carries ``tag``, so a reader can tell which version it sees."""
    lines = ["title: Versioned", "slug: versioned", f"summary: Version {tag} of a card.", "sections:"]
    for s in range(sections):
        topic = TOPICS[s % len(TOPICS)]
        lines += [f"  - heading: {topic.title()} {s}", "    markdown: |"]
        lines += [f"      - **Rule {i} {tag}.** In version {tag}, rule {i} about {topic} holds." for i in range(items)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def version_of(texts: list[str]) -> set[str]:
    return {tag for tag in ("alpha", "beta") if any(f"version {tag}" in t.lower() for t in texts)}


# -- re-ingest while serving -------------------------------------------------------------------------
def test_queries_during_reingest_see_one_complete_version(settings: Settings, tmp_path: Path,
                                                          embedder: Embedder) -> None:
    alpha = versioned_card(tmp_path / "alpha.yaml", "alpha")
    beta = versioned_card(tmp_path / "beta.yaml", "beta")
    store = Store(settings)
    ingest([alpha], store, embedder, settings.model)
    service = PersonaService(settings, embedder=embedder, store=store)
    expected_chunks = store.persona("versioned").chunks
    stop = threading.Event()
    seen: list[str] = []
    failures: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            query = f"what is the rule about {rng.choice(TOPICS)}"
            try:
                if rng.random() < 0.25:
                    answer = service.ask(query, k=8)
                    texts = [c.text for c in answer.citations] or [answer.text]
                    versions = version_of(texts) if answer.citations else {"unknown"}
                else:
                    info, hits = service.retrieve(query, k=10)
                    if len(hits) != 10 or info.chunks != expected_chunks:
                        failures.append(f"incomplete index: {len(hits)} hits, {info.chunks} chunks")
                    versions = version_of([h.text for h in hits])
                if len(versions - {"unknown"}) > 1:
                    failures.append(f"mixed versions {versions} for {query!r}")
                seen.extend(versions)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        published = []
        for card in (beta, alpha, beta):  # three rebuilds under load, each a full re-embed
            report = ingest([card], store, embedder, settings.model)
            published.append(report.changes[0].published)
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert published == [True, True, True]
    assert not failures, failures[:5]
    assert {"alpha", "beta"} <= set(seen) and len(seen) > 20  # the readers really ran across the switches
    assert version_of([c.metadata["text"] for c in store.chunks("versioned")]) == {"beta"}
    live = {p["collection"] for p in store._pointers().values()}
    assert {n for n in store._collection_names() if n.startswith("p-")} == live


# -- kill -9 of `persona ingest` ---------------------------------------------------------------------
CHECK = r"""
import json, sys
from retrieval.settings import DEFAULT_MODEL, Settings
from retrieval.store import Store
store = Store(Settings(data_dir=sys.argv[1]))
out = {"personas": {}, "collections": sorted(n for n in store._collection_names() if n.startswith("p-"))}
for info in store.personas():
    pointer = store.pointer(info.slug)
    texts = [c.metadata["text"] for c in store.chunks(info.slug)]
    out["personas"][info.slug] = {"collection": pointer["collection"], "chunks": info.chunks,
                                  "stored": len(texts), "fingerprint": info.fingerprint,
                                  "versions": sorted({t for t in ("alpha", "beta") for x in texts
                                                      if "version " + t in x.lower()})}
print(json.dumps(out))
"""


def cli_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PERSONA_DATA_DIR": str(data_dir), "ANONYMIZED_TELEMETRY": "False"}


def fresh_models(data_dir: Path) -> Path:
    """A models folder of its own with the session's ONNX export and no vector cache (retrieval/vector_cache.py):
    every ingest embeds for real, so it takes long enough to be killed midway."""
    shared = onnx_folder(Path(os.environ["PERSONA_MODELS_DIR"]), DEFAULT_MODEL)
    folder = data_dir.parent / f"models-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / shared.name).symlink_to(shared, target_is_directory=True)
    return folder


def index_state(data_dir: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHECK, str(data_dir)], capture_output=True, text=True, check=False,
                          cwd=ROOT, timeout=120, env=cli_env(data_dir))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_ingest(card: Path, data_dir: Path) -> subprocess.Popen:
    env = {**cli_env(data_dir), "PERSONA_MODELS_DIR": str(fresh_models(data_dir))}
    return subprocess.Popen([sys.executable, "-m", "persona", "ingest", str(card)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_one_complete_version(state: dict) -> str:
    persona = state["personas"]["versioned"]
    assert persona["stored"] == persona["chunks"], persona  # the live collection is complete
    assert len(persona["versions"]) == 1, persona  # and holds one version only
    assert persona["collection"] in state["collections"]
    return persona["versions"][0]


def files_signature(folder: Path) -> tuple:
    """What the index's files look like right now (names, sizes, modification times)."""
    if not folder.exists():
        return ()
    return tuple(sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*") if f.is_file()))


def wait_for_publish_start(process: subprocess.Popen, folder: Path, quiet: float = 1.0) -> bool:
    """Block until the ingest starts writing its new version: the index files change again after
    being quiet for ``quiet`` seconds (opening the index writes; then the model loads and embeds)."""
    signature, changed_at, touched, opened = files_signature(folder), time.monotonic(), False, False
    while process.poll() is None:
        time.sleep(0.005)
        now = files_signature(folder)
        if now != signature:
            if opened:
                return True
            signature, changed_at, touched = now, time.monotonic(), True
        elif touched and time.monotonic() - changed_at > quiet:
            opened = True
    return False


def test_ingest_killed_midway_leaves_a_consistent_index(tmp_path: Path) -> None:
    data_dir = tmp_path / "index"
    # Large enough (840 passages) that embedding and writing take seconds even on the fast ONNX path.
    cards = {tag: versioned_card(tmp_path / f"{tag}.yaml", tag, sections=40, items=20) for tag in ("alpha", "beta")}
    first = start_ingest(cards["alpha"], data_dir)
    assert first.wait(timeout=600) == 0, first.stderr.read() if first.stderr else ""
    assert assert_one_complete_version(index_state(data_dir)) == "alpha"

    rng = random.Random(int(os.environ.get("PERSONA_FAULT_SEED", "6")))
    outcomes = []
    current = "alpha"
    for attempt, phase in enumerate(rng.sample(["embedding", "publishing", "publishing", "publishing"], 4)):
        target = "beta" if current == "alpha" else "alpha"
        process = start_ingest(cards[target], data_dir)
        if phase == "embedding":
            time.sleep(rng.uniform(2.0, 6.0))
        elif wait_for_publish_start(process, data_dir / "chroma"):
            time.sleep(rng.uniform(0.0, 0.25))  # somewhere in: add, pointer switch, drop of the old version
        fate = "finished" if process.poll() is not None else "killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        state = index_state(data_dir)
        seen = assert_one_complete_version(state)  # old or new, complete, never a mix
        assert seen in {current, target}
        outcomes.append((attempt, phase, fate, "new" if seen == target else "old", len(state["collections"])))
        current = seen
    print("kill -9 outcomes (attempt, phase, fate, version served, collections on disk):", outcomes)
    assert sum(1 for o in outcomes if o[2] == "killed") >= 3

    final = start_ingest(cards["beta"] if current == "alpha" else cards["alpha"], data_dir)
    assert final.wait(timeout=600) == 0, final.stderr.read() if final.stderr else ""
    state = index_state(data_dir)
    assert assert_one_complete_version(state) != current
    assert state["collections"] == [state["personas"]["versioned"]["collection"]]  # orphans swept


# -- the model or the index unavailable ----------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_missing_model_and_unreachable_chroma_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "index", chroma_url=f"http://127.0.0.1:{port}",
                        model=str(tmp_path / "no-such-model"), rate_limit=None)
    with caplog.at_level(logging.ERROR, logger="server.health"), \
            TestClient(create_app(settings), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        ask = client.post("/v1/ask", json={"question": "What is OTE?"})
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    checks = health.json()["checks"]
    assert f"127.0.0.1:{port}" in checks["index"] and "no-such-model" in checks["model"]
    assert ask.status_code == 503 and ask.json()["code"] in {"index_unavailable", "model_unavailable"}
    assert "Traceback" not in ask.text
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "start-up check failed: index" in logged and "start-up check failed: model" in logged


def wait_http(url: str, timeout: float = 120) -> int:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=5).status_code
        except httpx.TransportError:
            time.sleep(0.3)
    raise TimeoutError(url)


def test_server_starts_says_what_is_wrong_and_recovers_when_chroma_comes_up(tmp_path: Path) -> None:
    chroma = [sys.executable, "-c", "import sys; from chromadb.cli.cli import app; sys.argv[0] = 'chroma'; app()"]
    chroma_port, api_port = free_port(), free_port()
    env = {**cli_env(tmp_path / "index"), "PERSONA_CHROMA_URL": f"http://127.0.0.1:{chroma_port}"}
    server = subprocess.Popen([sys.executable, "-m", "persona", "serve", "--no-ingest", "--port", str(api_port)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chroma_server = None
    try:
        assert wait_http(f"http://127.0.0.1:{api_port}/healthz") == 503
        import httpx

        body = httpx.get(f"http://127.0.0.1:{api_port}/healthz").json()
        assert set(body["checks"]) == {"index"} and f"127.0.0.1:{chroma_port}" in body["checks"]["index"]
        chroma_server = subprocess.Popen([*chroma, "run", "--path", str(tmp_path / "chroma"), "--host",
                                          "127.0.0.1", "--port", str(chroma_port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while "index" in (body := httpx.get(f"http://127.0.0.1:{api_port}/healthz").json()).get("checks", {}):
            assert time.monotonic() < deadline, "the server did not recover once Chroma was up"
            time.sleep(0.5)
        # The new Chroma server is empty: running, reachable, but not ready until a persona is ingested.
        assert body["status"] == "degraded" and set(body["checks"]) == {"personas"}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
        if chroma_server:
            chroma_server.kill()
            chroma_server.wait()
    errors = [json.loads(line) for line in stderr.splitlines() if line.startswith("{") and '"ERROR"' in line]
    assert any("start-up check failed: index" in e["message"] and str(chroma_port) in e["message"] for e in errors)
    assert "Traceback" not in stderr
