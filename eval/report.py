"""Reports of an eval run: ``report.json``, ``report.md`` and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTTING_MISSING = ("persona eval draws its plots with matplotlib, which is not installed: "
                    "pip install 'persona-rag[eval]' (in a checkout, `make eval` installs it)")
"""What ``persona eval`` says, before it runs anything, when the ``eval`` extra is missing."""


def can_plot() -> bool:
    """Whether matplotlib (the ``eval`` extra) is importable."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True

METRICS: list[tuple[str, str]] = [
    ("section.hit@1", "section hit@1"), ("section.hit@3", "section hit@3"), ("section.hit@5", "section hit@5"),
    ("section.mrr", "section MRR"), ("section.ndcg@10", "section nDCG@10"),
    ("id.hit@1", "id hit@1"), ("id.hit@3", "id hit@3"), ("id.hit@5", "id hit@5"),
    ("id.mrr", "id MRR"), ("id.ndcg@10", "id nDCG@10"),
    ("citation.validity", "citation validity"), ("citation.recall", "citation recall"),
    ("citation.precision", "citation precision"),
    ("abstention.precision", "abstention precision"), ("abstention.recall", "abstention recall"),
    ("abstention.in_scope_answered", "in-scope answered"),
    ("abstention.in_scope_refused", "in-scope refused"),
    ("abstention.near_refused", "near-domain off-topic refused"),
    ("abstention.far_refused", "far off-topic refused"),
    ("answer.cited_relevance", "cited passages on point"),
    ("answer.first_on_point", "first citation on point"),
    ("adversarial.pass_rate", "adversarial pass rate"),
    ("latency.mean_ms", "retrieval latency mean (ms)"), ("latency.p50_ms", "retrieval latency p50 (ms)"),
    ("latency.ratio", "latency / plain dense (median)"),
    ("latency.follow_up_added_ms", "time a follow-up adds (p50 ms)"),
    # conversation sets: the rows above are over follow-ups; these over first turns, then per follow-up type
    ("first_turn.section.hit@1", "first turns: section hit@1"),
    ("first_turn.answer.first_on_point", "first turns: first citation on point"),
    ("first_turn.abstention.in_scope_refused", "first turns: in-scope refused"),
    *((f"{kind}.{what}", f"{kind.replace('_', '-')} follow-ups: {label}")
      for kind in ("ellipsis", "deeper", "neighbour", "shift", "off_topic")
      for what, label in (("first_on_point", "first citation on point"), ("refused", "refused"))
      if not (kind == "off_topic" and what == "first_on_point")),
]


def cell(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if metric.endswith("_ms") else f"{value:.3f}"


def set_table(data: dict[str, Any], name: str) -> tuple[list[str], list[list[str]]]:
    """One question set's table: the configurations as columns, a row per metric it can measure."""
    configs = next(s["configs"] for s in data["sets"] if s["name"] == name)
    rows = []
    for metric, label in METRICS:
        values = [configs[c]["metrics"].get(metric) for c in configs]
        if any(v is not None for v in values):
            rows.append([label, *(cell(v, metric) for v in values)])
    return list(configs), rows


CARD_COLUMNS: list[tuple[str, str]] = [
    ("section.hit@1", "hit@1"), ("section.hit@3", "hit@3"), ("section.mrr", "MRR"),
    ("answer.first_on_point", "first on point"), ("abstention.in_scope_refused", "in-scope refused"),
    ("abstention.recall", "off-topic refused"),
]
"""The columns of the per-card table, for the pipeline with the card's sidecar and without it."""


def cards_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per set of single questions: its card, then :data:`CARD_COLUMNS` with the card's sidecar
    (``pipeline``) and without it (``no-sidecar``)."""
    headers = ["set", "card", *(label for _, label in CARD_COLUMNS),
               *(f"{label} (no sidecar)" for _, label in CARD_COLUMNS)]
    rows = []
    for qset in data["sets"]:
        configs = qset["configs"]
        if qset.get("conversational") or "no-sidecar" not in configs:
            continue
        card = qset.get("persona", "")
        rows.append([qset["name"], card,
                     *(cell(configs["pipeline"]["metrics"].get(m), m) for m, _ in CARD_COLUMNS),
                     *(cell(configs["no-sidecar"]["metrics"].get(m), m) for m, _ in CARD_COLUMNS)])
    return headers, rows


def markdown(data: dict[str, Any]) -> str:
    """The report as Markdown: settings, the metrics table, thresholds and the gate's verdict."""
    settings = data["settings"]
    lines = [
        "# Evaluation report", "",
        f"Model `{settings['model']}`, generator `{settings['generator']}`, k = {settings['default_k']}, "
        f"abstention threshold (min_score) = {settings['min_score']}, support judge: ROUGE-L precision "
        f"≥ {settings['support_threshold']}.", "",
    ]
    for qset in data["sets"]:
        headers, rows = set_table(data, qset["name"])
        scope = (["In a conversation set every metric is over the follow-ups (turns after the first) unless it "
                  "says first turns; `alone` is the pipeline with each follow-up asked without the chat before it.", ""]
                 if qset.get("conversational") else [])
        lines += [f"## {qset['name']}", "", qset.get("description", ""), "", *scope,
                  "| metric | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    headers, rows = cards_table(data)
    if rows:
        lines += ["## Every card, with its sidecar and without", "",
                  "| " + " | ".join(headers) + " |", "|---|---|" + "---:|" * (len(headers) - 2)]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    lines += ["", "Configurations:", ""]
    described = {c: cfg["description"] for s in data["sets"] for c, cfg in s["configs"].items()}
    lines += [f"- `{name}`: {text}" for name, text in described.items()]
    calibration = data.get("calibration")
    if calibration:
        derived = calibration["coverage"]
        lines += ["", f"Derived coverage thresholds from {', '.join(calibration['sets'])} ({calibration['rule']}): "
                  f"min_score **{derived['min_score']:.3f}**, boundary_margin **{derived['boundary_margin']:.3f}**, "
                  f"confident_score **{derived['confident_score']:.3f}** ({derived['in_scope_refused']} of "
                  f"{derived['in_scope']} dev in-scope questions refused, {derived['out_of_scope_answered']} of "
                  f"{derived['out_of_scope']} off-topic answered). Without the boundary, one threshold would be "
                  f"{calibration['threshold']:.3f}."]
    lines += ["", "## Gate (pipeline metrics, minimums)", ""]
    for name, minimums in data["thresholds"].items():
        lines.append(f"- {name}: " + (", ".join(f"{m} ≥ {v}" for m, v in minimums.items()) or "none"))
    lines += ["", "**Failed:** " + "; ".join(_failure_line(f) for f in data["failures"])
              if data["failures"] else "**All thresholds met.**", "", "![hit@k](hit_at_k.png)",
              "![top scores](top_scores.png)", ""]
    return "\n".join(lines)


def _failure_line(failure: dict[str, Any]) -> str:
    return f"{failure['set']} {failure['metric']} = {cell(failure['value'], failure['metric'])} < {failure['minimum']}"


def plot_hit_at_k(data: dict[str, Any], path: Path) -> None:
    """Grouped bars: section hit@1/3/5 for each configuration, one panel per question set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = data["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), sharey=True, squeeze=False)
    ks = ("hit@1", "hit@3", "hit@5")
    for ax, qset in zip(axes[0], sets, strict=True):
        names = list(qset["configs"])
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            values = [qset["configs"][name]["metrics"].get(f"section.{k}") or 0.0 for k in ks]
            ax.bar([x + i * width for x in range(len(ks))], values, width, label=name)
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(ks))], ks)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"section hit@k, {qset['name']}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_top_scores(data: dict[str, Any], path: Path, config: str = "pipeline") -> None:
    """Histogram of the best hit's score, in-scope vs out-of-scope, with the abstention threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for s in data["sets"] for r in s["configs"][config]["records"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [i / 40 for i in range(41)]
    for kind, color in (("in_scope", "tab:blue"), ("out_of_scope", "tab:red")):
        ax.hist([r["top_score"] for r in records if r["kind"] == kind], bins=bins, alpha=0.6, color=color,
                label=kind.replace("_", "-"))
    threshold = data["settings"]["min_score"]
    ax.axvline(threshold, color="black", linestyle="--", label=f"abstention threshold (min_score) {threshold:.3f}")
    derived = (data.get("calibration") or {}).get("threshold")
    if derived is not None and abs(derived - threshold) > 1e-9:
        ax.axvline(derived, color="tab:green", linestyle=":", label=f"derived from dev {derived:.3f}")
    ax.set_xlabel("top retrieval score")
    ax.set_ylabel("questions")
    ax.set_title(f"top score, {config}, all sets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write report.json, report.md and the plots into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "hit_at_k.png", out_dir / "top_scores.png"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(data), encoding="utf-8")
    plot_hit_at_k(data, paths[2])
    plot_top_scores(data, paths[3])
    return paths



