"""Scale-out: the index on a Chroma server (`chroma run`), shared by several API processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.servers import chroma_server, free_port, running

ROOT = Path(__file__).resolve().parent.parent
PERSONA = [sys.executable, "-m", "persona"]


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("chroma-server")
    with chroma_server(root / "db", log=root / "chroma.log") as url:
        yield url


@pytest.fixture(scope="module")
def env(chroma_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of every process that shares the server's index (models stay local)."""
    local = tmp_path_factory.mktemp("local")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PERSONA_CHROMA_URL": chroma_url,
            "PERSONA_DATA_DIR": str(local), "PERSONA_MODELS_DIR": str(local / "models"),
            "PERSONA_SEEDS_DIR": str(ROOT / "seeds")}


@pytest.fixture(scope="module")
def ingested(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PERSONA, "ingest", str(ROOT / "seeds")], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_ingest_through_the_server(ingested: subprocess.CompletedProcess[str], env: dict[str, str]) -> None:
    assert ingested.returncode == 0, ingested.stderr
    assert "sales-manager:" in ingested.stderr and "embedded" in ingested.stderr
    assert "exporting all-MiniLM-L6-v2 to ONNX" in ingested.stderr  # once, before embedding with it
    assert (Path(env["PERSONA_DATA_DIR"]) / "models" / "all-MiniLM-L6-v2" / "model.onnx").is_file()
    assert not (Path(env["PERSONA_DATA_DIR"]) / "serving").exists()  # no local copies of a shared index
    again = subprocess.run([*PERSONA, "personas", "--json"], env=env, capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
    assert again.returncode == 0 and '"slug": "sales-manager"' in again.stdout


def test_two_api_workers_answer_from_one_chroma_server(ingested: subprocess.CompletedProcess[str],
                                                       env: dict[str, str]) -> None:
    """`uvicorn --workers 2` over the shared index: no lock conflict, both answer with citations."""
    assert ingested.returncode == 0, ingested.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--workers", "2",
               "--host", "127.0.0.1", "--port", str(port)]
    with (running(command, f"{base}/healthz", env={**env, "PYTHONPATH": str(ROOT)}, timeout=300),
          httpx.Client(base_url=base, timeout=60) as client):
        answers = [client.post("/v1/ask", json={"question": "How much pipeline do I need to hit quota?"})
                   for _ in range(6)]
        hits = client.post("/v1/retrieve", json={"query": "forecast accuracy", "k": 3}).json()["results"]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["grounded"] and body["citations"]
        assert all(c["id"].startswith("sales-manager/") for c in body["citations"])
    assert len(hits) == 3 and all(h["persona"] == "sales-manager" for h in hits)


def test_an_unreachable_chroma_server_is_reported_by_healthz(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from retrieval.settings import Settings
    from server.app import create_app

    settings = Settings(data_dir=tmp_path, chroma_url=f"http://127.0.0.1:{free_port()}", rate_limit=None)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert "cannot open the index" in health.json()["checks"]["index"]
        assert client.post("/v1/ask", json={"question": "forecast?"}).status_code == 503
