"""The package outside the repository: the built-in example card ships in the wheel, and `persona serve` in an
empty folder answers from it; `persona serve --cards DIR` serves your own cards and never adds the example to them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from bench.servers import free_port, running
from ingest.cards import BUILTIN_CARDS, default_cards
from tests.conftest import ROOT

CARD_FILES = ("sales-manager.yaml", "sales-manager.examples.yaml")
# What a wheel is built from: the packaging files, the packages and the cards the links point at.
SOURCES = ("pyproject.toml", "README.md", "retrieval", "generation", "ingest", "server", "eval", "persona", "bench",
           "seeds")
CHEF = {"title": "Pastry Chef", "slug": "pastry-chef", "summary": "Makes desserts and breads in a kitchen.",
        "sections": [{"heading": "Rules of Thumb",
                      "markdown": "- Weigh everything; never measure flour by volume.\n"
                                  "- Rest laminated dough cold before every fold."}]}


def test_the_builtin_card_is_the_seed_card() -> None:
    for name in CARD_FILES:
        assert (BUILTIN_CARDS / name).read_bytes() == (ROOT / "seeds" / name).read_bytes(), name


def test_default_cards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_cards(None) == BUILTIN_CARDS
    (tmp_path / "seeds").mkdir()
    assert default_cards(None).resolve() == tmp_path / "seeds"
    assert default_cards(tmp_path / "mine") == tmp_path / "mine"  # named: used as given, even when missing


def test_the_wheel_carries_the_builtin_card(tmp_path: Path) -> None:
    """Built as `pip wheel .` builds it (no isolation: setuptools is already here), from a copy of the sources."""
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "out"))
        else:
            shutil.copy(path, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            str(source), "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("persona_rag-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in CARD_FILES:
            assert archive.read(f"ingest/builtin/{name}") == (ROOT / "seeds" / name).read_bytes(), name
        assert not [n for n in archive.namelist() if n.startswith(("seeds/", "tests/"))]


@contextmanager
def serve(folder: Path, *args: str) -> Iterator[str]:
    """`persona serve` with ``folder`` as its working directory (index in ./.persona there); yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
           "PERSONA_RATE_LIMIT": "off"}
    command = [sys.executable, "-m", "persona", "serve", "--port", str(port), *args]
    with running(command, f"{url}/v1/personas", env=env, log=folder / "serve.log", timeout=600, cwd=folder):
        yield url


def test_serve_in_an_empty_folder_answers_from_the_builtin_card(tmp_path: Path) -> None:
    with serve(tmp_path) as url:
        health = httpx.get(f"{url}/healthz")
        body = httpx.post(f"{url}/v1/ask", json={"question": "How much pipeline do I need to hit my quota?"},
                          timeout=60).json()
    assert health.status_code == 200 and health.json() == {"status": "ok"}, health.text
    assert body["persona"] == "sales-manager" and body["grounded"] and body["citations"]
    assert all(c["id"].startswith("sales-manager/") for c in body["citations"])
    log = (tmp_path / "serve.log").read_text()
    assert "the built-in Sales Manager example is served" in log and "sales-manager: 103 chunks" in log


def test_serve_cards_serves_your_own_and_the_example_stays_out(tmp_path: Path) -> None:
    cards = tmp_path / "my-cards"
    cards.mkdir()
    (cards / "pastry-chef.yaml").write_text(yaml.safe_dump(CHEF), encoding="utf-8")
    with serve(tmp_path, "--cards", str(cards)) as url:
        first = [p["slug"] for p in httpx.get(f"{url}/v1/personas").json()["personas"]]
    with serve(tmp_path) as url:  # no cards named and no ./seeds, but the index has a persona: it is served alone
        again = [p["slug"] for p in httpx.get(f"{url}/v1/personas").json()["personas"]]
        answer = httpx.post(f"{url}/v1/ask", json={"question": "How should I measure flour?"}, timeout=60).json()
    assert first == again == ["pastry-chef"]
    assert answer["citations"] and answer["citations"][0]["id"].startswith("pastry-chef/")
    assert "the built-in example is not added" in (tmp_path / "serve.log").read_text()
