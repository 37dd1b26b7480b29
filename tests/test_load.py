"""The bounded load test (bench/load_test.py) on loopback: a real `persona serve`, thousands of
requests to /v1/retrieve and /v1/ask at concurrency 32, zero errors, and resident memory that
stops growing (at most 10% from the first to the last thousand requests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

REQUESTS = int(os.environ.get("PERSONA_LOAD_REQUESTS", "5000"))


def test_load_zero_errors_and_flat_memory() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "load_test.py"), "--requests", str(REQUESTS),
                           "--concurrency", "32", "--json"],
                          capture_output=True, text=True, check=False, cwd=ROOT, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print("load test:", json.dumps(figures))
    assert figures["requests"] == REQUESTS
    assert figures["errors"] == 0, figures["error_kinds"]
    assert figures["rss_growth_first_to_last_thousand"] <= 0.10, figures["rss_mib"]
