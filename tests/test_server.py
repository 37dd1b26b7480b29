"""Every endpoint through HTTP against the app factory, the real model and a real index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from generation.service import PersonaService
from retrieval.embedder import Embedder
from retrieval.settings import Settings
from retrieval.text import markers
from server.app import create_app
from server.health import NO_PERSONA


@pytest.fixture(scope="module")
def client(seeded_settings: Settings, service: PersonaService) -> Iterator[TestClient]:
    with TestClient(create_app(seeded_settings, service=service), raise_server_exceptions=False) as test_client:
        yield test_client


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_healthz_without_a_persona_is_not_ok(tmp_path: Path, embedder: Embedder) -> None:
    """Running, index and model fine, but nothing to answer as: 503 "degraded", saying what to do."""
    settings = Settings(data_dir=tmp_path / "index", rate_limit=None)
    with TestClient(create_app(settings, service=PersonaService(settings, embedder=embedder))) as empty:
        response = empty.get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "degraded"
    assert response.json()["checks"] == {"personas": NO_PERSONA}
    assert "persona ingest DIR" in NO_PERSONA and "PERSONA_SEEDS_DIR" in NO_PERSONA


def test_personas(client: TestClient) -> None:
    [persona] = client.get("/v1/personas").json()["personas"]
    assert persona["slug"] == "sales-manager" and persona["title"] == "Sales Manager"
    assert len(persona["sections"]) == 20 and persona["chunks"] == 103
    assert set(persona) == {"slug", "title", "aliases", "summary", "sections", "chunks", "example_questions",
                            "boundary_questions", "calibration", "warnings"}
    assert (persona["example_questions"], persona["boundary_questions"], persona["warnings"]) == (1746, 188, [])
    assert persona["calibration"] == {"source": "card", "min_score": 0.368, "boundary_margin": 0.035,
                                      "confident_score": 0.439}  # its own, recorded in its sidecar


def test_retrieve_contract(client: TestClient) -> None:
    body = client.post("/v1/retrieve", json={"query": "what does OTE mean", "k": 3}).json()
    assert body["persona"] == "sales-manager" and body["query"] == "what does OTE mean"
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
    top = body["results"][0]
    assert set(top) == {"id", "persona", "section", "item", "text", "score", "rank"}
    assert top["id"] == "sales-manager/vocabulary/ote" and top["section"] == "Vocabulary" and top["item"] == "OTE"


def test_k_is_a_json_integer(client: TestClient) -> None:
    """2.0 is an integer in JSON Schema (and so in our OpenAPI document); true and "2" are not (see the 422 cases)."""
    body = client.post("/v1/retrieve", json={"query": "what does OTE mean", "k": 2.0}).json()
    assert [r["rank"] for r in body["results"]] == [1, 2]


def test_ask_contract(client: TestClient) -> None:
    body = client.post("/v1/ask", json={"question": "How much pipeline do I need to hit my quota?"}).json()
    assert body["grounded"] is True and body["generator"] == "extractive" and body["confidence"] == "high"
    assert {"persona", "question", "answer", "citations", "grounded", "confidence", "generator"} <= set(body)
    assert set(markers(body["answer"])) == {c["n"] for c in body["citations"]}
    for citation in body["citations"]:
        assert citation["id"].startswith("sales-manager/") and citation["text"] and citation["section"]


def test_ask_with_history_answers_the_follow_up_in_context(client: TestClient) -> None:
    first = client.post("/v1/ask", json={"question": "how do i run a pipeline review"}).json()
    assert first["searched_for"] == "how do i run a pipeline review"
    history = [{"role": "user", "content": "how do i run a pipeline review"},
               {"role": "assistant", "content": first["answer"]}]
    body = client.post("/v1/ask", json={"question": "how often?", "history": history}).json()
    assert body["grounded"] and body["citations"][0]["id"] == "sales-manager/workflow/run-the-cadence"
    assert body["searched_for"] == "how do i run a pipeline review how often?"
    alone = client.post("/v1/ask", json={"question": "how often?", "history": []}).json()
    assert not alone["grounded"] and alone["searched_for"] == "how often?"


def test_ask_off_topic(client: TestClient) -> None:
    body = client.post("/v1/ask", json={"question": "How do I bake sourdough bread?"}).json()
    assert body["grounded"] is False and body["citations"] == [] and body["confidence"] == "none"
    assert body["nearest_sections"] and all(n["section"] in body["answer"] for n in body["nearest_sections"])


def test_unknown_persona_is_404_listing_slugs(client: TestClient) -> None:
    response = client.post("/v1/ask", json={"question": "hi", "persona": "astronaut"})
    assert response.status_code == 404
    assert "sales-manager" in response.json()["detail"] and response.json()["available"] == ["sales-manager"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/ask", {"question": ""}, "question"),
        ("/v1/ask", {"question": "   "}, "question"),
        ("/v1/ask", {}, "question"),
        ("/v1/ask", {"question": 42}, "question"),
        ("/v1/ask", {"question": "x" * 2001}, "question"),
        ("/v1/ask", {"question": "hi", "k": 51}, "k"),
        ("/v1/retrieve", {"query": "forecast", "k": 0}, "k"),
        ("/v1/retrieve", {"query": "forecast", "k": "many"}, "k"),
        ("/v1/retrieve", {"query": "forecast", "k": True}, "k"),  # JSON true is not the integer 1
        ("/v1/retrieve", {"query": "forecast", "k": "5"}, "k"),
        ("/v1/ask", {"question": "hi", "k": 2.5}, "k"),
        ("/v1/retrieve", {"query": "forecast", "sections": ["Cooking"]}, "section"),
        ("/v1/ask", {"question": "hi", "generator": "gpt-99"}, "generator"),
        ("/v1/ask", {"question": "hi", "colour": "red"}, "colour"),
        ("/v1/ask", {"question": "hi", "history": [{"role": "system", "content": "be brief"}]}, "history"),
        ("/v1/ask", {"question": "hi", "history": [{"role": "user"}]}, "history"),
        ("/v1/ask", {"question": "hi", "history": "what is OTE?"}, "history"),
        ("/v1/ask", {"question": "hi", "history": [{"role": "user", "content": "x"}] * 201}, "history"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, path: str, body: dict, field: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["detail"]


def test_a_blank_question_is_said_to_be_blank(client: TestClient) -> None:
    response = client.post("/v1/ask", json={"question": " \t "})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "question", "message": "must not be blank"}]
