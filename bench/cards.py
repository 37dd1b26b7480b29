"""Many cards in one service (issue 24): what 100 cards cost against one.

``python -m bench.cards --cards 100 -o cards.json`` (or ``make bench-cards``), in order:

1. the ONNX export, once, in a models folder of the run's own with no vector cache: every text is embedded;
2. one card (the seed with its sidecar) ingested with ``persona ingest`` into one index, and ``--cards`` copies
   of it (:func:`bench.scale.copied_cards`: new slugs, titles and sidecar questions, so each copy's 2,059 texts
   are new to the model) into another, timed;
3. each index's cold start, ``persona serve --no-ingest`` as ``make serve`` runs it, to the first answer from one
   card (``--cold-starts`` times, taking turns);
4. both served at once: resident memory once the background warm-up has settled (idle), then ``/v1/ask`` to one
   card at c=1 and at c=16 under wrk (a new question each), each server in turn for ``--rounds`` rounds so that both
   meet the same machine (its two cores are shared with other work), and the highest RSS of each under its load;
5. on the many-card server: a card ingested live (``persona ingest`` through the server), then another while
   ``/v1/ask`` runs at c=1 for as long as the first took: the questions' latency and errors meanwhile;
6. optionally (``--chroma-reads``) the many-card server's idle RSS with the serving copies set aside, so that every
   persona is read from Chroma as before them.

The targets: RSS under load with the many cards at most 350 MB plus the vectors' own size (read from the serving
copies), p50 at c=1 within 1.2 x the one card's, cold start at most 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import LoadPlan, generator, run_load
from bench.questions import bench_questions
from bench.run import cold_start, machine
from bench.scale import copied_cards
from bench.servers import ROOT, SERVE_ENV, persona_server
from bench.stats import MB, RssSampler
from retrieval import snapshot
from retrieval.embedder import ensure_onnx
from retrieval.settings import DEFAULT_MODEL

Log = Callable[[str], None]
SEED = ROOT / "seeds" / "sales-manager.yaml"
RSS_BASE_MB = 350
P50_RATIO = 1.2
COLD_START_S = 3.0
SETTLE_SECONDS = 4.0  # RSS idle: no sample moved more than 2 MB for this long (the background warm-up is done)


@dataclass(frozen=True)
class CardsOptions:
    cards: int = 100
    seconds: float = 5.0  # of load per level and round
    rounds: int = 3  # each level run this many times on each server, taking turns
    cold_starts: int = 3
    chroma_reads: bool = False
    work_dir: Path | None = None


def fresh_models(work: Path) -> Path:
    """A models folder with the ONNX export and no vector cache yet (so ingest embeds every text)."""
    folder = work / "models"
    ensure_onnx(DEFAULT_MODEL, folder, "onnx")
    return folder


def env_of(data_dir: Path, models: Path) -> dict[str, str]:
    return {**SERVE_ENV, "PYTHONPATH": str(ROOT), "PERSONA_DATA_DIR": str(data_dir),
            "PERSONA_MODELS_DIR": str(models)}


def timed_ingest(paths: Sequence[Path], data_dir: Path, models: Path) -> dict[str, Any]:
    """``persona ingest PATHS`` as an operator runs it: its seconds and its last lines."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "persona", "ingest", *map(str, paths)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **env_of(data_dir, models)}, timeout=6 * 3600, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"persona ingest exited {done.returncode}: {done.stderr[-2000:]}")
    return {"cards": len(paths), "seconds": round(seconds, 1), "tail": done.stderr.strip().splitlines()[-3:]}


def stored(data_dir: Path) -> dict[str, Any]:
    """What the index serves: chunks, the vectors' own size and their metadata's, from the serving copies."""
    chunks = vectors = metadata = 0
    for path in snapshot.folder_of(data_dir).glob(f"*{snapshot.SUFFIX}"):
        with np.load(path, allow_pickle=False) as archive:
            chunks += len(archive["vectors"])
            vectors += archive["vectors"].nbytes
            metadata += archive["header"].nbytes
    return {"chunks": chunks, "vectors_mb": round(vectors / MB, 1), "metadata_json_mb": round(metadata / MB, 1)}


def settled(sampler: RssSampler, timeout: float = 300.0) -> float:
    """RSS once it has stopped moving (within 2 MB for ``SETTLE_SECONDS``): the idle server, warm-up done."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(0.5)
        window = sampler.samples[-int(SETTLE_SECONDS / sampler.every):]
        if len(window) * sampler.every >= SETTLE_SECONDS and max(window) - min(window) <= 2.0:
            return round(window[-1], 1)
    return round(sampler.samples[-1], 1)


LEVELS = (1, 16)


@dataclass
class Served:
    """One index served for the comparison: its server, its RSS sampler and the persona asked."""

    name: str
    url: str
    sampler: RssSampler
    persona: str


def interleaved_levels(servers: Sequence[Served], questions: Sequence[str], seconds: float,
                       rounds: int) -> dict[str, dict[str, Any]]:
    """``/v1/ask`` at c=1 then c=16 on each server in turn, ``rounds`` times (a new question each), so that both meet
    the same machine (its cores are shared): per server and level the median over the rounds of p50 and of p99,
    requests/s summed over the rounds' time, errors summed, every round kept."""
    for server in servers:
        run_load(server.url, LoadPlan("/v1/ask", 4, requests=40, persona=server.persona), questions)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for c in LEVELS:
        for _ in range(rounds):
            for server in servers:
                plan = LoadPlan("/v1/ask", c, seconds=seconds, persona=server.persona)
                runs.setdefault((server.name, c), []).append(run_load(server.url, plan, questions).as_dict())
    found: dict[str, dict[str, Any]] = {}
    for (name, c), rows in runs.items():
        requests, spent = sum(r["requests"] for r in rows), sum(r["seconds"] for r in rows)
        found.setdefault(name, {})[f"c={c}"] = {
            "p50": round(statistics.median(r["p50"] for r in rows), 2),
            "p99": round(statistics.median(r["p99"] for r in rows), 2),
            "rps": round(requests / spent, 1) if spent else 0.0, "requests": requests,
            "errors": sum(r["errors"] for r in rows), "rounds": rows}
    return found


def live_ingest(url: str, data_dir: Path, models: Path, cards: Sequence[Path], persona: str,
                questions: Sequence[str]) -> dict[str, Any]:
    """A card ingested through the running server alone, then another while ``/v1/ask`` runs at c=1 as long."""
    alone = timed_ingest(cards[:1], data_dir, models)
    found: dict[str, Any] = {}

    def load() -> None:
        plan = LoadPlan("/v1/ask", 1, seconds=max(2.0, alone["seconds"]), persona=persona)
        found["load"] = run_load(url, plan, questions).as_dict()

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(0.5)
    loaded = timed_ingest(cards[1:2], data_dir, models)
    thread.join()
    return {"alone_s": alone["seconds"], "under_load_s": loaded["seconds"], "ask_meanwhile": found["load"],
            "report": loaded["tail"]}


def cold_starts(indexes: dict[str, tuple[Path, str]], models: Path, times: int, work: Path,
                log: Log) -> dict[str, list[float]]:
    """Each index's cold start to the first answer from its persona, ``times`` times, taking turns."""
    found: dict[str, list[float]] = {name: [] for name in indexes}
    for _ in range(times):
        for name, (data_dir, persona) in indexes.items():
            seconds, _ = cold_start(data_dir, data_dir.parent, work / "cold-start.log", persona=persona,
                                    env={"PERSONA_MODELS_DIR": str(models)})
            found[name].append(seconds)
    log(f"  cold starts {found}")
    return found


def serve_both(indexes: dict[str, tuple[Path, str]], models: Path, options: CardsOptions, work: Path, log: Log,
               live_cards: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Both indexes served at once (idle but for the turn of each): idle RSS, the interleaved levels and the peak RSS
    under them; then the live ingests into the last one."""
    questions = bench_questions(8)
    found: dict[str, dict[str, Any]] = {name: stored(data_dir) for name, (data_dir, _) in indexes.items()}
    with contextlib.ExitStack() as stack:
        served = []
        for name, (data_dir, persona) in indexes.items():
            server = stack.enter_context(persona_server(data_dir, log=work / f"serve-{name}.log",
                                                        PERSONA_MODELS_DIR=str(models)))
            served.append(Served(name, server.url, stack.enter_context(RssSampler(server.pid)), persona))
        for server in served:
            found[server.name]["rss_idle_mb"] = settled(server.sampler)
        log(f"  RSS idle {({s.name: found[s.name]['rss_idle_mb'] for s in served})} MB")
        levels = interleaved_levels(served, questions, options.seconds, options.rounds)
        for server in served:
            found[server.name]["ask"] = levels[server.name]
            found[server.name]["rss_under_load_mb"] = server.sampler.highest
            log(f"  {server.name}: " + ", ".join(f"{k} p50 {v['p50']} p99 {v['p99']} ms ({v['errors']} errors)"
                                                 for k, v in levels[server.name].items())
                + f"; RSS under load {server.sampler.highest} MB")
        last = served[-1]
        live = live_ingest(last.url, indexes[last.name][0], models, live_cards, last.persona, questions)
        found[last.name]["live_ingest"] = live
        found[last.name]["rss_after_live_mb"] = round(last.sampler.sample(), 1)
        log(f"  live ingest {live['alone_s']} s alone, {live['under_load_s']} s under load; asks meanwhile "
            f"{live['ask_meanwhile']['p50']} ms p50, {live['ask_meanwhile']['errors']} errors")
    return found


def idle_from_chroma(data_dir: Path, models: Path, work: Path) -> float:
    """The idle RSS of the server with the serving copies set aside: every persona read from Chroma."""
    folder = snapshot.folder_of(data_dir)
    aside = folder.with_name("serving-aside")
    folder.rename(aside)
    try:
        with (persona_server(data_dir, log=work / "serve-chroma-reads.log", PERSONA_MODELS_DIR=str(models)) as server,
              RssSampler(server.pid) as sampler):
            return settled(sampler, timeout=900)
    finally:
        aside.rename(folder)


def targets(one: dict[str, Any], many: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's three targets, from the numbers of this run."""
    rss_cap = RSS_BASE_MB + many["vectors_mb"]
    p50_one, p50_many = one["ask"]["c=1"]["p50"], many["ask"]["c=1"]["p50"]
    cold = statistics.median(many["cold_start_s"])
    return [
        {"target": f"RSS under load <= {RSS_BASE_MB} MB + the vectors ({many['vectors_mb']} MB)",
         "measured": f"{many['rss_under_load_mb']} MB", "met": many["rss_under_load_mb"] <= rss_cap},
        {"target": f"/v1/ask p50 at c=1 <= {P50_RATIO} x one card's ({p50_one} ms)",
         "measured": f"{p50_many} ms ({p50_many / p50_one:.2f} x)", "met": p50_many <= P50_RATIO * p50_one},
        {"target": f"cold start to the first answer <= {COLD_START_S} s", "measured": f"{cold:.2f} s (median)",
         "met": cold <= COLD_START_S},
    ]


def growth_per_card(one: dict[str, Any], many: dict[str, Any], cards: int) -> float:
    """Idle RSS each card beyond the first adds."""
    return (many["rss_idle_mb"] - one["rss_idle_mb"]) / max(1, cards - 1)


def render(results: dict[str, Any]) -> str:
    """The table of docs/benchmarks.md."""
    one, many = results["one"], results["many"]
    n = results["options"]["cards"]
    rows = [("cards (chunks served)", f"1 ({one['chunks']})", f"{n} ({many['chunks']})"),
            ("vectors' own size / their metadata (JSON)", f"{one['vectors_mb']} / {one['metadata_json_mb']} MB",
             f"{many['vectors_mb']} / {many['metadata_json_mb']} MB"),
            ("ingest (`persona ingest`, every text embedded)", f"{results['ingest_one']['seconds']} s",
             f"{results['ingest_many']['seconds']} s"),
            ("cold start to the first answer (median)", f"{statistics.median(one['cold_start_s']):.2f} s",
             f"{statistics.median(many['cold_start_s']):.2f} s"),
            ("RSS idle (warm-up done)", f"{one['rss_idle_mb']} MB", f"{many['rss_idle_mb']} MB"),
            ("RSS idle per card added, against its vectors + their metadata (JSON)", "",
             f"{growth_per_card(one, many, n):.2f} MB against {(many['vectors_mb'] - one['vectors_mb']) / (n - 1):.2f}"
             f" + {(many['metadata_json_mb'] - one['metadata_json_mb']) / (n - 1):.2f} MB"),
            ("RSS under load (highest)", f"{one['rss_under_load_mb']} MB", f"{many['rss_under_load_mb']} MB")]
    for level in ("c=1", "c=16"):
        a, b = one["ask"][level], many["ask"][level]
        rows.append((f"/v1/ask to one card, {level}: p50 / p99 (requests/s, errors)",
                     f"{a['p50']} / {a['p99']} ms ({a['rps']}/s, {a['errors']})",
                     f"{b['p50']} / {b['p99']} ms ({b['rps']}/s, {b['errors']})"))
    live = many.get("live_ingest")
    if live:
        ask = live["ask_meanwhile"]
        rows.append(("a card ingested live (through the server): alone / under c=1", "",
                     f"{live['alone_s']} s / {live['under_load_s']} s"))
        rows.append(("/v1/ask c=1 during that live ingest: p50 / p99 (errors)", "",
                     f"{ask['p50']} / {ask['p99']} ms ({ask['errors']} of {ask['requests']})"))
    if "rss_idle_chroma_reads_mb" in results:
        rows.append(("RSS idle with every persona read from Chroma (no serving copies)", "",
                     f"{results['rss_idle_chroma_reads_mb']} MB"))
    lines = [f"| measure | 1 card | {n} cards |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in results["targets"]]
    return "\n".join(lines)


def run_cards(options: CardsOptions, log: Log = print) -> dict[str, Any]:
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="persona-cards-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(DEFAULT_MODEL),
                               "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}}
    log("ONNX export (once) ...")
    models = fresh_models(work)
    one_dir, many_dir = work / "one" / "index", work / "many" / "index"
    copies = copied_cards(SEED, options.cards + 2, work / "cards")
    log("ingest: the seed card ...")
    results["ingest_one"] = timed_ingest([SEED], one_dir, models)
    log(f"ingest: {options.cards} copies ...")
    results["ingest_many"] = timed_ingest(copies[:options.cards], many_dir, models)
    log(f"  {results['ingest_many']['seconds']} s")
    indexes = {"one": (one_dir, "sales-manager"), "many": (many_dir, copies[0].stem)}
    log("cold starts, taking turns ...")
    starts = cold_starts(indexes, models, options.cold_starts, work, log)
    log("both served: idle, then /v1/ask at c=1 and c=16 taking turns, then live ingests ...")
    served = serve_both(indexes, models, options, work, log, live_cards=copies[options.cards:])
    for name in indexes:
        results[name] = {"cold_start_s": starts[name], **served[name]}
    if options.chroma_reads:
        log("the many cards read from Chroma (serving copies set aside) ...")
        results["rss_idle_chroma_reads_mb"] = idle_from_chroma(many_dir, models, work)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["machine"]["generator"] = generator()
    results["targets"] = targets(results["one"], results["many"])
    results["table"] = render(results)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of load per level and round")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each level on each server, taking turns")
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--chroma-reads", action="store_true", help="also the idle RSS without serving copies")
    parser.add_argument("--data-dir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("-o", "--output", type=Path, default=Path("cards.json"))
    args = parser.parse_args(argv)
    options = CardsOptions(args.cards, args.seconds, args.rounds, args.cold_starts, args.chroma_reads, args.data_dir)
    results = run_cards(options, log=lambda line: print(line, file=sys.stderr, flush=True))
    args.output.write_text(json.dumps(results, indent=2))
    print(results["table"])
    print(f"results written to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()

