"""The values of retrieval/types.py that travel through the store: a persona's info and its card's status."""

from __future__ import annotations

from retrieval.types import NOT_RECORDED, Calibration, CardStatus, PersonaInfo

INFO = {"slug": "chef", "title": "Chef", "aliases": [], "summary": "Cooks.", "sections": ["Rules"], "chunks": 3}


def test_the_status_round_trips_through_the_stored_json() -> None:
    info = PersonaInfo.from_dict({**INFO, "status": CardStatus(12, 3).to_dict()})
    assert info.status == CardStatus(12, 3, Calibration("settings"))
    assert PersonaInfo.from_dict(info.to_dict()) == info
    assert info.public()["calibration"] == {"source": "settings", "min_score": None, "boundary_margin": None,
                                            "confident_score": None}
    own = Calibration("examples", 0.4, 0.05, 0.5)  # a calibration of the card's own slots in with its values
    assert CardStatus.from_dict(CardStatus(1, 1, own).to_dict()).calibration == own


def test_what_a_card_lacks_is_said_and_naming_persona_enrich() -> None:
    assert CardStatus(12, 3).warnings("chef") == []
    [neither] = CardStatus(0, 0).warnings("chef", "cards/chef.yaml")
    assert neither.startswith("chef has no example questions and no boundary questions of its own (no sidecar "
                              "chef.examples.yaml)")
    assert "`persona enrich cards/chef.yaml`" in neither
    [no_examples] = CardStatus(0, 3).warnings("chef")
    assert "`persona enrich <its card file>` writes them" in no_examples
    [no_boundary] = CardStatus(12, 0).warnings("chef")
    assert no_boundary.startswith("chef has no boundary questions of its own (not_covered in chef.examples.yaml")


def test_an_index_from_before_the_status_says_so() -> None:
    old = PersonaInfo.from_dict(INFO)
    assert old.status is None and old.warnings == [f"chef: {NOT_RECORDED}"]
    public = old.public()
    assert (public["example_questions"], public["boundary_questions"], public["calibration"]) == (None, None, None)
