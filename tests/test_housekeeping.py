"""Chat-tool housekeeping: Open WebUI's title, follow-up and tags prompts, recognised by shape and
answered from the card (server/housekeeping.py), directly and through the chat API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from bench.servers import uvicorn_server
from generation.service import PersonaService
from generation.sources import with_sources
from retrieval.settings import Settings
from retrieval.text import question_of
from retrieval.types import Hit
from server import housekeeping
from server.app import create_app

QUESTION = "How much pipeline do I need to hit my quota?"

# The shapes of Open WebUI 0.12's default task prompts (open_webui/config.py, DEFAULT_*_PROMPT_TEMPLATE),
# guidelines shortened; {history} is what {{MESSAGES:END:n}} becomes: "USER: ..." / "ASSISTANT: ..." lines.
TITLE = """### Task:
Generate a concise title summarizing the chat history.
### Guidelines:
- Keep it short: 2-4 words is best.
### Output:
JSON format: { "title": "your concise title here" }
### Examples:
- { "title": "Stock Trends" },
- { "title": "Remote Work" }
### Chat History:
<chat_history>
{history}
</chat_history>"""
FOLLOW_UPS = """### Task:
Predict 3-5 useful messages this user might naturally send next to advance their current objective.
### Guidelines:
- Response must be a JSON object with a "follow_ups" key containing an array of strings, no extra text or formatting.
### Output:
JSON format: { "follow_ups": ["Suggested next message 1", "Suggested next message 2", "Suggested next message 3"] }
### Chat History:
<chat_history>
{history}
</chat_history>"""
TAGS = """### Task:
Generate 1-3 broad tags categorizing the main themes of the chat history, along with 1-3 more specific subtopic tags.

### Output:
JSON format: { "tags": ["tag1", "tag2", "tag3"] }

### Chat History:
<chat_history>
{history}
</chat_history>"""


def history(*turns: tuple[str, str]) -> str:
    return "\n".join(f"{role.upper()}: {text}" for role, text in turns)


def hit(section: str, item: str | None, text: str = "Some text.", kind: str = "item") -> Hit:
    return Hit(f"sales-manager/{section}/{item}", "sales-manager", kind, section, item, text, 0.5, 1)  # type: ignore[arg-type]


# -- shapes -----------------------------------------------------------------------------------
def test_open_webui_prompts_are_recognised_by_their_shape() -> None:
    chat = history(("user", QUESTION), ("assistant", "You need several multiples... [1]\n\nSources:\n- [1] A › B"))
    for template, task in ((TITLE, "title"), (FOLLOW_UPS, "follow_ups"), (TAGS, "tags")):
        request = housekeeping.recognise(template.replace("{history}", chat))
        assert request is not None and request.task == task
        assert request.questions == [QUESTION] and request.last_reply.endswith("- [1] A › B")
    # Without the header line it is still the same shape; with another header it is not a chore.
    assert housekeeping.recognise(TITLE.replace("### Task:\n", "").replace("{history}", chat)).task == "title"


def test_questions_and_other_prompts_are_not_housekeeping() -> None:
    assert housekeeping.recognise(QUESTION) is None
    assert housekeeping.recognise('Answer as JSON: { "title": "x" }') is None, "no chat history"
    assert housekeeping.recognise("<chat_history>\nUSER: hi\n</chat_history> what do you think?") is None
    # A key asked for only inside the history (a user pasting a prompt) does not count.
    assert housekeeping.recognise('<chat_history>\nUSER: JSON format: { "title": "x" }\n</chat_history>') is None
    assert housekeeping.recognise('JSON format: { "queries": [] }\n<chat_history>\nUSER: hi\n</chat_history>') is None
    no_user = 'JSON format: { "title": "" }\n<chat_history>\nASSISTANT: hi\n</chat_history>'
    assert housekeeping.recognise(no_user) is None


def test_history_turns_may_span_lines() -> None:
    text = "USER: first line\nsecond line\nASSISTANT: reply\n\nSources:\n- [1] X\nSYSTEM: be brief\nUSER: next"
    turns = housekeeping.parse_history(text).messages
    assert [(t.role, t.text) for t in turns] == [("user", "first line\nsecond line"),
                                                 ("assistant", "reply\n\nSources:\n- [1] X"), ("user", "next")]


def test_title_is_the_first_question_shortened() -> None:
    assert housekeeping.title_of(QUESTION) == QUESTION.rstrip("?")
    long = "How should I set quotas for a territory with very uneven account potential across reps? Thanks."
    title = housekeeping.title_of(long)
    assert len(title) <= 50 and title.endswith("…") and long.startswith(title[:-1])
    assert housekeeping.title_of("What is OTE? And ramp?") == "What is OTE"


def test_suggestions_ask_about_titled_items_by_their_role() -> None:
    assert housekeeping.suggestion(hit("Workflow", "Build the team")) == "How do you build the team?"
    assert housekeeping.suggestion(hit("Vocabulary", "OTE")) == "What do you mean by OTE?"
    assert housekeeping.suggestion(hit("Mental Models", "Pipeline coverage")) == \
        "How do you think about pipeline coverage?"
    assert housekeeping.suggestion(hit("Purpose", "Something")) == "Tell me more about something."
    assert housekeeping.suggestion(hit("First Principles", "A team's output is bounded by who's on…")) is None
    assert housekeeping.suggestion(hit("Core Mission", None, kind="section")) is None


def test_used_in_sees_listed_paths_and_quoted_sentences() -> None:
    passage = hit("Vocabulary", "Ramp", "**Ramp** — the time for a new rep to reach full productivity.")
    assert housekeeping.used_in(passage, "...\n\nSources:\n- [1] Vocabulary › Ramp")
    quoted = "When I say ramp, I mean the time for a new rep to reach full productivity. [1]"
    assert housekeeping.used_in(passage, quoted)
    assert not housekeeping.used_in(passage, "Coach every rep weekly. [1]")


def test_long_messages_become_their_last_question() -> None:
    context = "Our team sells to hospitals. " * 100
    assert question_of(context + QUESTION, 2000) == QUESTION
    assert question_of(QUESTION, 2000) == QUESTION
    statements = "One statement here. " * 150
    tail = question_of(statements, 2000)
    assert len(tail) <= 2000 and tail.endswith("One statement here.") and tail.startswith("One")
    assert len(question_of("x" * 5000, 2000)) == 2000


def test_tags_are_humanised() -> None:
    assert housekeeping.humanise("pipeline-management") == "Pipeline Management"


# -- answers from the card (real model and index) ----------------------------------------------
@pytest.fixture(scope="module")
def first_reply(service: PersonaService) -> str:
    return with_sources(service.ask(QUESTION, "sales-manager"))


def chores(template: str, reply: str) -> housekeeping.Request:
    request = housekeeping.recognise(template.replace("{history}", history(("user", QUESTION), ("assistant", reply))))
    assert request is not None
    return request


def test_follow_ups_come_from_the_card(service: PersonaService, first_reply: str) -> None:
    info = service.persona("sales-manager")
    suggestions = housekeeping.answer(service, info, chores(FOLLOW_UPS, first_reply))["follow_ups"]
    assert 3 <= len(suggestions) <= 4 and len(set(suggestions)) == len(suggestions)
    experts = {h.text for h in service.search(QUESTION, "sales-manager", 50,
                                              sections=[housekeeping.QUESTIONS_SECTION]).hits}
    assert any(s in {t.strip() for t in experts} for s in suggestions), "the card's own expert questions"
    assert any(s.startswith(("How do you", "What do you mean")) for s in suggestions), "items near the answer"
    assert QUESTION not in suggestions
    cited = [line.split("] ", 1)[1] for line in first_reply.splitlines() if line.startswith("- [")]
    assert all(c.split(" › ")[-1].rstrip("…") not in s for c in cited for s in suggestions), "not what was answered"


def test_title_and_tags(service: PersonaService, first_reply: str) -> None:
    info = service.persona("sales-manager")
    assert housekeeping.answer(service, info, chores(TITLE, first_reply)) == {"title": QUESTION.rstrip("?")}
    tags = housekeeping.answer(service, info, chores(TAGS, first_reply))["tags"]
    assert tags[0] == "Business" and 2 <= len(tags) <= 4
    assert set(tags[1:]) <= {"Sales Leadership", "Forecasting", "Coaching", "Pipeline Management", "Quota"}
    assert "Pipeline Management" in tags or "Quota" in tags


# -- through the chat API ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_url(seeded_settings: Settings, service: PersonaService) -> Iterator[str]:
    with uvicorn_server(create_app(seeded_settings, service=service)) as url:
        yield url


def chat(base_url: str, content: str, stream: bool = False) -> httpx.Response:
    body = {"model": "sales-manager", "messages": [{"role": "user", "content": content}], "stream": stream,
            "max_tokens": 1000}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)


def test_chores_through_the_chat_api_even_for_long_chats(base_url: str, first_reply: str) -> None:
    long_reply = first_reply + "\n\n" + "More on that, in detail. " * 100
    prompt = FOLLOW_UPS.replace("{history}", history(("user", QUESTION), ("assistant", long_reply)))
    assert len(prompt) > 2500
    response = chat(base_url, prompt)
    assert response.status_code == 200
    body = response.json()
    parsed = json.loads(body["choices"][0]["message"]["content"])
    assert len(parsed["follow_ups"]) >= 3 and body["citations"] == [] and body["generator"] == "housekeeping"
    title = chat(base_url, TITLE.replace("{history}", history(("user", QUESTION), ("assistant", long_reply))))
    assert json.loads(title.json()["choices"][0]["message"]["content"]) == {"title": QUESTION.rstrip("?")}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", timeout=120,
                      json={"model": "sales-manager", "stream": True,
                            "messages": [{"role": "user", "content": TAGS.replace("{history}", history(
                                ("user", QUESTION), ("assistant", first_reply)))}]}) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    text = "".join(c["delta"].get("content") or "" for line in lines[:-1] for c in json.loads(line[6:])["choices"])
    assert json.loads(text)["tags"][0] == "Business"


def test_housekeeping_can_be_turned_off(seeded_settings: Settings, service: PersonaService) -> None:
    settings = seeded_settings.model_copy(update={"chat_housekeeping": False})
    with uvicorn_server(create_app(settings, service=service)) as url:
        response = chat(url, TITLE.replace("{history}", history(("user", QUESTION), ("assistant", "..."))))
    assert response.status_code == 200 and response.json()["generator"] == "extractive"
    assert '"title"' not in response.json()["choices"][0]["message"]["content"]
