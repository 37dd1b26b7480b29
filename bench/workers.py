"""``persona serve --workers N``: what each process holds in memory and what N workers serve, N = 1 then 2.

Every worker is a process with its own model, indexes and event loop, reading the one index the command holds; the
command itself is a supervisor (and, with more than one worker, multiprocessing's resource tracker runs beside it).
For each N: the server started over the bench's index, every worker warmed, each process's resident memory idle and
its unique memory (USS: what it holds that no other process shares), then new questions to ``/v1/ask`` and
``/v1/retrieve`` and the same question to ``/v1/ask`` at concurrency 16, with the highest resident memory of each
process under that load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.load import LoadPlan, load_with_cpu, run_load
from bench.servers import persona_server
from bench.stats import TreeRssSampler, rss_by_process, tree, uss_mb

Log = Callable[[str], None]
RUNS = (("/v1/ask", True), ("/v1/retrieve", True), ("/v1/ask", False))
"""What each worker count serves at concurrency 16: (endpoint, a new question each time)."""
CONCURRENCY = 16


def role(process: Any, server_pid: int, workers: int) -> str:
    """``server`` (one worker: the process serves), ``supervisor`` (the command, several workers), ``worker``, or
    ``helper`` (multiprocessing's resource tracker)."""
    if process.pid == server_pid:
        return "server" if workers == 1 else "supervisor"
    command = " ".join(process.cmdline())
    return "worker" if "spawn_main" in command else "helper"


def one_count(data_dir: Path, seeds_dir: Path | None, questions: Sequence[str], workers: int, seconds: float,
              work: Path, log: Log) -> dict[str, Any]:
    """``persona serve --workers workers``: each process's memory idle and under load, and the three runs."""
    serve_log = work / f"serve-workers-{workers}.log"
    serve_log.unlink(missing_ok=True)
    with persona_server(data_dir, seeds_dir=seeds_dir, log=serve_log, workers=workers) as server:
        run_load(server.url, LoadPlan("/v1/ask", 4 * workers, requests=40 * workers), questions)  # every worker warm
        time.sleep(1.0)
        processes = {p.pid: {"pid": p.pid, "role": role(p, server.pid, workers)} for p in tree(server.pid)}
        for pid, mb in rss_by_process(server.pid).items():
            processes[pid] |= {"idle_mb": round(mb, 1), "uss_mb": round(uss_mb(pid), 1)}
        with TreeRssSampler(server.pid) as sampler:
            runs = []
            for path, unique in RUNS:
                plan = LoadPlan(path, CONCURRENCY, seconds=seconds, unique=unique)
                row = load_with_cpu(server.url, server.pid, plan, questions)
                log(f"  {workers} worker(s), {path} {'new' if unique else 'same'} question c={CONCURRENCY}: "
                    f"{row['rps']} requests/s, p99 {row['p99']} ms, {row['errors']} errors")
                runs.append(row)
        for pid, mb in sampler.by_process.items():
            if pid in processes:
                processes[pid]["under_load_mb"] = round(mb, 1)
    return {"workers": workers, "processes": sorted(processes.values(), key=lambda p: p["role"]), "runs": runs,
            "total_under_load_mb": sampler.highest}


def compare_workers(data_dir: Path, seeds_dir: Path | None, questions: Sequence[str], counts: Sequence[int],
                    seconds: float, work: Path, log: Log) -> list[dict[str, Any]]:
    """:func:`one_count` for each worker count, one after the other (each server alone on the machine)."""
    log(f"persona serve --workers {' / '.join(map(str, counts))} ...")
    return [one_count(data_dir, seeds_dir, questions, n, seconds, work, log) for n in counts]
