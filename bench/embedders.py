"""Embedding models side by side: latency, memory and int8 quality (docs/experiments/mpnet.md).

    python bench/embedders.py latency --model all-mpnet-base-v2 --precision int8 --threads 1
    python bench/embedders.py quality --model all-mpnet-base-v2

Both take ``--models-dir`` (default ``.persona/models``, where `persona export-onnx` writes) and
export / quantize there first when needed. ``latency`` is meant to run in a fresh process per
configuration: its RSS figure is that of a process holding one model and nothing else.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.cards import load_card  # noqa: E402
from ingest.chunking import chunk_card  # noqa: E402
from retrieval.embedder import OnnxEmbedder, SentenceTransformerEmbedder, ensure_onnx  # noqa: E402

SEED = ROOT / "seeds" / "sales-manager.yaml"


def questions(n: int) -> list[str]:
    """In-scope questions of the eval sets, dev then test, the first ``n``."""
    found: list[str] = []
    for path in sorted((ROOT / "eval" / "sets").glob("*.yaml")):
        found += [str(q["question"]) for q in yaml.safe_load(path.read_text())["questions"]
                  if q.get("kind") == "in_scope"]
    return found[:n]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency(args: argparse.Namespace) -> dict[str, object]:
    folder = ensure_onnx(args.model, args.models_dir, "onnx", args.precision)
    assert folder is not None
    start = time.perf_counter()
    embedder = OnnxEmbedder(folder, args.model, args.threads, args.precision)
    embedder.encode(["warm up"])
    load_s = time.perf_counter() - start
    asked = questions(200)
    for q in asked[:10]:
        embedder.encode([q])
    single = []
    for i in range(args.queries):
        t = time.perf_counter()
        embedder.encode([asked[i % len(asked)]])
        single.append((time.perf_counter() - t) * 1000)
    batched = []
    for i in range(args.batches):
        batch = [asked[(i * 16 + j) % len(asked)] for j in range(16)]
        t = time.perf_counter()
        embedder.encode(batch)
        batched.append((time.perf_counter() - t) * 1000)
    return {"model": args.model, "precision": args.precision, "threads": args.threads,
            "load_s": round(load_s, 2), "rss_mib": round(rss_mib(), 1),
            "one_query_ms_median": round(statistics.median(single), 2),
            "one_query_ms_p90": round(float(np.percentile(single, 90)), 2),
            "batch16_ms_median": round(statistics.median(batched), 1),
            "batch16_per_query_ms": round(statistics.median(batched) / 16, 2)}


def quality(args: argparse.Namespace) -> dict[str, object]:
    folder = ensure_onnx(args.model, args.models_dir, "onnx", "int8")
    assert folder is not None
    chunks = [c.embed_text for c in chunk_card(load_card(SEED))]
    asked = questions(args.questions)
    fp32 = OnnxEmbedder(folder, args.model, precision="fp32")
    int8 = OnnxEmbedder(folder, args.model, precision="int8")
    reference = SentenceTransformerEmbedder(args.model, args.models_dir)
    texts = chunks + asked
    ref, full, small = reference.encode(texts), fp32.encode(texts), int8.encode(texts)

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(axis=1)

    def ranking(vectors: np.ndarray) -> np.ndarray:
        return np.argsort(-(vectors[len(chunks):] @ vectors[:len(chunks)].T), axis=1)

    r32, r8 = ranking(full), ranking(small)
    top1 = float(np.mean(r32[:, 0] == r8[:, 0]))
    top3 = float(np.mean([set(a[:3]) == set(b[:3]) for a, b in zip(r32, r8, strict=True)]))
    fp32_top1_in_int8_top3 = float(np.mean([a[0] in b[:3] for a, b in zip(r32, r8, strict=True)]))
    return {"model": args.model, "chunks": len(chunks), "questions": len(asked),
            "onnx_fp32_vs_sentence_transformers_cos_min": round(float(cos(ref, full).min()), 6),
            "int8_vs_fp32_cos_mean": round(float(cos(full, small).mean()), 4),
            "int8_vs_fp32_cos_min": round(float(cos(full, small).min()), 4),
            "same_top1": round(top1, 3), "same_top3_set": round(top3, 3),
            "fp32_top1_within_int8_top3": round(fp32_top1_in_int8_top3, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["latency", "quality"])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--models-dir", type=Path, default=ROOT / ".persona" / "models")
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--questions", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(latency(args) if args.what == "latency" else quality(args)))


if __name__ == "__main__":
    main()
