"""Vectors a model has already given, kept on disk: texts embedded once are not embedded again.

Ingest (``persona ingest``, ``persona serve`` on first start, ``persona eval``'s temporary indexes) embeds
through :class:`DiskCachedEmbedder`: a card ingested into a new index, a card edited in one item, or an eval run
over the same seeds embeds only texts this model has not embedded before. The cache is one SQLite file per
model and precision under the models folder (``<data_dir>/models/vectors/``, or ``PERSONA_MODELS_DIR`` shared
by several indexes), keyed by a hash of the text; SQLite's locking lets several processes share it. A cache
that cannot be opened or written is logged and skipped: ingest never fails because of it.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from pathlib import Path

import numpy as np

from retrieval.embedder import Embedder, embedder_for, onnx_folder
from retrieval.settings import Settings

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...): below SQLite's variable limit


def cache_path(models_dir: Path, model: str, precision: str = "fp32") -> Path:
    """The cache file of ``model`` at ``precision`` under ``models_dir``."""
    return Path(models_dir) / "vectors" / f"{onnx_folder(Path(), model).name}-{precision}.sqlite"


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class DiskCachedEmbedder:
    """``inner`` behind a persistent cache of its vectors (see the module docstring)."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._broken = False

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return self.inner.encode([], batch_size)
        found = self._read(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            fresh = self.inner.encode(missing, batch_size)
            found.update(zip(missing, fresh, strict=True))
            self._write(missing, fresh)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    # -- storage ----------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None and not self._broken:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
                self._db = db
            except (OSError, sqlite3.Error) as exc:
                self._give_up(exc)
        return self._db

    def _give_up(self, exc: Exception) -> None:
        log.warning("the vector cache at %s is not used (%s); texts are embedded as usual", self.path, exc)
        self._broken, self._db = True, None

    def _read(self, texts: list[str]) -> dict[str, np.ndarray]:
        keys = {_key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        with self._lock:
            db = self._connect()
            if db is None:
                return found
            try:
                wanted, dimension = list(keys), self.dimension
                for start in range(0, len(wanted), LOOKUP_CHUNK):
                    chunk = wanted[start:start + LOOKUP_CHUNK]
                    rows = db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                                      chunk).fetchall()
                    for key, blob in rows:
                        vector = np.frombuffer(blob, dtype=np.float32)
                        if vector.shape == (dimension,):  # a file of another model's size is ignored
                            found[keys[key]] = vector
            except sqlite3.Error as exc:
                self._give_up(exc)
        return found

    def _write(self, texts: list[str], vectors: np.ndarray) -> None:
        rows = [(_key(t), np.asarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors, strict=True)]
        with self._lock:
            db = self._connect()
            if db is None:
                return
            try:
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", rows)
            except sqlite3.Error as exc:
                self._give_up(exc)


def ingest_embedder(settings: Settings) -> DiskCachedEmbedder:
    """The embedder ingest uses: the one the settings ask for (:func:`retrieval.embedder.embedder_for`) behind the
    model's vector cache under ``settings.models_dir``."""
    return DiskCachedEmbedder(embedder_for(settings),
                              cache_path(settings.models_dir, settings.model, settings.embed_precision))
