"""What a bench run means: the cores' limit per endpoint, the targets (issues 14 and 23), and the printed tables."""

from __future__ import annotations

import statistics
from typing import Any

ENDPOINTS = ("/v1/retrieve", "/v1/ask")
PERSONAS = "/v1/personas"
IN_PROCESS = {"/v1/retrieve": "retrieve", "/v1/ask": "ask"}
HTTP_OVERHEAD_MS = {"/v1/retrieve": 1.0, "/v1/ask": 1.5}  # allowed over in-process at concurrency 1
RSS_TARGET_MB = 350
COLD_START_TARGET_S = 2.0
CACHED_KEEPS = 0.9  # the cached path at c=16 keeps at least this share of its c=1 rate: no collapse


def http_row(results: dict[str, Any], path: str, concurrency: int) -> dict[str, Any] | None:
    return next((r for r in results["http"] if r["path"] == path and r["concurrency"] == concurrency), None)


def limit(path_rps: float, embed_ms: float, cores: int) -> dict[str, float]:
    """Requests/s the cores allow: min(1000 / path_ms, cores x 1000 / (path_ms + embed_ms)).

    ``path_ms`` is the cost of one request without the embedder (``1000 / path_rps``, the same question at
    concurrency 1, embedding cached: nothing contends there, so it is the path's own cost); ``embed_ms`` the
    embedder's core-ms per query in batches."""
    path_ms = 1000 / path_rps
    path_bound, cores_bound = 1000 / path_ms, cores * 1000 / (path_ms + embed_ms)
    return {"path_ms": round(path_ms, 2), "embed_ms": embed_ms, "cores": cores, "path_bound": round(path_bound, 1),
            "cores_bound": round(cores_bound, 1), "rps": round(min(path_bound, cores_bound), 1)}


def limits(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    embed_ms, cores = results["embedder"]["ms_per_query"], results["machine"]["cores"]
    return {path: limit(row["rps"], embed_ms, cores) for path, row in results["path_cost"].items() if row["rps"]}


def measured_limit(results: dict[str, Any], path: str) -> dict[str, float] | None:
    """The limit with the cores counted as the speedup the side-by-side embedders measured (a diagnostic: when
    the cores are not all the machine's, e.g. a VM whose host shares them, they deliver less than their count)."""
    side, row = results["embedder"].get("side_by_side"), results["path_cost"].get(path)
    if not side or not row or not row["rps"]:
        return None
    path_ms = 1000 / row["rps"]
    embed_ms = results["embedder"]["ms_per_query"]
    rps = min(1000 / path_ms, side["speedup"] * 1000 / (path_ms + embed_ms))
    return {"speedup": side["speedup"], "cores": results["machine"]["cores"], "rps": round(rps, 1)}


def _check(target: str, value: str, met: bool) -> dict[str, Any]:
    return {"target": target, "value": value, "met": bool(met)}


def latency_targets(results: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """p50 at concurrency 1 against in-process; at 16: requests/s against the limit, p99 against 16 / rps."""
    checks = []
    one, sixteen = http_row(results, path, 1), http_row(results, path, 16)
    if one:
        floor, extra = results["in_process"][IN_PROCESS[path]]["p50"], HTTP_OVERHEAD_MS[path]
        checks.append(_check(f"{path} p50 at c=1 <= in-process + {extra} ms",
                             f"{one['p50']} ms vs {floor} ms ({one['p50'] - floor:+.2f} ms)",
                             one["p50"] <= floor + extra))
    cap = results["limit"].get(path)
    if sixteen and cap:
        checks.append(_check(f"{path} requests/s at c=16 >= 0.8 x limit",
                             f"{sixteen['rps']} / {cap['rps']} = {sixteen['rps'] / cap['rps']:.2f} x",
                             sixteen["rps"] >= 0.8 * cap["rps"]))
    if sixteen and sixteen["rps"]:
        implied = 16_000 / sixteen["rps"]
        checks.append(_check(f"{path} p99 at c=16 <= 2 x 16 / requests/s",
                             f"{sixteen['p99']} ms vs 2 x {implied:.1f} ms", sixteen["p99"] <= 2 * implied))
    return checks


def cached_target(results: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """The same question (embedding cached) at concurrency 16 against 1: the path must not collapse under load."""
    one, sixteen = results["path_cost"].get(path), results.get("path_cost_c16", {}).get(path)
    if not one or not sixteen or not one["rps"]:
        return []
    return [_check(f"{path} cached path: requests/s at c=16 >= {CACHED_KEEPS} x c=1",
                   f"{sixteen['rps']} / {one['rps']} = {sixteen['rps'] / one['rps']:.2f} x",
                   sixteen["rps"] >= CACHED_KEEPS * one["rps"])]


def every_run(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every load run of the bench (for the errors target)."""
    return [*results["http"], *results["path_cost"].values(), *results.get("path_cost_c16", {}).values(),
            *results.get("personas", []), *(r for w in results.get("workers", []) for r in w["runs"])]


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met, from the numbers of one run."""
    checks = [c for path in ENDPOINTS for c in [*latency_targets(results, path), *cached_target(results, path)]]
    runs = every_run(results)
    errors = sum(r["errors"] for r in runs)
    checks.append(_check("no errors", f"{errors} errors in {sum(r['requests'] for r in runs)} requests", errors == 0))
    cold = statistics.median(results["cold_start_s"])
    phases = results.get("cold_start_phases_s")
    where = "; " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()) if phases else ""
    checks.append(_check(f"cold start to first answer <= {COLD_START_TARGET_S:g} s", f"{cold:.2f} s (median{where})",
                         cold <= COLD_START_TARGET_S))
    rss = results["rss_mb"]
    checks.append(_check(f"serving RSS under load <= {RSS_TARGET_MB} MB ({results['machine']['model']})",
                         f"{rss['under_load']} MB (idle {rss['idle']} MB)", rss["under_load"] <= RSS_TARGET_MB))
    if "ingest" in results:
        ing = results["ingest"]
        checks.append(_check("ingest >= 0.8 x raw encode (same backend)",
                             f"{ing['ingest_chunks_per_s']} / {ing['raw_texts_per_s']} = {ing['ratio']:.2f} x",
                             ing["ratio"] >= 0.8))
    return checks


def _row(name: str, p50: object = "", p99: object = "", rps: object = "", errors: object = "", cpu: object = "") -> str:
    return f"| {name} | {p50} | {p99} | {rps} | {errors} | {cpu} |"


def _cpu(row: dict[str, Any]) -> str:
    """The server's core-ms a request and the cores it got, when the run measured them."""
    return f"{row['server_cpu_ms']} ({row['server_cores']})" if "server_cpu_ms" in row else ""


def cpu_efficiency(results: dict[str, Any], path: str) -> dict[str, float] | None:
    """The server's core-ms a request at concurrency 16 against what the path and the embedder cost on their
    own (the path cost run's core-ms + the embedder's): the limit's ratio in core-ms, which holds on a
    machine whose cores other work shares."""
    sixteen, cost = http_row(results, path, 16), results["path_cost"].get(path)
    if not sixteen or not cost or not sixteen.get("server_cpu_ms") or "server_cpu_ms" not in cost:
        return None
    needed = cost["server_cpu_ms"] + results["embedder"]["ms_per_query"]
    return {"spent": sixteen["server_cpu_ms"], "needed": round(needed, 2),
            "ratio": round(needed / sixteen["server_cpu_ms"], 2)}


def measure_rows(results: dict[str, Any]) -> list[str]:
    rows = [_row(f"in-process PersonaService.{name} (new question each)", s["p50"], s["p99"],
                 round(1000 / s["mean"], 1) if s["mean"] else "")
            for name, s in results["in_process"].items()]
    emb = results["embedder"]
    rows.append(_row(f"embedder per query, batches of {emb['batch']} on {emb['threads']} thread "
                     f"(one at a time: p50 {emb['one_at_a_time_p50']} ms)", emb["ms_per_query"]))
    side = emb.get("side_by_side")
    if side:
        rows.append(_row(f"embedder per query, {side['workers']} side by side on 1 thread each (wall; alone "
                         f"{side['alone_ms_per_query']} ms): speedup {side['speedup']} x, the limit assumes "
                         f"{side['workers']} x", side["ms_per_query"]))
    rows += [_row(f"HTTP {r['path']} c={r['concurrency']}", r["p50"], r["p99"], r["rps"], r["errors"], _cpu(r))
             for r in results["http"]]
    rows += [_row(f"path cost {path} (same question, c={r['concurrency']}): {results['limit'][path]['path_ms']} ms",
                  r["p50"], r["p99"], r["rps"], r["errors"], _cpu(r))
             for path, r in results["path_cost"].items() if path in results["limit"]]
    for path, r in results.get("path_cost_c16", {}).items():
        one = results["path_cost"].get(path)
        keeps = f"{r['rps'] / one['rps']:.2f} x its c=1 rate" if one and one["rps"] else ""
        rows.append(_row(f"cached path {path} (same question, c={r['concurrency']}): {keeps}", r["p50"], r["p99"],
                         r["rps"], r["errors"], _cpu(r)))
    rows += [_row(f"HTTP GET {r['path']} c={r['concurrency']}", r["p50"], r["p99"], r["rps"], r["errors"], _cpu(r))
             for r in results.get("personas", [])]
    for path, cap in results["limit"].items():
        rows.append(_row(f"limit {path} = min(1000 / {cap['path_ms']}, {cap['cores']} x 1000 / ({cap['path_ms']} + "
                         f"{cap['embed_ms']}))", "", "", cap["rps"]))
    for path in ENDPOINTS:
        sixteen, cap = http_row(results, path, 16), results["limit"].get(path)
        if sixteen and cap:
            rows.append(_row(f"{path} c=16 / limit", "", "", f"{sixteen['rps'] / cap['rps']:.2f} x"))
        measured = measured_limit(results, path)
        if sixteen and measured:
            rows.append(_row(f"{path} c=16 / limit with the measured side-by-side speedup ({measured['speedup']} "
                             f"x, not {measured['cores']}): {measured['rps']} requests/s", "", "",
                             f"{sixteen['rps'] / measured['rps']:.2f} x"))
        spent = cpu_efficiency(results, path)
        if spent:
            rows.append(_row(f"{path} c=16 core-ms: (path cost + embedder) / spent = {spent['needed']} / "
                             f"{spent['spent']}", "", "", f"{spent['ratio']:.2f} x"))
    rows += [_row(f"persona serve --workers {w['workers']}: {r['path']} {'new' if r['unique'] else 'same'} question "
                  f"c={r['concurrency']}", r["p50"], r["p99"], r["rps"], r["errors"], _cpu(r))
             for w in results.get("workers", []) for r in w["runs"]]
    return rows


def cell(row: dict[str, Any] | None) -> str:
    """A cell of the issue's table: requests/s, p50 and p99."""
    return f"{row['rps']} rps, p50 {row['p50']} ms, p99 {row['p99']} ms" if row else "not run"


def issue_table(results: dict[str, Any]) -> list[str]:
    """Issue 23's table: each kind of request at concurrency 1 and 16."""
    personas = {r["concurrency"]: r for r in results.get("personas", [])}
    lines = ["| | c=1 | c=16 |", "|---|---|---|"]
    for path in ENDPOINTS:
        cached = (results["path_cost"].get(path), results.get("path_cost_c16", {}).get(path))
        lines.append(f"| `{path}`, the same question each time (cached embedding: the path alone) | "
                     f"{cell(cached[0])} | {cell(cached[1])} |")
        lines.append(f"| `{path}`, a new question each time | {cell(http_row(results, path, 1))} | "
                     f"{cell(http_row(results, path, 16))} |")
    lines.append(f"| `{PERSONAS}` (the HTTP stack) | {cell(personas.get(1))} | {cell(personas.get(16))} |")
    return lines


def workers_lines(results: dict[str, Any]) -> list[str]:
    """Each worker count's processes: resident memory idle and under load, and unique memory (USS) idle."""
    lines = []
    for w in results.get("workers", []):
        parts = [f"{p['role']} {p.get('idle_mb', '?')} MB idle (USS {p.get('uss_mb', '?')}), "
                 f"{p.get('under_load_mb', '?')} MB under load" for p in w["processes"]]
        lines.append(f"persona serve --workers {w['workers']}: " + "; ".join(parts) +
                     f"; all together, highest under load {w['total_under_load_mb']} MB")
    return lines


def render(results: dict[str, Any]) -> str:
    """The results as markdown: a header line, the measures, then the targets."""
    m = results["machine"]
    loads = " -> ".join(", ".join(f"{v:.1f}" for v in m[k]) for k in ("load_average_at_start", "load_average_at_end"))
    lines = [f"{m['date']}; {m['cores']} cores ({m['cpu']}); model {m['model']}; load generator {m['generator']}; "
             f"load average {loads}", "",
             "| measure | p50 ms | p99 ms | requests/s | errors | server core-ms a request (cores) |",
             "|---|---|---|---|---|---|", *measure_rows(results), "",
             f"cold start to first answer (s): {results['cold_start_s']}; server RSS: idle {results['rss_mb']['idle']}"
             f" MB, highest under load {results['rss_mb']['under_load']} MB", *workers_lines(results), "",
             *issue_table(results)]
    if "ingest" in results:
        ing = results["ingest"]
        lines.append(f"ingest: {ing['cards']} cards, {ing['chunks']} chunks in {ing['ingest_seconds']} s = "
                     f"{ing['ingest_chunks_per_s']} chunks/s; raw ONNX encode {ing['raw_texts_per_s']} texts/s")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |" for t in results["targets"]]
    return "\n".join(lines)
