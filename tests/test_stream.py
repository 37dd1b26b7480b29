"""``POST /v1/ask/stream`` through HTTP: Server-Sent Events, and the JSON errors before streaming starts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from generation.base import Context
from generation.service import PersonaService
from retrieval.errors import IndexUnavailable
from retrieval.settings import Settings
from retrieval.types import Answer, AnswerEvent
from server.app import create_app

PIPELINE = "How much pipeline do I need to hit my quota?"


@pytest.fixture(scope="module")
def client(seeded_settings: Settings, service: PersonaService) -> Iterator[TestClient]:
    with TestClient(create_app(seeded_settings, service=service), raise_server_exceptions=False) as test_client:
        yield test_client


def parse_sse(body: str) -> list[tuple[str, dict]]:
    """``(event, data)`` pairs of a text/event-stream body; comment lines (pings) are skipped."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def stream(client: TestClient, body: dict) -> list[tuple[str, dict]]:
    response = client.post("/v1/ask/stream", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


def test_stream_is_deltas_then_the_ask_answer_then_done(client: TestClient) -> None:
    events = stream(client, {"question": PIPELINE})
    names = [name for name, _ in events]
    assert names[-2:] == ["answer", "done"] and set(names[:-2]) == {"delta"} and len(names) > 3
    answer = events[-2][1]
    assert answer == client.post("/v1/ask", json={"question": PIPELINE}).json()
    assert "".join(data["text"] for name, data in events if name == "delta") == answer["answer"]
    assert answer["grounded"] is True and answer["citations"] and answer["confidence"] in ("high", "low")


def test_stream_of_a_follow_up_is_the_ask_answer_with_its_history(client: TestClient) -> None:
    body = {"question": "and for new reps?", "history": [{"role": "user", "content": "What is OTE?"},
                                                          {"role": "assistant", "content": "OTE is ... [1]"}]}
    answer = dict(stream(client, body))["answer"]
    assert answer == client.post("/v1/ask", json=body).json()
    assert answer["searched_for"] == "What is OTE? and for new reps?" and answer["grounded"]


def test_stream_off_topic_is_not_covered(client: TestClient) -> None:
    events = stream(client, {"question": "How do I bake sourdough bread?", "persona": "sales-manager"})
    answer = dict(events)["answer"]
    assert answer["grounded"] is False and answer["nearest_sections"] and answer["citations"] == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"question": "hi", "persona": "astronaut"}, 404, "sales-manager"),
        ({"question": ""}, 422, "question"),
        ({"question": "   "}, 422, "question"),
        ({"question": "hi", "k": 0}, 422, "k"),
        ({"question": "hi", "generator": "gpt-99"}, 422, "generator"),
        ({"question": "hi", "colour": "red"}, 422, "colour"),
    ],
)
def test_errors_before_streaming_are_json(client: TestClient, body: dict, status: int, field: str) -> None:
    response = client.post("/v1/ask/stream", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert field in response.json()["detail"]


def test_error_mid_stream_is_an_error_event(client: TestClient, service: PersonaService,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    class BreaksMidway:
        name = "breaks-midway"

        def answer(self, context: Context) -> Answer:
            raise AssertionError("streamed, not answered whole")

        def stream(self, context: Context) -> Iterator[AnswerEvent]:
            yield AnswerEvent("delta", "I was saying ")
            raise IndexUnavailable("the index went away")

    monkeypatch.setitem(service.generators.parts, "breaks-midway", BreaksMidway())
    events = stream(client, {"question": PIPELINE, "generator": "breaks-midway"})
    assert events == [("delta", {"text": "I was saying "}),
                      ("error", {"detail": "the index went away", "code": "index_unavailable"})]
