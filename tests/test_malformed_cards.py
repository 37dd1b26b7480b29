"""A corpus of malformed and hostile cards (tests/cards/, plus huge ones generated in tmp): each is
rejected naming the file and the field, or ingested with its text kept as data and a lint warning;
the index is left unchanged or correctly updated, never half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from generation.service import PersonaService
from ingest.cards import load_card
from ingest.indexer import ingest
from ingest.lint import lint_card
from retrieval.embedder import Embedder
from retrieval.errors import InvalidCard
from retrieval.settings import Settings
from retrieval.store import Store
from tests.conftest import ROOT, SEED

CARDS = Path(__file__).parent / "cards"
VALID_SECTIONS = "sections:\n  - heading: Purpose\n    markdown: I test things.\n"

REJECTED = [
    ("not-yaml.yaml", "(file)", "line 2, column 5"),
    ("not-utf8.yaml", "(file)", "expected utf-8"),
    ("utf16.yaml", "(file)", "expected utf-8"),
    ("empty.yaml", "(card)", "empty document"),
    ("scalar.yaml", "(card)", "got str"),
    ("top-level-list.yaml", "(card)", "got list"),
    ("title-wrong-type.yaml", "title", "valid string"),
    ("sections-mapping.yaml", "sections", "valid list"),
    ("section-not-mapping.yaml", "sections.0", "valid dictionary"),
    ("empty-heading.yaml", "sections.0.heading", "at least 1 character"),
    ("blank-markdown.yaml", "sections.1.markdown", "blank"),
    ("duplicate-heading.yaml", "sections.1.heading", "duplicate heading"),
    ("heading-number.yaml", "sections.0.heading", "valid string"),
    ("missing-slug.yaml", "slug", "required"),
    ("path-slug.yaml", "slug", "pattern"),
    ("aliases-string.yaml", "aliases", "valid list"),
    ("heading-too-long.yaml", "sections.0.heading", "at most 200"),
    ("duplicate-key.yaml", "(file)", "duplicate key 'title' at line 3"),
    ("yaml-bomb.yaml", "(file)", "aliases (*name) are not allowed"),
    ("bad-date.yaml", "(file)", "month must be in 1..12"),
    ("python-tag.yaml", "(file)", "could not determine a constructor"),
    ("control-chars.yaml", "(file)", "special characters are not allowed"),
]


def huge_file(tmp: Path) -> Path:
    """A 10 MB card: one section whose text never ends."""
    path = tmp / "huge.yaml"
    with path.open("w", encoding="utf-8") as out:
        out.write("title: Huge\nslug: huge\nsections:\n  - heading: Purpose\n    markdown: |\n")
        line = "      " + "all work and no play makes a very long card " * 2 + "\n"
        out.write(line * (10 * 1024 * 1024 // len(line) + 1))
    assert path.stat().st_size >= 10 * 1024 * 1024
    return path


def many_sections(tmp: Path) -> Path:
    """A card whose section list has 10,000 entries."""
    body = "".join(f"  - heading: Section {n}\n    markdown: Text {n}.\n" for n in range(10_000))
    path = tmp / "many-sections.yaml"
    path.write_text("title: Many\nslug: many\nsections:\n" + body, encoding="utf-8")
    return path


def many_items(tmp: Path) -> Path:
    """One section with 6,000 short bullets: 6,002 passages to embed."""
    bullets = "".join(f"      - I{n}.\n" for n in range(6_000))
    path = tmp / "many-items.yaml"
    path.write_text("title: Items\nslug: items\nsections:\n  - heading: Purpose\n    markdown: |\n" + bullets,
                    encoding="utf-8")
    return path


def deep_nesting(tmp: Path) -> Path:
    """YAML nested 10,000 levels deep (a recursion bomb for a naive parser)."""
    path = tmp / "deep.yaml"
    path.write_text("title: Deep\nslug: deep\ntags: " + "[" * 10_000 + "]" * 10_000 + "\n" + VALID_SECTIONS,
                    encoding="utf-8")
    return path


GENERATED: list[tuple[Callable[[Path], Path], str, str]] = [
    (huge_file, "(file)", "expected at most 2097152 bytes"),
    (many_sections, "sections", "at most 200 items"),
    (many_items, "sections", "at most 5000 passages"),
    (deep_nesting, "(file)", "nested deeper than 50 levels"),
]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Store:
    """An index holding the seed persona, shared by the rejection tests (which must not change it)."""
    root = tmp_path_factory.mktemp("malformed")
    store = Store(Settings(data_dir=root / "index"))
    ingest([SEED], store, embedder, "all-MiniLM-L6-v2")
    return store


def snapshot(store: Store) -> tuple:
    """Everything a reader could see: personas (with fingerprints), collections and their sizes."""
    names = sorted(store._collection_names())
    return (
        [(p.slug, p.fingerprint, p.chunks) for p in store.personas()],
        [(name, store.client.get_collection(name).count()) for name in names],
    )


def companion(tmp: Path) -> Path:
    """A valid new card that would be published if validation did not come first."""
    path = tmp / "companion.yaml"
    path.write_text("title: Companion\nslug: companion\n" + VALID_SECTIONS, encoding="utf-8")
    return path


def assert_rejected(store: Store, embedder: Embedder, tmp: Path, path: Path, field: str,
                    fragment: str) -> None:
    before = snapshot(store)
    with pytest.raises(InvalidCard) as caught:
        ingest([companion(tmp), path], store, embedder, "all-MiniLM-L6-v2")
    error = caught.value
    assert error.file == str(path) and error.field == field, error.message
    assert fragment.lower() in error.message.lower(), error.message
    assert error.message.startswith(f"{path}: field '{field}': ")
    assert snapshot(store) == before  # nothing written, nothing lost


@pytest.mark.parametrize(("name", "field", "fragment"), REJECTED, ids=[r[0] for r in REJECTED])
def test_committed_bad_cards_are_rejected(indexed: Store, embedder: Embedder, tmp_path: Path,
                                          name: str, field: str, fragment: str) -> None:
    assert_rejected(indexed, embedder, tmp_path, CARDS / name, field, fragment)


@pytest.mark.parametrize(("make", "field", "fragment"), GENERATED, ids=[g[0].__name__ for g in GENERATED])
def test_generated_bad_cards_are_rejected(indexed: Store, embedder: Embedder, tmp_path: Path,
                                          make: Callable[[Path], Path], field: str, fragment: str) -> None:
    assert_rejected(indexed, embedder, tmp_path, make(tmp_path), field, fragment)


def test_corpus_size() -> None:
    assert len(REJECTED) + len(GENERATED) + 3 >= 15
    assert {p.name for p in CARDS.glob("*.yaml")} == {r[0] for r in REJECTED} | {
        "html-script.yaml", "instruction-like.yaml", "unicode-mixed.yaml"}


def published_consistently(store: Store, slug: str) -> None:
    pointer = store.pointer(slug)
    info = store.persona(slug)
    assert pointer and info
    assert store.client.get_collection(pointer["collection"]).count() == info.chunks
    live = {p["collection"] for p in store._pointers().values()}
    assert {n for n in store._collection_names() if n.startswith("p-")} == live  # no orphan, no half version


def test_hostile_text_is_ingested_as_data_with_warnings(settings: Settings,
                                                        embedder: Embedder) -> None:
    store = Store(settings)
    ingest([companion(settings.data_dir.parent)], store, embedder, settings.model)
    report = ingest([CARDS / "html-script.yaml"], store, embedder, settings.model)
    fields = {(w.file, w.field) for w in report.warnings}
    html = str(CARDS / "html-script.yaml")
    assert {(html, "sections.0.markdown"), (html, "sections.1.markdown")} <= fields
    assert all("HTML/script" in w.message for w in report.warnings)
    published_consistently(store, "tester")

    service = PersonaService(settings, embedder=embedder, store=store)
    _, hits = service.retrieve("what runs in the browser", persona="tester", k=10)
    assert any("<script>alert('xss')</script>" in h.text for h in hits)  # kept verbatim, as data
    assert any('onerror="alert(1)"' in h.text for h in hits)

    report = ingest([CARDS / "instruction-like.yaml"], store, embedder, settings.model)  # same slug: an update
    injected = str(CARDS / "instruction-like.yaml")
    fields = {w.field for w in report.warnings if w.file == injected}
    assert {"summary", "sections.1.markdown"} <= fields
    assert all("instructions to a model" in w.message for w in report.warnings)
    published_consistently(store, "tester")
    published_consistently(store, "companion")
    assert {p.slug for p in store.personas()} == {"companion", "tester"}

    answer = service.ask("What about overrides and honesty?", persona="tester")
    assert answer.persona == "tester" and all(c.id.startswith("tester/") for c in answer.citations)
    assert "system prompt" not in answer.text.lower() or answer.citations


def test_seed_and_clean_unicode_card_have_no_warnings(settings: Settings,
                                                      embedder: Embedder) -> None:
    assert lint_card(load_card(SEED), str(SEED)) == []
    report = ingest([CARDS / "unicode-mixed.yaml"], Store(settings), embedder, settings.model)
    assert report.warnings == [] and all(c.published for c in report.changes)


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PERSONA_DATA_DIR": str(data_dir), "NO_COLOR": "1",
           "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "persona", *args], capture_output=True, text=True, check=False,
                          env=env,
                          cwd=ROOT, timeout=300)


def test_cli_reports_warnings_and_rejections(tmp_path: Path) -> None:
    rejected = run_cli("ingest", str(CARDS / "not-utf8.yaml"), data_dir=tmp_path / "index")
    assert rejected.returncode == 2
    assert f"error: {CARDS / 'not-utf8.yaml'}: field '(file)': expected UTF-8" in rejected.stderr
    assert "Traceback" not in rejected.stderr

    accepted = run_cli("ingest", str(CARDS / "instruction-like.yaml"), data_dir=tmp_path / "index")
    assert accepted.returncode == 0, accepted.stderr
    warning = f"warning: {CARDS / 'instruction-like.yaml'}: field 'summary': text reads like instructions"
    assert warning in accepted.stderr
    assert "tester: " in accepted.stderr
