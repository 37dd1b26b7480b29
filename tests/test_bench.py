"""`persona bench` as a user runs it, on a small corpus: every part runs, every request is answered,
and every target of issue 8 is checked against the numbers of the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_bench_runs_every_part_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    env.pop("PERSONA_RATE_LIMIT", None)  # the bench must cope with the default rate limit itself
    done = subprocess.run([sys.executable, "-m", "persona", "bench", "--cards", "2", "--requests", "32", "-c", "1",
                           "-c", "16", "--no-scale-out", "--data-dir", str(tmp_path / "work"), "-o", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    rows = {(r["path"], r["concurrency"]): r for r in results["http"]}
    assert set(rows) == {(p, c) for p in ("/v1/retrieve", "/v1/ask") for c in (1, 16)}
    for row in rows.values():
        assert row["errors"] == 0, row
        assert 0 < row["p50"] <= row["p95"] <= row["p99"] and row["rps"] > 0
    assert {"sentence-transformers", "onnx"} <= set(results["floor"])
    assert len(results["cold_start_s"]) == 3 and all(s > 0 for s in results["cold_start_s"])
    assert results["ingest"]["cards"] == 2 and results["ingest"]["chunks"] > 0
    assert len(results["targets"]) == 6 and all(isinstance(t["met"], bool) for t in results["targets"])
    assert "| target | measured | met |" in done.stdout
