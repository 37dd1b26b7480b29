"""Follow-up levers measured through the real service (docs/experiments/conversation-levers.md).

    python bench/conversation_levers.py --set conv-dev
    python bench/conversation_levers.py --set conv-test --only fuse-0.5

Each follow-up turn of a conversation set is searched by every lever: the follow-up alone, with earlier
questions as one query, and fusions of the two (scores and coverage evidence weighed). Searches go through
:meth:`retrieval.service.Retriever.search` on a temporary index of the seed card (with its sidecar), so
the ranking and the coverage judge are the service's own; results are cached per query text. Printed per
lever: section hit@1 / hit@3 / MRR over in-scope follow-ups, the top passage on point (what the extractive
answer cites first), in-scope refused, off-topic refused, and the same per follow-up type.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.metrics import dedupe, on_point, ranking_scores  # noqa: E402
from eval.sets import Question, load_set  # noqa: E402
from retrieval.conversation import CONTEXT_QUESTIONS  # noqa: E402
from retrieval.service import MAX_K, Retrieval  # noqa: E402
from retrieval.stages.coverage import judge  # noqa: E402
from retrieval.types import Hit  # noqa: E402

SEEDS = ROOT / "seeds"


@dataclass(frozen=True)
class Found:
    """A lever's result for one turn: ranked hits and whether it would be refused."""

    hits: list[Hit]
    refused: bool


Search = Callable[[str], Retrieval]
Lever = Callable[[Search, Question, list[Question], list[Found]], Found]


def fused(alone: Retrieval, both: Retrieval, weight: float, settings) -> Found:
    own = {h.id: h.score for h in alone.hits}
    topic = {h.id: h.score for h in both.hits}
    lo_own, lo_topic = min(own.values(), default=0.0), min(topic.values(), default=0.0)
    pool = {h.id: h for h in [*both.hits, *alone.hits]}
    ranked = sorted(pool.values(), key=lambda h: -(weight * own.get(h.id, lo_own)
                                                   + (1 - weight) * topic.get(h.id, lo_topic)))
    top = weight * alone.coverage.top + (1 - weight) * both.coverage.top
    boundary = weight * alone.coverage.boundary + (1 - weight) * both.coverage.boundary
    coverage = judge(top, boundary, settings.min_score, settings.boundary_margin, settings.confident_score)
    return Found(ranked, not coverage.covered)


def plain(found: Retrieval) -> Found:
    return Found(found.hits, not found.coverage.covered)


def context_text(earlier: list[Question], q: Question, n: int = CONTEXT_QUESTIONS) -> str:
    return " ".join([*(e.question for e in earlier[-n:]), q.question])


_REFERS = re.compile(r"\b(it|its|that|this|these|those|they|them|their|he|she|him|her|his|one|there|then)\b",
                     re.IGNORECASE)
_LEADS = re.compile(r"^\W*(and|but|also|so|then|or|what about|how about|what if|same|ok|okay|how|why|what)\b",
                    re.IGNORECASE)


def words(text: str) -> int:
    return len(re.findall(r"[a-z0-9']+", text.lower()))


def levers(settings) -> dict[str, Lever]:
    out: dict[str, Lever] = {
        "alone": lambda s, q, e, prev: plain(s(q.question)),
        "concat-1": lambda s, q, e, prev: plain(s(context_text(e, q, 1))),
        "concat-2": lambda s, q, e, prev: plain(s(context_text(e, q, 2))),
        "concat-all": lambda s, q, e, prev: plain(s(context_text(e, q, 9))),
    }
    for w in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        for n in (1, 2):
            def fuse(s: Search, q: Question, e: list[Question], prev: list[Found], w: float = w, n: int = n) -> Found:
                return fused(s(q.question), s(context_text(e, q, n)), w, settings)
            out[f"fuse{n}-{w}"] = fuse
    for lo, hi, n in ((0.2, 0.8, 16), (0.3, 0.7, 16), (0.2, 0.7, 12), (0.3, 0.8, 20), (0.1, 0.7, 16)):
        def by_length(s: Search, q: Question, e: list[Question], prev: list[Found],
                      lo: float = lo, hi: float = hi, n: int = n) -> Found:
            w = lo + (hi - lo) * min(1.0, words(q.question) / n)
            return fused(s(q.question), s(context_text(e, q)), w, settings)
        out[f"len-{lo}-{hi}-{n}"] = by_length
    return out


def score(found: Found, q: Question) -> dict[str, float]:
    if q.kind != "in_scope":
        return {"refused": float(found.refused)}
    sections = dedupe(h.section for h in found.hits)
    out = {k: v for k, v in ranking_scores(sections, q.gold.sections).items() if k in ("hit@1", "hit@3", "mrr")}
    grades = {cid: q.gold.grade(cid) for cid in (h.id for h in found.hits[:1])}
    out["top_on_point"] = float(bool(found.hits) and on_point(found.hits[0].id, found.hits[0].section, grades,
                                                               q.gold.sections)) if not found.refused else None
    out["refused"] = float(found.refused)
    return out


def table(rows: dict[str, list[tuple[Question, dict[str, float]]]], only_types: bool = False) -> None:
    def mean(values: Sequence[float | None]) -> str:
        values = [v for v in values if v is not None]
        return f"{sum(values) / len(values):.3f}" if values else "  n/a"

    print(f"{'lever':22} {'hit@1':>6} {'hit@3':>6} {'mrr':>6} {'top-ok':>6} {'in-ref':>6} {'off-ref':>7} | "
          "top-ok / refused by type (ellipsis deeper neighbour shift) off_topic-refused")
    for name, scored in rows.items():
        ins = [m for q, m in scored if q.kind == "in_scope"]
        off = [m for q, m in scored if q.kind != "in_scope"]
        line = (f"{name:22} {mean([m['hit@1'] for m in ins]):>6} {mean([m['hit@3'] for m in ins]):>6} "
                f"{mean([m['mrr'] for m in ins]):>6} {mean([m['top_on_point'] for m in ins]):>6} "
                f"{mean([m['refused'] for m in ins]):>6} {mean([m['refused'] for m in off]):>7} |")
        for kind in ("ellipsis", "deeper", "neighbour", "shift"):
            of = [m for q, m in scored if q.follow_up == kind and q.kind == "in_scope"]
            line += f" {mean([m['top_on_point'] for m in of])}/{mean([m['refused'] for m in of])}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", required=True, help="conv-dev, conv-test or a path")
    parser.add_argument("--only", action="append", help="levers to run (default: all)")
    parser.add_argument("--first", action="store_true", help="score first turns too (alone only)")
    args = parser.parse_args()

    from generation.service import PersonaService
    from ingest.indexer import ingest
    from retrieval.settings import Settings
    from retrieval.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), chroma_url=None)
        service = PersonaService(settings)
        ingest([SEEDS], Store(settings), service.embedder, settings.model, settings.embed_batch_size)
        cache: dict[str, Retrieval] = {}

        def search(text: str) -> Retrieval:
            if text not in cache:
                cache[text] = service.search(text, None, MAX_K)
            return cache[text]

        chosen = {k: v for k, v in levers(settings).items() if not args.only or k in args.only}
        for name in args.set:
            path = Path(name) if name.endswith(".yaml") else ROOT / "eval" / "sets" / f"sales-manager-{name}.yaml"
            questions = load_set(path).questions
            rows: dict[str, list[tuple[Question, dict[str, float]]]] = {}
            for lever, run in chosen.items():
                scored = []
                earlier: list[Question] = []
                found: list[Found] = []
                for q in questions:
                    if q.turn == 1:
                        earlier, found = [], []
                        result = plain(search(q.question))
                    else:
                        result = run(search, q, earlier, found)
                        scored.append((q, score(result, q)))
                    earlier.append(q)
                    found.append(result)
                rows[lever] = scored
            print(f"\n{path.name}: {sum(q.turn > 1 for q in questions)} follow-ups")
            table(rows)


if __name__ == "__main__":
    main()
