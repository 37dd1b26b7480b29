"""Retrieval levers measured over in-memory vectors (docs/experiments/retrieval-levers.md, session 6).

    python bench/levers.py rank --model all-MiniLM-L6-v2 --set chat-dev
    python bench/levers.py segments --set chat-dev
    python bench/levers.py pooling --set chat-dev
    python bench/levers.py ensemble --set chat-dev
    python bench/levers.py lexical
    python bench/levers.py finetune --out /tmp/ft --null 0.4 --set chat-dev
    python bench/levers.py rank --model nomic-embed-text-v1.5 --set chat-dev
    python bench/levers.py ensemble --model nomic-embed-text-v1.5 --set chat-dev

A scratch copy of the pipeline's ranking (``retrieval/stages/examples.py``: tuned passage vectors +
0.6 x best example, a section ranked by its best passage) and its coverage judge (thresholds
derived on chat-dev by ``eval/calibration.py``), over the seed card and its sidecar, with the
sentence-transformers reference model. It reproduces ``persona eval``'s pipeline row on the chat
sets (section hit@1 / hit@3 / MRR) to within one question. Decide on ``chat-dev``; ``chat-test`` is
for one look per lever. Vectors are cached under ``--cache`` (default ``/tmp/persona-levers``).
"""

from __future__ import annotations

import argparse
import pickle
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.calibration import CoverageCalibration, derive_coverage  # noqa: E402
from eval.metrics import dedupe, ranking_scores  # noqa: E402
from eval.sets import Question, load_set  # noqa: E402
from ingest.cards import load_card  # noqa: E402
from ingest.chunking import chunk_card  # noqa: E402
from ingest.examples import load_sidecar  # noqa: E402
from retrieval.stages.examples import EXAMPLE_WEIGHT  # noqa: E402
from retrieval.tuning import tune_passages  # noqa: E402

SEED = ROOT / "seeds" / "sales-manager.yaml"
SETS = ("chat-dev", "chat-test")


@dataclass(frozen=True)
class Card:
    """The ranked passages of the seed card, its sidecar's examples and boundary, and the chat sets."""

    ids: list[str]
    sections: list[str]
    texts: list[str]
    examples: list[str]
    targets: np.ndarray  # the passage row each example points at
    boundary: list[str]
    questions: dict[str, list[Question]]


def load() -> Card:
    card = load_card(SEED)
    passages = chunk_card(card)
    with_items = {c.section for c in passages if c.kind == "item"}
    ranked = [c for c in passages if not (c.kind == "section" and c.section in with_items)]
    row = {c.id: i for i, c in enumerate(ranked)}
    sidecar = load_sidecar(SEED, card.slug)
    assert sidecar is not None
    examples = [(q, row[p]) for p, qs in sidecar.examples.items() if p in row
                for q in dict.fromkeys(q.strip() for q in qs)]
    sets = {name: load_set(ROOT / "eval" / "sets" / f"sales-manager-{name}.yaml").questions for name in SETS}
    return Card([c.id for c in ranked], [c.section for c in ranked], [c.embed_text for c in ranked],
                [q for q, _ in examples], np.array([p for _, p in examples]),
                list(dict.fromkeys(q.strip() for q in sidecar.not_covered)), sets)


@dataclass
class Vectors:
    passages: np.ndarray
    examples: np.ndarray
    boundary: np.ndarray
    questions: dict[str, np.ndarray]
    tuned: np.ndarray | None = None


NOMIC = "nomic-embed-text-v1.5"


class Model:
    """A sentence-transformers model by name (the packaged ones resolved as the service resolves them) or folder;
    ``name:int8`` is the service's int8 ONNX export of a packaged model (exported under ``/tmp/persona-levers``);
    ``nomic-embed-text-v1.5`` runs in llama.cpp with its task prefixes (search_query / search_document)."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == NOMIC:  # the service's GGUF (`make nomic`), here with a prefix per role
            from llama_cpp import Llama

            from retrieval.models import resolve_model_path
            self.llama = Llama(resolve_model_path(NOMIC), embedding=True, n_ctx=2048, n_batch=2048, n_ubatch=2048,
                               verbose=False)
            return
        from sentence_transformers import SentenceTransformer

        from retrieval.models import PACKAGED_MODELS, resolve_model_path
        if name.endswith(":int8"):
            from retrieval.embedder import OnnxEmbedder, ensure_onnx
            folder = ensure_onnx(name.removesuffix(":int8"), Path("/tmp/persona-levers/models"), "onnx", "int8")
            assert folder is not None
            self.onnx = OnnxEmbedder(folder, name.removesuffix(":int8"), None, "int8")
            return
        path = resolve_model_path(name) if name in PACKAGED_MODELS else name
        self.st = SentenceTransformer(path, device="cpu")

    def encode(self, texts: Sequence[str], prefix: str = "search_query: ") -> np.ndarray:
        """Questions (and the card's examples and boundary, which are questions); ``encode_documents`` for passages."""
        if self.name == NOMIC:
            out = [v for i in range(0, len(texts), 32)
                   for v in self.llama.embed([prefix + t for t in texts[i:i + 32]], normalize=True)]
            return np.asarray(out, dtype=np.float32)
        if self.name.endswith(":int8"):
            return np.asarray(self.onnx.encode(list(texts)), dtype=np.float32)
        return self.st.encode(list(texts), batch_size=64, normalize_embeddings=True,
                              convert_to_numpy=True).astype(np.float32)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, "search_document: ")


def vectors(card: Card, name: str, cache: Path, model: Model | None = None) -> Vectors:
    path = cache / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', name)}.pkl"
    if model is None and path.exists():
        with path.open("rb") as f:
            return pickle.load(f)  # our own cache
    model = model or Model(name)
    v = embed_all(card, model.encode, model.encode_documents)
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(v, f)
    return v


def embed_all(card: Card, encode: Callable[[Sequence[str]], np.ndarray],
              encode_documents: Callable[[Sequence[str]], np.ndarray] | None = None) -> Vectors:
    """The card's passages (by ``encode_documents``, default ``encode``), examples, boundary and the chat sets'
    questions, embedded by ``encode``."""
    return Vectors((encode_documents or encode)(card.texts), encode(card.examples), encode(card.boundary),
                   {s: encode([q.question for q in qs]) for s, qs in card.questions.items()})


def best_example(card: Card, v: Vectors, q: np.ndarray) -> np.ndarray:
    """Per question and passage, the highest cosine to one of the passage's examples (-1 without examples)."""
    sims = q @ v.examples.T
    best = np.full((q.shape[0], len(card.ids)), -1.0, dtype=np.float32)
    for p in np.unique(card.targets):
        best[:, p] = sims[:, card.targets == p].max(1)
    return best


def scores(card: Card, v: Vectors, q: np.ndarray) -> np.ndarray:
    """The pipeline's passage scores: (cos to the tuned vector + 0.6 x best example's cos) / 1.6."""
    if v.tuned is None:
        v.tuned = tune_passages(v.passages, v.examples, card.targets)
    return (q @ v.tuned.T + EXAMPLE_WEIGHT * best_example(card, v, q)) / (1 + EXAMPLE_WEIGHT)


def ranking(card: Card, matrix: np.ndarray, questions: Sequence[Question]) -> str:
    """Section hit@1 / hit@3 / MRR over the in-scope questions, sections ranked by their best passage."""
    rows = []
    for row, q in zip(matrix, questions, strict=True):
        if q.kind == "in_scope":
            ranked = dedupe(card.sections[i] for i in np.argsort(-row, kind="stable"))
            rows.append(ranking_scores(ranked, q.gold.sections))
    n = len(rows)
    return " / ".join(f"{sum(r[k] for r in rows) / n:.3f}" for k in ("hit@1", "hit@3", "mrr"))


def evidence(card: Card, v: Vectors, q: np.ndarray, nearest: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The coverage judge's (support, boundary) per question, as ``retrieval/stages/examples.py`` measures them;
    ``nearest`` > 1: the boundary is the mean cosine of that many nearest boundary questions."""
    own = np.clip(q @ v.passages.T, 0.0, 1.0)  # the pipeline's clipped cosine (retrieval/search.py)
    has = np.zeros(len(card.ids), bool)
    has[np.unique(card.targets)] = True
    support = np.where(has, (own + best_example(card, v, q)) / 2, own).max(1)
    near = -np.sort(-(q @ v.boundary.T), axis=1)[:, :nearest]
    return support, np.maximum(0.0, near.mean(1))


def calibrate(support: np.ndarray, boundary: np.ndarray, questions: Sequence[Question]) -> CoverageCalibration:
    pairs = list(zip(support.tolist(), boundary.tolist(), strict=True))
    return derive_coverage([p for p, q in zip(pairs, questions, strict=True) if q.kind == "in_scope"],
                           [p for p, q in zip(pairs, questions, strict=True) if q.kind != "in_scope"])


def refusals(refused: np.ndarray, questions: Sequence[Question]) -> str:
    def share(keep: Callable[[Question], bool]) -> float:
        return float(np.mean([r for r, q in zip(refused, questions, strict=True) if keep(q)]))
    return (f"in-scope refused {share(lambda q: q.kind == 'in_scope'):.3f}, "
            f"near {share(lambda q: q.kind != 'in_scope' and q.near):.3f} / "
            f"far {share(lambda q: q.kind != 'in_scope' and not q.near):.3f} refused")


def abstention(card: Card, v: Vectors, name: str) -> str:
    c = calibrate(*evidence(card, v, v.questions["chat-dev"]), card.questions["chat-dev"])
    support, boundary = evidence(card, v, v.questions[name])
    refused = (support < c.min_score) | (boundary > support + c.boundary_margin)
    return f"thresholds {c.min_score} / {c.boundary_margin} (chat-dev): {refusals(refused, card.questions[name])}"


def report(card: Card, v: Vectors, sets: Sequence[str], label: str) -> None:
    for name in sets:
        qs, q = card.questions[name], v.questions[name]
        print(f"{label} {name}: plain item dense {ranking(card, q @ v.passages.T, qs)} | "
              f"pipeline {ranking(card, scores(card, v, q), qs)} | {abstention(card, v, name)}", flush=True)


def cmd_rank(card: Card, args: argparse.Namespace) -> None:
    report(card, vectors(card, args.model, args.cache), args.set, args.model)


def segments_of(question: str) -> list[str]:
    """A message's sentences of three words or more, when it has more than one."""
    parts = [p.strip() for p in re.split(r"(?<=[.?!;])\s+|\n+", question) if len(p.split()) >= 3]
    return parts if len(parts) > 1 else []


def cmd_segments(card: Card, args: argparse.Namespace) -> None:
    model = Model(args.model)
    v = vectors(card, args.model, args.cache)
    for name in args.set:
        qs = card.questions[name]
        full = scores(card, v, v.questions[name])
        split = [segments_of(q.question) for q in qs]
        flat = [s for ss in split for s in ss]
        seg = scores(card, v, model.encode(flat))
        starts = np.cumsum([0] + [len(ss) for ss in split])
        print(f"{name}: {sum(1 for ss in split if ss)} of {len(qs)} messages have more than one sentence")

        def combined(f: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     full: np.ndarray = full, split: list[list[str]] = split, seg: np.ndarray = seg,
                     starts: np.ndarray = starts) -> np.ndarray:
            out = full.copy()
            for i, ss in enumerate(split):
                if ss:
                    out[i] = f(full[i], seg[starts[i]:starts[i + 1]])
            return out
        print(f"  whole message            {ranking(card, full, qs)}")
        print(f"  max over message, parts  {ranking(card, combined(lambda a, p: np.maximum(a, p.max(0))), qs)}")
        for b in (0.25, 0.5, 1.0):
            weighted = combined(lambda a, p, b=b: (a + b * p.max(0)) / (1 + b))
            print(f"  (whole + {b} x best part) {ranking(card, weighted, qs)}")
        print(f"  mean of whole and parts  {ranking(card, combined(lambda a, p: (a + p.sum(0)) / (1 + len(p))), qs)}")


def cmd_pooling(card: Card, args: argparse.Namespace) -> None:
    """A section scored by its best passage + beta x its second best (the pipeline: beta 0)."""
    v = vectors(card, args.model, args.cache)
    names = sorted(set(card.sections))
    column = np.array([names.index(s) for s in card.sections])
    for name in args.set:
        qs, matrix = card.questions[name], scores(card, v, v.questions[name])
        for beta in (0.0, 0.1, 0.2, 0.3):
            sections = np.zeros((matrix.shape[0], len(names)))
            for j in range(len(names)):
                part = -np.sort(-matrix[:, column == j], axis=1)
                sections[:, j] = part[:, 0] + (beta * part[:, 1] if part.shape[1] > 1 else 0.0)
            rows = [ranking_scores([names[i] for i in np.argsort(-row, kind="stable")], q.gold.sections)
                    for row, q in zip(sections, qs, strict=True) if q.kind == "in_scope"]
            print(f"{name}: beta {beta}: " + " / ".join(f"{sum(r[k] for r in rows) / len(rows):.3f}"
                                                   for k in ("hit@1", "hit@3", "mrr")))


def cmd_ensemble(card: Card, args: argparse.Namespace) -> None:
    other = args.model if args.model != "all-MiniLM-L6-v2" else "all-mpnet-base-v2"
    small, large = vectors(card, "all-MiniLM-L6-v2", args.cache), vectors(card, other, args.cache)
    thresholds = {id(v): calibrate(*evidence(card, v, v.questions["chat-dev"]), card.questions["chat-dev"])
                  for v in (small, large)}

    def refused(v: Vectors, name: str) -> np.ndarray:
        c = thresholds[id(v)]
        support, boundary = evidence(card, v, v.questions[name])
        return (support < c.min_score) | (boundary > support + c.boundary_margin)
    for name in args.set:
        qs = card.questions[name]
        a, b = scores(card, small, small.questions[name]), scores(card, large, large.questions[name])
        print(f"{name}: MiniLM {ranking(card, a, qs)}, {refusals(refused(small, name), qs)}")
        print(f"{name}: {other}  {ranking(card, b, qs)}, {refusals(refused(large, name), qs)}")
        for w in (0.5, 0.7):
            both = refusals(refused(small, name) & refused(large, name), qs)
            print(f"{name}: {w} x {other} + {1 - w:.1f} x MiniLM {ranking(card, w * b + (1 - w) * a, qs)}; "
                  f"refused when both refuse: {both}")
        gap = section_gap(card, a)
        for tau in (0.01, 0.02, 0.04, 0.08):
            escalate = gap < tau
            mixed = np.where(escalate[:, None], 0.7 * b + 0.3 * a, a)
            print(f"{name}: cascade, both models when MiniLM's top two sections are within {tau}: "
                  f"{escalate.mean():.0%} escalated, {ranking(card, mixed, qs)}")


def section_gap(card: Card, matrix: np.ndarray) -> np.ndarray:
    """Per question, the score of the best section minus that of the second (a section scores as its best passage)."""
    gaps = []
    for row in matrix:
        best: dict[str, float] = {}
        for i in np.argsort(-row, kind="stable"):
            best.setdefault(card.sections[i], float(row[i]))
            if len(best) == 2:
                break
        first, second = best.values()
        gaps.append(first - second)
    return np.array(gaps)


WORD = re.compile(r"[a-z][a-z0-9']+")
STOP = frozenset("""i me my we our you your he she it they them their a an the and or but if of to in on at for with
by from is are was were be been am do does did how what why when who which that this these those there here can could
should would will shall may might must have has had not no so as just about into out up down over than then too very
also any some all more most other own such only same get got go going want need know think""".split())  # noqa: SIM905


def cross_validated(support: np.ndarray, boundary: np.ndarray, questions: Sequence[Question],
                    splits: int = 20) -> tuple[float, float]:
    """2-fold cross-validation of the coverage thresholds, ``splits`` random halvings: derived on one half,
    applied to the other; the mean in-scope refused and off-topic answered shares over the held-out halves."""
    n, rng = len(questions), np.random.default_rng(0)
    refused_in, answered_out = [], []
    for perm in (rng.permutation(n) for _ in range(splits)):
        for fit, held in ((perm[: n // 2], perm[n // 2:]), (perm[n // 2:], perm[: n // 2])):
            c = calibrate(support[fit], boundary[fit], [questions[i] for i in fit])
            refused = (support < c.min_score) | (boundary > support + c.boundary_margin)
            refused_in.append(np.mean([refused[i] for i in held if questions[i].kind == "in_scope"]))
            answered_out.append(np.mean([not refused[i] for i in held if questions[i].kind != "in_scope"]))
    return float(np.mean(refused_in)), float(np.mean(answered_out))


def cmd_boundary(card: Card, args: argparse.Namespace) -> None:
    """The boundary as the mean cosine of the k nearest not-covered questions, not the nearest alone: one question
    that shares a word ("calls") no longer refuses. Cross-validated on chat-dev, then derived on all of it."""
    v = vectors(card, args.model, args.cache)
    dev = card.questions["chat-dev"]
    for k in (1, 2, 3, 5):
        support, boundary = evidence(card, v, v.questions["chat-dev"], k)
        refused_in, answered_out = cross_validated(support, boundary, dev)
        c = calibrate(support, boundary, dev)
        line = [f"k {k}: CV on chat-dev: in-scope refused {refused_in:.3f}, off-topic answered {answered_out:.3f}; "
                f"derived on chat-dev {c.min_score} / {c.boundary_margin}"]
        for name in args.set:
            support, boundary = evidence(card, v, v.questions[name], k)
            refused = (support < c.min_score) | (boundary > support + c.boundary_margin)
            line.append(f"{name}: {refusals(refused, card.questions[name])}")
        print(" | ".join(line), flush=True)


def cmd_lexical(card: Card, args: argparse.Namespace) -> None:
    """Support minus alpha x the share of the message's content words the card and its examples never use;
    2-fold cross-validation on chat-dev (20 random splits): thresholds derived on one half, applied to the other."""
    v = vectors(card, "all-MiniLM-L6-v2", args.cache)
    vocabulary = {w for t in card.texts + card.examples for w in WORD.findall(t.lower())}

    def unknown(text: str) -> float:
        words = [w for w in WORD.findall(text.lower()) if w not in STOP]
        return sum(w not in vocabulary for w in words) / len(words) if words else 0.0
    qs = card.questions["chat-dev"]
    base, boundary = evidence(card, v, v.questions["chat-dev"])
    share = np.array([unknown(q.question) for q in qs])
    for alpha in (0.0, 0.05, 0.1, 0.2, 0.3):
        refused_in, answered_out = cross_validated(base - alpha * share, boundary, qs)
        print(f"alpha {alpha}: held-out half, in-scope refused {refused_in:.3f}, off-topic answered {answered_out:.3f}")


def cmd_finetune(card: Card, args: argparse.Namespace) -> None:
    """Fine-tune the small model so each example finds its passage among 32 (in-batch negatives); with
    ``--null``, 16 boundary questions per step must prefer a fixed "none" score (``null`` x scale) to every passage."""
    import torch
    torch.manual_seed(0)
    rng = random.Random(0)
    model = Model(args.model)
    st = model.st
    st.train()
    optimiser = torch.optim.AdamW(st.parameters(), lr=args.lr)

    def embed(texts: list[str]) -> Any:
        return torch.nn.functional.normalize(st(st.preprocess(texts))["sentence_embedding"], dim=-1)
    by_passage: dict[int, list[str]] = {}
    for text, p in zip(card.examples, card.targets.tolist(), strict=True):
        by_passage.setdefault(p, []).append(text)
    batch, steps = 32, int(args.epochs * len(card.examples) / 32)
    for step in range(steps):
        chosen = rng.sample(sorted(by_passage), batch)
        q, p = embed([rng.choice(by_passage[c]) for c in chosen]), embed([card.texts[c] for c in chosen])
        if args.null:
            b = embed(rng.sample(card.boundary, 16))
            logits = torch.cat([args.scale * torch.cat([q, b]) @ p.T,
                                torch.full((batch + 16, 1), args.scale * args.null)], 1)
            target = torch.cat([torch.arange(batch), torch.full((16,), batch)])
        else:
            logits, target = args.scale * q @ p.T, torch.arange(batch)
        loss = torch.nn.functional.cross_entropy(logits, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0:
            print(f"step {step} of {steps}: loss {loss.item():.3f}", flush=True)
    st.eval()
    st.save(args.out)
    report(card, vectors(card, args.out, args.cache, model), args.set, f"fine-tuned ({args.out})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/persona-levers"))
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("rank", "segments", "pooling", "ensemble", "lexical", "boundary", "finetune"):
        p = sub.add_parser(name)
        p.add_argument("--set", action="append", choices=SETS)
        p.add_argument("--model", default="all-MiniLM-L6-v2")
    ft = sub.choices["finetune"]
    ft.add_argument("--out", required=True)
    ft.add_argument("--epochs", type=float, default=1.0)
    ft.add_argument("--lr", type=float, default=2e-5)
    ft.add_argument("--scale", type=float, default=20.0)
    ft.add_argument("--null", type=float, default=0.0)
    args = parser.parse_args()
    args.set = args.set or ["chat-dev"]
    card = load()
    commands = {"rank": cmd_rank, "segments": cmd_segments, "pooling": cmd_pooling, "ensemble": cmd_ensemble,
                "lexical": cmd_lexical, "boundary": cmd_boundary, "finetune": cmd_finetune}
    commands[args.command](card, args)


if __name__ == "__main__":
    main()
