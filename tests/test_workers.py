"""``persona serve --workers 2`` as a user runs it: two worker processes, each with its own model, answer over one
index the command holds; a live ingest is refused (they only read the index), ``persona ingest`` beside the server
says why; the command stops its workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from bench.load import LoadPlan, run_load
from bench.questions import bench_questions
from bench.servers import persona_server
from bench.stats import tree
from bench.workers import role
from tests.conftest import SEED


def test_two_workers_answer_over_one_index_that_only_they_read(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED, seeds / SEED.name)
    log = tmp_path / "serve.log"
    with persona_server(tmp_path / "index", ingest=True, seeds_dir=seeds, log=log, workers=2) as server:
        result = run_load(server.url, LoadPlan("/v1/ask", 8, requests=64), bench_questions())
        assert result.errors == 0 and result.requests >= 64
        processes = tree(server.pid)
        roles = sorted(role(p, server.pid, 2) for p in processes)
        assert roles.count("worker") == 2 and "supervisor" in roles
        workers = [p for p in processes if role(p, server.pid, 2) == "worker"]
        assert all(p.memory_info().rss > 150e6 for p in workers)  # each loaded its model and answered
        assert all(p.environ().get("PERSONA_EMBED_THREADS") == str(max(1, (os.cpu_count() or 1) // 2))
                   for p in workers)  # the cores shared out
        body = httpx.post(f"{server.url}/v1/ask", json={"question": "What is OTE?"}, timeout=30).json()
        assert body["citations"][0]["id"].startswith("sales-manager/")

        refused = httpx.post(f"{server.url}/v1/ingest", timeout=30,
                             json={"cards": [{"path": "a.yaml", "text": SEED.read_text()}]})
        assert refused.status_code == 403 and "2 worker processes" in refused.json()["detail"]
        env = {**os.environ, "PERSONA_DATA_DIR": str(tmp_path / "index"), "HF_HUB_OFFLINE": "1"}
        beside = subprocess.run([sys.executable, "-m", "persona", "ingest", str(seeds)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert beside.returncode == 2 and "only read the index" in beside.stderr  # through the server, refused
    _, alive = psutil.wait_procs(processes, timeout=15)  # the workers and the resource tracker end with the command
    assert not alive, alive
    assert log.read_text().count("Application startup complete") == 2
