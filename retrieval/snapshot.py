"""The serving copy of a published persona version: its chunks' ids, metadata and vectors in one file.

Chroma's embedded client keeps about 8 MB in memory for every collection a process has read, whatever it read (a
count, the metadata, the vectors), and keeps it: 100 cards with their sidecars cost 0.8 GB over the vectors
themselves in a server that read them all once (docs/benchmarks.md, "100 cards"). So publishing into the embedded
index also writes each version's chunks to ``<data_dir>/serving/<collection>.npz`` (written whole, then renamed),
and a process on that index reads a persona's chunks from there: numpy reads the vectors, the metadata is JSON,
and nothing stays behind but what the caller keeps. Chroma remains the store of record: the file is made from the
same chunks in the same publish, dropped with its collection, and a version without one is read from Chroma.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = "serving"
SUFFIX = ".npz"


@dataclass(frozen=True)
class Snapshot:
    """A version's chunks as the file holds them: ids and metadata row for row with the vectors (``None`` when they
    were not asked for)."""

    ids: list[str]
    metadatas: list[dict[str, Any]]
    vectors: np.ndarray | None


def folder_of(data_dir: Path) -> Path:
    return Path(data_dir) / FOLDER


def path_of(data_dir: Path, collection: str) -> Path:
    """The serving copy of the version held in ``collection``."""
    return folder_of(data_dir) / f"{collection}{SUFFIX}"


def write(path: Path, ids: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
    """Write the copy whole under a temporary name, then rename it into place (a reader never sees half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    header = json.dumps({"ids": ids, "metadatas": metadatas}, ensure_ascii=False).encode("utf-8")
    try:
        with open(partial, "wb") as out:
            np.savez(out, header=np.frombuffer(header, dtype=np.uint8),
                     vectors=np.ascontiguousarray(vectors, dtype=np.float32))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read(path: Path, with_vectors: bool = True) -> Snapshot:
    """The copy at ``path``; raises ``OSError`` when it is missing or unreadable, ``ValueError`` when malformed."""
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(archive["header"].tobytes().decode("utf-8"))
        vectors = archive["vectors"] if with_vectors else None
    ids, metadatas = list(header["ids"]), list(header["metadatas"])
    if vectors is not None and len(vectors) != len(ids):
        raise ValueError(f"{path}: {len(ids)} ids but {len(vectors)} vectors")
    return Snapshot(ids, metadatas, vectors)


def stray(data_dir: Path, live: set[str]) -> list[Path]:
    """Copies (and partial writes) of versions no longer published: what a sweep removes."""
    folder = folder_of(data_dir)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name.startswith(".") or p.name.removesuffix(SUFFIX) not in live]
