"""Local servers for benchmarks and integration tests: a Chroma server, a persona API, free ports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

CHROMA_CLI = "import sys; from chromadb.cli.cli import app; sys.argv[0] = 'chroma'; app()"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60.0) -> float:
    """Poll ``url`` until it answers 200; the seconds waited. Raises when the process dies or time runs out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def running(command: Sequence[str], ready_url: str, env: dict[str, str] | None = None,
            log: Path | None = None, timeout: float = 120.0) -> Iterator[subprocess.Popen]:
    """Start ``command``, wait until ``ready_url`` answers, and stop the process afterwards."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(list(command), env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(ready_url, process, timeout)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            out.close()


@contextlib.contextmanager
def chroma_server(path: Path, port: int | None = None, log: Path | None = None) -> Iterator[str]:
    """A Chroma server (``chroma run --path``) on a free loopback port; yields its URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", CHROMA_CLI, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    with running(command, f"{url}/api/v2/heartbeat", env={"ANONYMIZED_TELEMETRY": "False"}, log=log):
        yield url


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory of a process now and at its peak, in MB (Linux /proc)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)
