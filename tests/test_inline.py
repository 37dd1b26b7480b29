"""The request path on the event loop (server/inline.py, retrieval/nonblocking.py): a question's search and answer
run on the loop, its embedding awaited from the batcher once; what cannot be awaited runs in a worker thread; the
answers are those of the service in process. The real model behind the serving embedders, a real index."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.questions import bench_questions
from generation.service import PersonaService
from retrieval.embedder import BatchingEmbedder, CachedEmbedder
from retrieval.errors import InvalidQuery
from retrieval.nonblocking import WouldBlock, blocking_allowed
from retrieval.service import Retrieval
from retrieval.settings import Settings
from retrieval.types import retrieval_body
from server import inline
from server.app import create_app
from tests.test_stream import parse_sse

QUESTIONS = bench_questions(8)[:24]
HISTORY = [{"role": "user", "content": "What is OTE?"}, {"role": "assistant", "content": "OTE is ... [1]"}]


def on_event_loop() -> bool:
    """Whether the caller runs on a thread whose event loop is running (not in a worker thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Recording(PersonaService):
    """The service as the server builds it (the ONNX export behind the batching and caching embedders), noting
    where each search ran: on the event loop or not."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.places: list[bool] = []

    def search(self, *args: Any, **kwargs: Any) -> Retrieval:
        self.places.append(on_event_loop())
        return super().search(*args, **kwargs)

    @property
    def batcher(self) -> BatchingEmbedder:
        cached = self.embedder
        assert isinstance(cached, CachedEmbedder) and isinstance(cached.inner, BatchingEmbedder)
        return cached.inner


def ranked(body: dict[str, Any]) -> list[tuple[str, float, int]]:
    return [(r["id"], r["score"], r["rank"]) for r in body["results"]]


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.fixture(scope="module")
def settings(seeded_settings: Settings) -> Settings:
    return seeded_settings.model_copy(update={"rate_limit": None})


@pytest.fixture(scope="module")
def expected(settings: Settings) -> dict[str, Any]:
    """Answers and retrievals of the service in process, made before any app runs (the way eval makes them)."""
    reference = PersonaService(settings)
    retrieved = {q: retrieval_body(info.slug, q, hits) for q in QUESTIONS[:12]
                 for info, hits in [reference.retrieve(q)]}
    asked = {q: reference.ask(q).to_dict() for q in QUESTIONS[12:]}
    return as_json({"retrieve": retrieved, "ask": asked})


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[tuple[TestClient, Recording]]:
    service = Recording(settings)
    service.warm_up()  # indexes loaded, the card's sentences embedded: every question below waits for its own only
    with TestClient(create_app(settings, service=service), raise_server_exceptions=False) as client:
        yield client, service


def test_questions_run_on_the_event_loop_one_embedding_each_and_answer_as_in_process(
        served: tuple[TestClient, Recording], expected: dict[str, Any]) -> None:
    client, service = served
    service.places.clear()
    calls = service.batcher.batched_calls
    for query, body in expected["retrieve"].items():
        assert ranked(client.post("/v1/retrieve", json={"query": query}).json()) == ranked(body)
    for question, answer in expected["ask"].items():
        got = client.post("/v1/ask", json={"question": question}).json()
        assert got == {k: answer[k] for k in got}  # every field the API sends, as in process
    assert service.batcher.batched_calls - calls == len(QUESTIONS)  # one trip to the batcher a question
    assert service.places and all(service.places)  # every search on the loop: no worker thread


def test_a_cached_question_never_leaves_the_event_loop(served: tuple[TestClient, Recording]) -> None:
    client, service = served
    first = client.post("/v1/ask", json={"question": QUESTIONS[0]}).json()
    service.places.clear()
    calls = service.batcher.batched_calls
    assert client.post("/v1/ask", json={"question": QUESTIONS[0]}).json() == first
    assert service.batcher.batched_calls == calls and service.places == [True]  # searched once, on the loop


def test_a_follow_up_embeds_its_two_searches_in_one_trip(served: tuple[TestClient, Recording]) -> None:
    client, service = served
    service.places.clear()
    calls = service.batcher.batched_calls
    body = {"question": "and what if the rep is new to the team?", "history": HISTORY}
    answer = client.post("/v1/ask", json=body).json()
    assert answer["searched_for"] != body["question"] and answer["citations"]
    assert service.batcher.batched_calls - calls == 1 and all(service.places)


def test_the_stream_is_made_on_the_event_loop_and_is_the_ask_answer(served: tuple[TestClient, Recording]) -> None:
    client, service = served
    question = f"{QUESTIONS[1]} (streamed)"
    service.places.clear()
    response = client.post("/v1/ask/stream", json={"question": question})
    events = parse_sse(response.text)
    assert [name for name, _ in events][-2:] == ["answer", "done"] and all(service.places)
    answer = events[-2][1]
    assert "".join(data["text"] for name, data in events if name == "delta") == answer["answer"]
    assert answer == client.post("/v1/ask", json={"question": question}).json()


def test_domain_errors_come_back_as_before(served: tuple[TestClient, Recording]) -> None:
    client, _ = served
    assert client.post("/v1/ask", json={"question": "what is OTE?", "persona": "nobody"}).status_code == 404
    assert client.post("/v1/ask", json={"question": "what is OTE?", "generator": "nope"}).status_code == 422
    assert client.post("/v1/retrieve", json={"query": "   "}).status_code == 422


def test_indexes_not_loaded_yet_are_loaded_in_a_worker_thread(settings: Settings) -> None:
    service = Recording(settings)  # nothing loaded
    _, hits = asyncio.run(inline.run(lambda: service.retrieve("what does OTE mean", k=1)))
    assert hits[0].id == "sales-manager/vocabulary/ote"
    assert service.places == [True, True, False]  # the embedding awaited on the loop, then the load in a thread
    service.places.clear()
    asyncio.run(inline.run(lambda: service.retrieve("what does OTE mean, again", k=1)))
    assert service.places == [True, True]  # loaded: a new question waits for its embedding only


def test_generators_that_wait_on_the_network_answer_in_a_worker_thread(settings: Settings) -> None:
    plain = PersonaService(settings)
    assert inline.answers_inline(plain, None) and inline.answers_inline(plain, "extractive")
    assert not inline.answers_inline(plain, "openai")
    assert inline.answers_inline(plain, "nope")  # refused at once, on the loop
    from retrieval.conversation import History, Message

    history = History((Message("user", "What is OTE?"), Message("assistant", "OTE is ... [1]")))
    assert inline.answers_inline(plain, None, history)
    condensing = PersonaService(settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1",
                                                            "llm_model": "m", "llm_condense": True}))
    assert inline.answers_inline(condensing, None) and not inline.answers_inline(condensing, None, history)


# -- inline.run, alone ------------------------------------------------------------------------
def test_run_awaits_what_would_block_then_calls_again_on_the_loop() -> None:
    ready: Future = Future()
    places: list[tuple[bool, bool]] = []

    def call() -> str:
        places.append((on_event_loop(), blocking_allowed()))
        if not ready.done():
            raise WouldBlock("test", ready)
        return "answer"

    async def main() -> str:
        threading.Timer(0.05, ready.set_result, [None]).start()  # as the batcher's thread does
        return await inline.run(call)

    assert asyncio.run(main()) == "answer"
    assert places == [(True, False), (True, False)]


def test_run_goes_to_a_worker_thread_when_there_is_nothing_to_await_or_it_waits_too_often() -> None:
    def would_block(future: Future | None) -> tuple[list[tuple[bool, bool]], str]:
        places: list[tuple[bool, bool]] = []

        def call() -> str:
            places.append((on_event_loop(), blocking_allowed()))
            if not blocking_allowed():
                raise WouldBlock("test", future)
            return "answer"

        return places, asyncio.run(inline.run(call))

    places, answer = would_block(None)
    assert answer == "answer" and places == [(True, False), (False, True)]
    done: Future = Future()
    done.set_result(None)
    places, answer = would_block(done)
    assert answer == "answer" and places == [(True, False)] * inline.MAX_WAITS + [(False, True)]


def test_run_raises_the_call_s_errors_and_the_batch_s() -> None:
    def refused() -> None:
        raise InvalidQuery("query must be a non-empty string")

    with pytest.raises(InvalidQuery):
        asyncio.run(inline.run(refused))
    failed: Future = Future()
    failed.set_exception(RuntimeError("the model failed"))

    def waits() -> None:
        raise WouldBlock("test", failed)

    with pytest.raises(RuntimeError, match="the model failed"):
        asyncio.run(inline.run(waits))


def test_a_request_cancelled_while_it_waits_leaves_the_batch_alone() -> None:
    pending: Future = Future()

    def waits() -> None:
        raise WouldBlock("test", pending)

    async def main() -> None:
        task = asyncio.create_task(inline.run(waits))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not pending.cancelled()  # the batcher still hands the others of its batch their vectors
