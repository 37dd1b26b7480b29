"""The bench's one load generator: POSTs to ``/v1/retrieve`` or ``/v1/ask`` at a fixed concurrency.

``wrk`` (a C load generator; Debian package ``wrk``) drives the load when it is on the PATH: one wrk
thread, a Lua script that builds a new question per request (so the server's embedding cache never
hits) or sends the same one (to measure the path without the embedder), and prints its latency
percentiles as one JSON line that :func:`parse_wrk` reads.

Without wrk, the fallback is a raw-socket asyncio client in this process: requests are plain HTTP/1.1
bytes written on keep-alive connections and responses are read by Content-Length, with no HTTP
library. Against a stub server on the 2-core development machine the client's CPU per request was
about 0.07 ms for wrk (Lua body building included), 0.3 ms for this fallback and 3 ms for an httpx
client (which took a large share of the server's two cores in earlier benchmarks).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.stats import cpu_seconds, summary_ms

FIELDS = {"/v1/retrieve": "query", "/v1/ask": "question"}
WRK_MARK = "BENCH-WRK "
WRK_STOPPED = "BENCH-WRK-STOPPED"  # the script's thread stopped after its requests: wrk's main thread needs a SIGINT
WRK_CAP_SECONDS = 900  # the longest a request-counted wrk run may take


@dataclass(frozen=True)
class LoadPlan:
    """One load run: the endpoint, concurrency and either a duration or a number of requests."""

    path: str
    concurrency: int
    seconds: float | None = None
    requests: int | None = None
    unique: bool = True  # a new question per request; False: the same question (cached embedding)
    tag: str = field(default_factory=lambda: os.urandom(3).hex())  # keeps unique questions new across runs
    persona: str | None = None  # the persona asked (needed once several are indexed)

    @property
    def method(self) -> str:
        """POST a question to ``/v1/retrieve`` and ``/v1/ask``; GET any other path (``/v1/personas``: the HTTP stack
        with the least work behind it)."""
        return "POST" if self.path in FIELDS else "GET"

    def body(self, text: str) -> dict[str, str]:
        """One request's JSON body."""
        return {**({"persona": self.persona} if self.persona else {}), FIELDS[self.path]: text}


@dataclass
class LoadResult:
    """What one run measured (latencies of every completed response, in ms)."""

    path: str
    concurrency: int
    unique: bool
    generator: str
    requests: int
    seconds: float
    p50: float
    p99: float
    mean: float
    errors: int
    error_kinds: dict[str, int]

    @property
    def rps(self) -> float:
        return round(self.requests / self.seconds, 1) if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps}


def generator() -> str:
    """The load generator this machine uses: ``wrk`` when installed, else ``sockets`` (the fallback)."""
    return "wrk" if shutil.which("wrk") else "sockets"


def question(questions: Sequence[str], i: int, plan: LoadPlan) -> str:
    """The ``i``-th question (0-based) of a run: made unique with the run's tag and ``i``, or not."""
    text = questions[i % len(questions)]
    return f"{text} #{plan.tag}-{i}" if plan.unique else questions[0]


def run_load(base_url: str, plan: LoadPlan, questions: Sequence[str]) -> LoadResult:
    """Run ``plan`` against ``base_url`` with wrk, or with the fallback when wrk is absent."""
    if plan.seconds is None and plan.requests is None:
        raise ValueError("a load plan needs seconds or requests")
    if generator() == "wrk":
        return run_wrk(base_url, plan, questions)
    return asyncio.run(run_sockets(base_url, plan, questions))


def load_with_cpu(base_url: str, pid: int, plan: LoadPlan, questions: Sequence[str]) -> dict[str, Any]:
    """One run's row, with the CPU the server (process ``pid`` and its workers) spent: core-ms a request and the cores
    it got on average (on a machine shared with other work it may get fewer than all, which the limit assumes)."""
    before = cpu_seconds(pid)
    row = run_load(base_url, plan, questions).as_dict()
    spent = cpu_seconds(pid) - before
    row["server_cpu_ms"] = round(spent * 1000 / row["requests"], 2) if row["requests"] else 0.0
    row["server_cores"] = round(spent / row["seconds"], 2) if row["seconds"] else 0.0
    return row


# -- wrk ----------------------------------------------------------------------------------------
def wrk_script(plan: LoadPlan, questions: Sequence[str]) -> str:
    """The Lua script: one body per request (unique or not; none for a GET), a request limit, results as one JSON
    line."""
    posting = plan.method == "POST"
    escaped = [json.dumps(q)[1:-1] for q in (questions if plan.unique else questions[:1])] if posting else ["-"]
    if any("]==]" in q for q in escaped):
        raise ValueError("a question contains ']==]'")
    listed = ",\n".join(f"  [==[{q}]==]" for q in escaped)
    limit = plan.requests or 0
    made = "wrk.format(nil, nil, nil, prefix .. text .. '\"}')" if posting else "wrk.format(nil, nil, nil, nil)"
    return f"""-- generated by bench/load.py
local questions = {{
{listed}
}}
local prefix = '{json.dumps(plan.body(""))[:-2] if posting else ""}'
local unique = {"true" if plan.unique else "false"}
local tag = "{plan.tag}"
local limit = {limit}
local sent = 0
local received = 0

wrk.method = "{plan.method}"
wrk.headers["Content-Type"] = "application/json"

function request()
  local text = questions[sent % #questions + 1]
  if unique then text = text .. " #" .. tag .. "-" .. sent end
  sent = sent + 1
  return {made}
end

if limit > 0 then
  function response(status, headers, body)
    received = received + 1
    if received == limit then
      io.write("{WRK_STOPPED}\\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{WRK_MARK}{{"requests": %.0f, "duration_us": %.0f, "p50_us": %.0f, "p99_us": %.0f, "mean_us": %.3f, '
    .. '"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_command(base_url: str, plan: LoadPlan, script: Path) -> list[str]:
    """One wrk thread (the client stays off the server's cores), ``concurrency`` connections."""
    seconds = WRK_CAP_SECONDS if plan.requests else max(1, math.ceil(plan.seconds or 1))
    return ["wrk", "-t", "1", "-c", str(plan.concurrency), "-d", f"{seconds}s", "--timeout", "60s",
            "-s", str(script), base_url.rstrip("/") + plan.path]


def parse_wrk(output: str, plan: LoadPlan) -> LoadResult:
    """The :class:`LoadResult` in wrk's output (the JSON line the script's ``done`` prints)."""
    line = next((x for x in output.splitlines() if x.startswith(WRK_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no results:\n{output[-2000:]}")
    raw = json.loads(line[len(WRK_MARK):])
    kinds = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    return LoadResult(path=plan.path, concurrency=plan.concurrency, unique=plan.unique, generator="wrk",
                      requests=int(raw["requests"]), seconds=round(raw["duration_us"] / 1e6, 3),
                      p50=round(raw["p50_us"] / 1000, 2), p99=round(raw["p99_us"] / 1000, 2),
                      mean=round(raw["mean_us"] / 1000, 2), errors=sum(kinds.values()), error_kinds=kinds)


def run_wrk(base_url: str, plan: LoadPlan, questions: Sequence[str]) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="persona-wrk-") as folder:
        script = Path(folder) / "load.lua"
        script.write_text(wrk_script(plan, questions))
        with subprocess.Popen(wrk_command(base_url, plan, script), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as process:
            output, errors = _wait_for_wrk(process, plan)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {errors[-2000:]}")
    return parse_wrk(output, plan)


def _wait_for_wrk(process: subprocess.Popen, plan: LoadPlan) -> tuple[str, str]:
    """wrk's stdout and stderr. wrk's main thread sleeps for the whole ``-d``: when the script has stopped
    its thread after ``plan.requests`` responses, a SIGINT ends the sleep and wrk prints its results."""
    lines = []
    if plan.requests and process.stdout is not None:
        for line in process.stdout:
            lines.append(line)
            if line.startswith(WRK_STOPPED):
                process.send_signal(signal.SIGINT)
                break
    output, errors = process.communicate(timeout=WRK_CAP_SECONDS + 60)
    return "".join(lines) + output, errors


# -- the fallback: raw sockets ------------------------------------------------------------------
def http_request(host: str, path: str, body: bytes | None) -> bytes:
    """A POST of ``body`` (JSON), or a GET when there is none."""
    if body is None:
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response with a Content-Length body; its status and whether the server keeps the connection."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head.split(" ", 2)[1])
    length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.startswith("content-length:")),
                  None)
    if length is None:
        raise ValueError("a response without Content-Length")
    await reader.readexactly(length)
    return status, "connection: close" not in head


async def run_sockets(base_url: str, plan: LoadPlan, questions: Sequence[str]) -> LoadResult:
    """The fallback load generator: ``concurrency`` keep-alive connections, each one request at a time."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = itertools.count()
    limit = plan.requests or math.inf
    start = time.perf_counter()
    deadline = start + plan.seconds if plan.seconds else math.inf

    async def worker() -> None:
        writer: asyncio.StreamWriter | None = None
        while (i := next(counter)) < limit and time.perf_counter() < deadline:
            body = json.dumps(plan.body(question(questions, i, plan))).encode() if plan.method == "POST" else None
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                sent = time.perf_counter()
                writer.write(http_request(url.netloc, plan.path, body))
                status, keep = await read_response(reader)
                latencies.append((time.perf_counter() - sent) * 1000)
                if status >= 400:
                    errors[f"HTTP {status}"] += 1
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                errors[type(exc).__name__] += 1
                keep = False
            if not keep and writer is not None:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    seconds = time.perf_counter() - start
    return LoadResult(path=plan.path, concurrency=plan.concurrency, unique=plan.unique, generator="sockets",
                      requests=len(latencies), seconds=round(seconds, 3), **summary_ms(latencies),
                      errors=sum(errors.values()), error_kinds=dict(errors))

