"""Card validation: bad cards are rejected naming the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ingest.cards import load_card
from retrieval.errors import InvalidCard
from tests.conftest import SEED


def seed_data() -> dict:
    return yaml.safe_load(SEED.read_text(encoding="utf-8"))


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_seed_card_validates() -> None:
    card = load_card(SEED)
    assert card.slug == "sales-manager" and card.title == "Sales Manager"
    assert "Head of Sales" in card.aliases


@pytest.mark.parametrize(
    ("name", "mutate", "field", "expected"),
    [
        ("no-sections.yaml", lambda d: d.pop("sections"), "sections", "required"),
        ("no-heading.yaml", lambda d: d["sections"][2].pop("heading"), "sections.2.heading", "required"),
        ("bad-slug.yaml", lambda d: d.update(slug="Sales Manager!"), "slug", "pattern"),
        ("sections-not-list.yaml", lambda d: d.update(sections="Purpose"), "sections", "list"),
        ("empty-markdown.yaml", lambda d: d["sections"][0].update(markdown="   "), "sections.0.markdown", "blank"),
        ("dup-heading.yaml", lambda d: d["sections"][1].update(heading="Purpose"), "sections.1.heading", "duplicate"),
    ],
)
def test_invalid_cards_name_file_field_and_expectation(tmp_path: Path, name: str, mutate, field: str,
                                                       expected: str) -> None:
    data = seed_data()
    mutate(data)
    path = write(tmp_path, name, yaml.safe_dump(data))
    with pytest.raises(InvalidCard) as caught:
        load_card(path)
    assert caught.value.file == str(path)
    assert caught.value.field == field
    assert expected in caught.value.message.lower()


def test_not_yaml_is_rejected_with_position(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "title: [unclosed\nsections: {")
    with pytest.raises(InvalidCard) as caught:
        load_card(path)
    assert str(path) in caught.value.message and "yaml" in caught.value.message.lower()
    assert "line" in caught.value.message


def test_not_utf8_and_not_a_mapping_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidCard, match="UTF-8"):
        load_card(write(tmp_path, "latin1.yaml", "title: Caf\xe9\n".encode("latin-1")))
    with pytest.raises(InvalidCard, match="mapping"):
        load_card(write(tmp_path, "list.yaml", "- just\n- a list\n"))
