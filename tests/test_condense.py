"""The condense-question step: the prompt and the reading of the reply (pure), then a REAL llama.cpp server
(the tiny Gemma 3 270M, for protocol only: a GBNF grammar makes it give a known rewrite), through the chat API
with the openai SDK, and the fall back to the offline rewrite when the LLM fails or is too slow."""

from __future__ import annotations

import json

import openai

from bench.servers import LlamaServer, free_socket, uvicorn_server
from generation.condense import CONDENSE_FELL_BACK, condense_messages, enabled, standalone_of
from generation.service import PersonaService
from retrieval.conversation import History, Message
from retrieval.settings import Settings
from server.app import create_app

REVIEW = "how do i run a pipeline review"
REWRITE = "How often should I run pipeline reviews?"
HISTORY = History((Message("user", REVIEW), Message("assistant", "Focus on the stuck deals. [1]\n\nSources:\n- [1] "
                                                                 "Decision Frameworks › Pipeline triage")))


def llm_settings(base: Settings, url: str, **changes: object) -> Settings:
    values = {"llm_base_url": url, "llm_model": "gemma-3-270m", "llm_timeout": 300, "llm_condense_timeout": 300,
              "llm_extra_body": {"grammar": f"root ::= {json.dumps(REWRITE)}"}, **changes}
    return base.model_copy(update=values)


# -- pure -------------------------------------------------------------------------------------
def test_prompt_has_the_conversation_without_sources_and_the_last_message() -> None:
    system, user = condense_messages("how often?", HISTORY)
    assert system["role"] == "system" and "standalone question" in system["content"]
    assert f"User: {REVIEW}" in user["content"] and "Assistant: Focus on the stuck deals. [1]" in user["content"]
    assert "Sources:" not in user["content"] and user["content"].endswith("Last message: how often?\n\n"
                                                                          "Standalone question:")


def test_the_rewrite_is_read_from_the_reply() -> None:
    assert standalone_of(f'Standalone question: "{REWRITE}"\nBecause the user asked...') == REWRITE
    assert standalone_of(f"\n  {REWRITE}  ") == REWRITE
    assert standalone_of("") is None and standalone_of('  ""  ') is None and standalone_of("x" * 3000) is None


def test_the_step_runs_only_with_an_llm_configured(seeded_settings: Settings) -> None:
    assert not enabled(seeded_settings)
    assert enabled(llm_settings(seeded_settings, "http://127.0.0.1:9/v1"))
    assert not enabled(llm_settings(seeded_settings, "http://127.0.0.1:9/v1", llm_condense=False))


# -- a real llama.cpp server --------------------------------------------------------------------
def test_the_llms_rewrite_is_searched_through_the_chat_api(llama: LlamaServer, seeded_settings: Settings,
                                                          service: PersonaService) -> None:
    settings = llm_settings(seeded_settings, llama.url)
    live = PersonaService(settings, embedder=service.embedder, store=service.store)
    with uvicorn_server(create_app(settings, service=live)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="any", max_retries=0, timeout=300)
        reply = client.chat.completions.create(model="sales-manager", messages=[
            {"role": "user", "content": REVIEW}, {"role": "assistant", "content": HISTORY.last_reply},
            {"role": "user", "content": "how often?"}])
    extra = reply.model_extra
    assert extra["searched_for"] == REWRITE and extra["warnings"] == []
    assert extra["grounded"] and extra["citations"][0]["id"] == "sales-manager/workflow/run-the-cadence"
    first = live.ask(REVIEW)  # a first question is searched as asked: the LLM is not asked
    assert first.searched_for == REVIEW and first.warnings == []


def test_an_unreachable_llm_falls_back_to_the_offline_rewrite(seeded_settings: Settings,
                                                              service: PersonaService) -> None:
    with free_socket() as sock:  # a port nobody listens on
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    live = PersonaService(llm_settings(seeded_settings, url), embedder=service.embedder, store=service.store)
    answer = live.ask("how often?", history=HISTORY)
    assert answer.searched_for == f"{REVIEW} how often?" and answer.grounded
    assert answer.warnings == [CONDENSE_FELL_BACK + f"cannot reach the LLM server at {url}"]


def test_a_slow_llm_falls_back_within_the_condense_timeout(llama: LlamaServer, seeded_settings: Settings,
                                                           service: PersonaService) -> None:
    settings = llm_settings(seeded_settings, llama.url, llm_condense_timeout=0.001)
    answer = PersonaService(settings, embedder=service.embedder, store=service.store).ask("how often?",
                                                                                          history=HISTORY)
    assert answer.searched_for == f"{REVIEW} how often?"
    assert answer.warnings == [CONDENSE_FELL_BACK + "the LLM did not answer within 0.001s "
                                                    "(PERSONA_LLM_CONDENSE_TIMEOUT)"]
