"""Local servers for the benchmark and the tests: ``persona serve``, Chroma and a llama.cpp LLM server as
subprocesses, an ASGI app under uvicorn in a thread, free ports. The one place that starts a server, waits
until it answers and stops it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMA_CLI = "import sys; from chromadb.cli.cli import app; sys.argv[0] = 'chroma'; app()"
# As `make serve` runs the server (fewer glibc arenas for the worker threads), offline, no telemetry.
SERVE_ENV = {"HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "MALLOC_ARENA_MAX": "2"}


def free_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1 (handed to a server: no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with free_socket() as sock:
        return int(sock.getsockname()[1])


def answers(url: str, body: dict[str, Any] | None = None) -> bool:
    """Whether ``url`` answers 200 now (a GET, or a POST of ``body``)."""
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.post(url, json=body, timeout=30) if body is not None else httpx.get(url, timeout=1.0)
        return response.status_code == 200
    return False


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60.0,
                  body: dict[str, Any] | None = None) -> float:
    """Poll ``url`` (POST ``body`` when given) until it answers 200; the seconds waited.

    Raises when the process dies or time runs out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before {url} answered")
        if answers(url, body):
            return time.perf_counter() - start
        time.sleep(0.01)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Terminate ``process`` and wait for it (kill it after 15 s)."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running(command: Sequence[str], ready_url: str, env: dict[str, str] | None = None,
            log: Path | None = None, timeout: float = 120.0, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start ``command`` (in ``cwd``), wait until ``ready_url`` answers, and stop the process afterwards."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
        process = subprocess.Popen(list(command), env={**os.environ, **(env or {})}, stdout=out,
                                   stderr=subprocess.STDOUT, cwd=cwd)
        stack.callback(stop, process)
        wait_until_up(ready_url, process, timeout)
        yield process


@dataclass(frozen=True)
class Served:
    """A running ``persona serve``: its base URL and process id."""

    url: str
    pid: int


def serve_command(data_dir: Path, port: int, ingest: bool = False, workers: int = 1) -> list[str]:
    """``persona serve`` on loopback ``port`` over ``data_dir`` (this checkout's code first on the path), with
    ``workers`` processes."""
    return [sys.executable, "-m", "persona", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--ingest" if ingest else "--no-ingest", *(["--workers", str(workers)] if workers != 1 else [])]


def serve_env(seeds_dir: Path | None = None, rate_limit: str = "off", **extra: str) -> dict[str, str]:
    """The server's environment: as `make serve`, rate limit off by default (one client sends all the load)."""
    env = {**SERVE_ENV, "PYTHONPATH": str(ROOT), "PERSONA_RATE_LIMIT": rate_limit, **extra}
    if seeds_dir is not None:
        env["PERSONA_SEEDS_DIR"] = str(seeds_dir)
    return env


@contextlib.contextmanager
def persona_server(data_dir: Path, *, ingest: bool = False, seeds_dir: Path | None = None,
                   log: Path | None = None, timeout: float = 600.0, workers: int = 1, **env: str) -> Iterator[Served]:
    """``persona serve`` on a free port until the block ends (``ingest``: seeds first; allow minutes; ``workers``:
    its ``--workers``, each of which has started when the block begins)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(serve_command(data_dir, port, ingest, workers), f"{url}/healthz", env=serve_env(seeds_dir, **env),
                 log=log, timeout=timeout) as process:
        if workers > 1:
            wait_for_workers(process, workers, log, timeout)
        yield Served(url, process.pid)


def wait_for_workers(process: subprocess.Popen, workers: int, log: Path | None, timeout: float) -> None:
    """Wait until every worker of a ``persona serve --workers N`` has finished starting (its log says "Application
    startup complete" once a worker); without a log, a fixed pause."""
    deadline = time.monotonic() + timeout
    while log is not None and log.read_text(errors="replace").count("Application startup complete") < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not all start (see {log})")
        time.sleep(0.1)
    if log is None:
        time.sleep(10)


@contextlib.contextmanager
def chroma_server(path: Path, port: int | None = None, log: Path | None = None) -> Iterator[str]:
    """A Chroma server (``chroma run --path``) on a free loopback port; yields its URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", CHROMA_CLI, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    with running(command, f"{url}/api/v2/heartbeat", env={"ANONYMIZED_TELEMETRY": "False"}, log=log):
        yield url


@contextlib.contextmanager
def uvicorn_server(app: object, timeout: float = 120.0) -> Iterator[str]:
    """Serve an ASGI ``app`` in a background thread until the block ends; yields ``http://127.0.0.1:PORT``."""
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class LlamaServer:
    """``python -m llama_cpp.server`` (an OpenAI-compatible LLM server) with ``model`` (a GGUF) on a free port;
    ``url`` ends in ``/v1``; stop() ends it (the upstream goes down). Tests use the Gemma 3 270M GGUF."""

    def __init__(self, model: Path, chat_format: str = "gemma", timeout: float = 180.0) -> None:
        with free_socket() as sock:
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        # Its log goes to a file: llama.cpp and uvicorn write enough to fill a pipe nobody reads,
        # which would block the server.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's lifetime, closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", "4096", "--chat_format", chat_format, "--verbose", "False"],
            stdout=self.log, stderr=subprocess.STDOUT,
            # llama_cpp.server's settings read PORT and HOST from the environment over its flags.
            env={k: v for k, v in os.environ.items() if k not in {"PORT", "HOST"}})
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama_cpp.server did not start in {timeout:.0f}s")
            time.sleep(0.5)

    def stop(self) -> None:
        stop(self.process)
        self.log.close()
