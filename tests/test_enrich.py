"""``persona enrich``: parsing and merging on crafted replies, then the command against a REAL llama.cpp server.

The server is the tiny Gemma 3 270M (see tests/test_openai_chat.py); its questions are poor, so the
end-to-end test checks the protocol and the file, never the questions' quality.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.servers import LlamaServer, free_port
from ingest.cards import load_card
from ingest.chunking import chunk_card
from ingest.enrich import (
    ANGLES,
    BOUNDARY_FOCI,
    InvalidBatchFile,
    answer_live,
    batch_requests,
    collect,
    header_of,
    key,
    llm_ask,
    merge,
    merge_boundary,
    parse_questions,
    plan,
    prompt_messages,
    read_batch_results,
    seen_keys,
    takes_examples,
    wanted,
    write_atomically,
)
from ingest.examples import Sidecar, load_sidecar, sidecar_path
from retrieval.errors import LLMUnavailable
from retrieval.settings import Settings
from retrieval.types import Chunk
from tests.conftest import SEED

PASSAGE = ("**Pipeline coverage.** You need several multiples of the quota in qualified pipeline because most "
           "deals don't close; thin coverage now is a missed number later.")


@pytest.fixture(scope="module")
def passages() -> list[Chunk]:
    return chunk_card(load_card(SEED))


# -- pure parts -------------------------------------------------------------------------------
def test_passages_that_take_examples_leave_out_sections_with_items(passages: list[Chunk]) -> None:
    targets = takes_examples(passages)
    with_items = {c.section for c in passages if c.kind == "item"}
    assert targets[0].id == "sales-manager/overview"
    assert all(c.kind != "section" or c.section not in with_items for c in targets)
    assert {c.id for c in passages if c.kind == "item"} <= {c.id for c in targets}
    assert any(c.kind == "section" for c in targets), "a section without items takes examples"
    assert [c.position for c in targets] == sorted(c.position for c in targets), "card order"


def test_parse_strips_numbering_bullets_and_quotes() -> None:
    reply = """Sure! Here are 5 questions a person might ask:

1. How much pipeline do I need to hit my number?
2) "my team keeps missing quota, is our funnel too thin"
- **What coverage ratio should I aim for?**
* Q4: is 2x pipeline enough for next quarter?
(5) \u2018how do i know if we have enough deals in play\u2019
Question 6: Why?
I hope this helps!"""
    assert parse_questions(reply, PASSAGE) == [
        "How much pipeline do I need to hit my number?",
        "my team keeps missing quota, is our funnel too thin",
        "What coverage ratio should I aim for?",
        "is 2x pipeline enough for next quarter?",
        "how do i know if we have enough deals in play",
    ]


def test_parse_drops_duplicates_copies_and_lines_out_of_bounds() -> None:
    reply = "\n".join([
        "How much pipeline do I need?",
        "how much pipeline do I need",  # the same words
        "You need several multiples of the quota in qualified pipeline.",  # copied from the passage
        "Pipeline coverage?",  # the title: copied
        "so if most deals don't close; thin coverage now is a missed number later, right?",  # a copied run of 8
        "coverage",  # one word
        "Pipeline advice",  # two words and no question mark
        "the potential of this product;",  # a fragment
        " ".join(["word"] * 31),  # too long without a question mark
        "Asked before?",  # in seen
        "Is 3x coverage enough for a new team?",
        "okrs or quotas for a new sdr team?",  # not chatter ("ok")
    ])
    assert parse_questions(reply, PASSAGE, seen={key("asked before")}) == [
        "How much pipeline do I need?", "Is 3x coverage enough for a new team?", "okrs or quotas for a new sdr team?"]
    assert parse_questions("", PASSAGE) == [] and parse_questions("Here are some questions:\n\n", PASSAGE) == []


def test_prompt_names_the_persona_the_passage_and_the_count(passages: list[Chunk]) -> None:
    item = next(c for c in passages if c.kind == "item")
    (message,) = prompt_messages("Sales Manager", item, 3)
    assert message["role"] == "user"
    assert "Write 3 different questions" in message["content"] and "a Sales Manager" in message["content"]
    assert f"{item.section} › {item.item}" in message["content"] and "**" not in message["content"]
    assert all(angle in message["content"] for angle in ANGLES)
    assert "an Executive Chef" in prompt_messages("Executive Chef", item, 3)[0]["content"]


def sidecar(**examples: list[str]) -> Sidecar:
    return Sidecar(card="sales-manager", examples={f"sales-manager/{k}": v for k, v in examples.items()},
                   not_covered=["what is our 401k match?"])


def test_merge_keeps_hand_written_and_tops_up_to_n() -> None:
    before = sidecar(overview=["who are you?"], purpose=["why does the role exist?", "what is it for?"])
    generated = {"sales-manager/overview": ["Who are you?", "what do you do all day?", "tell me about you"],
                 "sales-manager/purpose": ["is a sales manager overhead?"],
                 "sales-manager/core-mission": ["what is your mission?", "what are you trying to achieve?"]}
    order = ["sales-manager/overview", "sales-manager/core-mission", "sales-manager/purpose"]
    after, added = merge(before, generated, per_passage=2, order=order)
    assert after.examples == {
        "sales-manager/overview": ["who are you?", "what do you do all day?"],  # the duplicate is dropped
        "sales-manager/core-mission": ["what is your mission?", "what are you trying to achieve?"],
        "sales-manager/purpose": ["why does the role exist?", "what is it for?"],  # full: unchanged
    }
    assert list(after.examples) == order and after.not_covered == before.not_covered
    assert added == {"sales-manager/overview": ["what do you do all day?"],
                     "sales-manager/core-mission": ["what is your mission?", "what are you trying to achieve?"]}
    assert before.examples["sales-manager/overview"] == ["who are you?"], "the input is not changed"


def test_merge_overwrite_replaces_but_never_with_nothing() -> None:
    before = sidecar(overview=["who are you?"], purpose=["why does the role exist?"], gone=["an old passage"])
    generated = {"sales-manager/overview": ["what do you do all day?", "tell me about you", "a third"],
                 "sales-manager/purpose": []}
    after, added = merge(before, generated, per_passage=2, overwrite=True)
    assert after.examples["sales-manager/overview"] == ["what do you do all day?", "tell me about you"]
    assert after.examples["sales-manager/purpose"] == ["why does the role exist?"]
    assert after.examples["sales-manager/gone"] == ["an old passage"] and list(added) == ["sales-manager/overview"]


def test_wanted_counts_what_each_passage_lacks(passages: list[Chunk]) -> None:
    before = sidecar(overview=["a", "b"], purpose=["c"])
    needs = dict((p.id, n) for p, n in wanted(before, passages, 2))
    assert "sales-manager/overview" not in needs and needs["sales-manager/purpose"] == 1
    assert len(needs) == len(takes_examples(passages)) - 1
    assert dict((p.id, n) for p, n in wanted(before, passages, 2, overwrite=True))["sales-manager/overview"] == 2
    assert seen_keys(before) == {"a", "b", "c", "what is our 401k match"}
    assert seen_keys(before, ["sales-manager/overview"]) == {"c", "what is our 401k match"}


def test_plan_asks_for_what_each_passage_lacks_then_the_boundary_in_parts(passages: list[Chunk]) -> None:
    before = sidecar(overview=["a", "b"])
    requests = plan("Sales Manager", "sales-manager", passages, before, per_passage=2, boundary=12, limit=3)
    examples = [r for r in requests if r.passage is not None]
    bounds = [r for r in requests if r.passage is None]
    assert [r.custom_id for r in examples] == [f"examples:{p.id}" for p in takes_examples(passages)[1:4]]
    assert [r.wants for r in examples] == [2, 2, 2] and examples[0].max_tokens == 80
    assert [r.custom_id for r in bounds] == [f"not-covered:sales-manager:{i}" for i in range(1, 6)]
    assert sum(r.wants for r in bounds) == 12 - 1  # the sidecar has one boundary question already
    assert all(focus in r.messages[0]["content"] for r, focus in zip(bounds, BOUNDARY_FOCI, strict=True))
    assert "## Guiding Principles" in bounds[0].messages[0]["content"], "the boundary prompt shows the card"
    assert not plan("Sales Manager", "sales-manager", passages, before, per_passage=0, boundary=1)


def test_collect_parses_each_reply_and_warns_on_what_gave_nothing(passages: list[Chunk]) -> None:
    requests = plan("Sales Manager", "sales-manager", passages, sidecar(), per_passage=2, boundary=3, limit=3)
    first, second, third = (r.passage.id for r in requests[:3])
    replies = {requests[0].custom_id: "1. who are you?\n2. what is our 401k match?\n3. what do you do?",
               requests[1].custom_id: "Sure, here you go:",
               requests[3].custom_id: "- whats a good pizza place\n- who are you?\n- how do i file taxes"}
    result = collect(requests, replies, seen={key("what is our 401k match?")})
    assert result.questions == {first: ["who are you?", "what do you do?"], second: []}
    assert result.boundary == ["whats a good pizza place"], "at most the number asked, never twice in a card"
    assert f"{requests[1].custom_id}: the reply held no usable question; nothing added" in result.warnings
    assert f"{requests[2].custom_id}: no reply; nothing added" in result.warnings and third not in result.questions


def test_answer_live_asks_each_request_with_its_token_budget(passages: list[Chunk]) -> None:
    requests = plan("Sales Manager", "sales-manager", passages, sidecar(), per_passage=1, boundary=0, limit=2)
    asked: list[int] = []

    def ask(messages: list[dict[str, str]], max_tokens: int) -> str:
        asked.append(max_tokens)
        return "a question about it?"

    progress: list[tuple[int, int]] = []
    replies = answer_live(requests, ask, lambda _d, done, total: progress.append((done, total)))
    assert list(replies) == [r.custom_id for r in requests] and asked == [40, 40] and progress == [(1, 2), (2, 2)]


def test_merge_boundary_tops_up_without_duplicates() -> None:
    after, added = merge_boundary(sidecar(), ["What is our 401K match?", "how do i file taxes", "a", "b"], 3)
    assert after.not_covered == ["what is our 401k match?", "how do i file taxes", "a"]
    assert added == ["how do i file taxes", "a"]


def test_batch_requests_and_results_round_trip(passages: list[Chunk]) -> None:
    requests = plan("Sales Manager", "sales-manager", passages, sidecar(), per_passage=2, boundary=0, limit=2)
    lines = [json.loads(line) for line in batch_requests(requests, "gpt-4o-mini", 0.7).splitlines()]
    assert [line["custom_id"] for line in lines] == [r.custom_id for r in requests]
    assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["method"] == "POST"
    assert lines[0]["body"] == {"model": "gpt-4o-mini", "messages": requests[0].messages, "max_tokens": 80,
                                "temperature": 0.7}
    results = "\n".join(json.dumps(line) for line in [
        {"id": "b1", "custom_id": requests[0].custom_id, "error": None, "response": {"status_code": 200, "body": {
            "choices": [{"message": {"role": "assistant", "content": "how do i x?\nhow do i y?"}}]}}},
        {"id": "b2", "custom_id": requests[1].custom_id, "response": None,
         "error": {"code": "rate_limit", "message": "slow down"}},
    ]) + "\n\n"
    replies, failures = read_batch_results(results, "out.jsonl")
    assert replies == {requests[0].custom_id: "how do i x?\nhow do i y?"}
    assert failures == {requests[1].custom_id: "slow down"}
    assert collect(requests, replies, (), failures).warnings == [
        f"{requests[1].custom_id}: the request failed (slow down); nothing added"]
    for bad, message in (("{not json", "out.jsonl line 1: not JSON"),
                         ('{"id": "x"}', "line 1: a batch result with a custom_id expected"),
                         ('{"custom_id": "a", "response": {"status_code": 200, "body": {}}}',
                          "line 1: response.body.choices[0].message.content expected")):
        with pytest.raises(InvalidBatchFile, match=re.escape(message)):
            read_batch_results(bad, "out.jsonl")


def test_llm_must_be_configured_and_reachable() -> None:
    with pytest.raises(LLMUnavailable, match=r"PERSONA_LLM_BASE_URL .* PERSONA_LLM_MODEL"):
        llm_ask(Settings(llm_base_url=None, llm_model=None))
    url = f"http://127.0.0.1:{free_port()}/v1"
    ask = llm_ask(Settings(llm_base_url=url, llm_model="m", llm_timeout=5))
    with pytest.raises(LLMUnavailable, match=f"cannot reach the LLM server at {url}"):
        ask([{"role": "user", "content": "hi"}], 10)


def test_write_is_atomic_and_keeps_the_header(tmp_path: Path) -> None:
    card = tmp_path / "sales-manager.yaml"
    path = sidecar_path(card)
    path.write_text("# Written by hand.\n# Second line.\ncard: sales-manager\nexamples: {}\n")
    path.chmod(0o640)
    after = sidecar(overview=["who are you?"])
    write_atomically(path, after, header_of(path))
    assert path.read_text().startswith("# Written by hand.\n# Second line.\ncard: sales-manager\n")
    assert load_sidecar(card, "sales-manager") == after
    assert (path.stat().st_mode & 0o777) == 0o640, "the file's permissions are kept"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file is left"


# -- the command ------------------------------------------------------------------------------
def enrich(card: Path, *args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    return subprocess.run([sys.executable, "-m", "persona", "enrich", str(card), *args], capture_output=True,
                          text=True, timeout=timeout, env={**clean, "HF_HUB_OFFLINE": "1", **env})


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """A copy of the seed card with a small hand-written sidecar."""
    copy = tmp_path / SEED.name
    shutil.copy(SEED, copy)
    sidecar_path(copy).write_text(
        "# Written by hand.\ncard: sales-manager\nexamples:\n  sales-manager/overview:\n    - who are you?\n"
        "not_covered:\n  - what is our 401k match?\n", encoding="utf-8")
    return copy


def test_enrich_without_an_llm_exits_2_and_names_the_settings(card: Path) -> None:
    before = sidecar_path(card).read_text()
    result = enrich(card, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: persona enrich needs an OpenAI-compatible LLM")
    assert "PERSONA_LLM_BASE_URL" in result.stderr and "PERSONA_LLM_MODEL" in result.stderr
    assert "Traceback" not in result.stderr and sidecar_path(card).read_text() == before


def test_enrich_with_the_server_down_writes_nothing(card: Path) -> None:
    before = sidecar_path(card).read_text()
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = enrich(card, timeout=120, PERSONA_LLM_BASE_URL=url, PERSONA_LLM_MODEL="local")
    assert result.returncode == 2, result.stderr
    assert f"error: cannot reach the LLM server at {url}" in result.stderr and "left unchanged" in result.stderr
    assert sidecar_path(card).read_text() == before and sorted(p.name for p in card.parent.iterdir()) == sorted(
        [card.name, sidecar_path(card).name])


def test_enrich_against_a_real_llm_server(llama: LlamaServer, card: Path) -> None:
    path = sidecar_path(card)
    env = {"PERSONA_LLM_BASE_URL": llama.url, "PERSONA_LLM_MODEL": "gemma-3-270m", "PERSONA_LLM_MAX_TOKENS": "48",
           "PERSONA_LLM_TIMEOUT": "300", "PERSONA_LLM_TEMPERATURE": "0.7"}
    before = path.read_text()
    dry = enrich(card, "--per-passage", "1", "--limit", "3", "--boundary", "0", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    assert "(dry run: nothing written)" in dry.stderr and path.read_text() == before

    result = enrich(card, "--per-passage", "1", "--limit", "3", "--boundary", "0", **env)
    assert result.returncode == 0, result.stderr
    assert "passages asked about" in result.stderr
    after = load_sidecar(card, "sales-manager")
    assert after is not None
    assert after.examples["sales-manager/overview"] == ["who are you?"], "hand-written examples survive"
    assert after.not_covered == ["what is our 401k match?"]
    targets = [c.id for c in takes_examples(chunk_card(load_card(card)))]
    assert set(after.examples) <= set(targets) and all(len(q) <= 1 for q in after.examples.values())
    assert len(after.examples) <= 1 + 3, "at most --limit passages were asked"
    assert list(after.examples) == [t for t in targets if t in after.examples], "card order"
    assert path.read_text().startswith("# Written by hand.\n")
    data = yaml.safe_load(path.read_text())
    assert set(data) == {"card", "examples", "not_covered"}


def test_enrich_through_the_batch_format(card: Path, tmp_path: Path) -> None:
    """Requests out, answered elsewhere (here: written by the test, standing in for a batch API), results in."""
    requests_file, results_file = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    before = sidecar_path(card).read_text()
    model = enrich(card, "--per-passage", "2", "--limit", "2", "--boundary", "3", "--batch-requests",
                   str(requests_file), timeout=120)
    assert model.returncode == 2 and "--model" in model.stderr and not requests_file.exists()
    done = enrich(card, "--per-passage", "2", "--limit", "2", "--boundary", "3", "--batch-requests",
                  str(requests_file), "--model", "gpt-4o-mini", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 4 requests (5 questions)" in done.stderr and sidecar_path(card).read_text() == before
    requests = [json.loads(line) for line in requests_file.read_text().splitlines()]
    assert [r["custom_id"] for r in requests] == ["examples:sales-manager/overview", "examples:sales-manager/purpose",
                                                 "not-covered:sales-manager:1", "not-covered:sales-manager:2"]
    leaked = "how much pipline do i need compared to quota"  # a question of the shipped chat-dev set
    replies = {"examples:sales-manager/overview": "what kind of sales leader are u\nwho am i talking to here",
               "examples:sales-manager/purpose": f"{leaked}\nwhy have a sales manager at all",
               "not-covered:sales-manager:1": "how do i file my commission taxes"}
    results_file.write_text("".join(json.dumps({
        "custom_id": r["custom_id"], "error": None if r["custom_id"] in replies else {"message": "expired"},
        "response": {"status_code": 200, "body": {"choices": [{"message": {"content": replies[r["custom_id"]]}}]}}
        if r["custom_id"] in replies else None}) + "\n" for r in requests))
    merged = enrich(card, "--per-passage", "2", "--limit", "2", "--boundary", "3", "--batch-results",
                    str(results_file), timeout=300)
    assert merged.returncode == 0, merged.stderr
    assert "questions that came near an eval question of sales-manager" in merged.stderr
    assert "warning: not-covered:sales-manager:2: the request failed (expired); nothing added" in merged.stderr
    after = load_sidecar(card, "sales-manager")
    assert after is not None
    assert after.examples["sales-manager/overview"] == ["who are you?", "what kind of sales leader are u"]
    assert leaked not in after.examples.get("sales-manager/purpose", [])
    assert after.not_covered == ["what is our 401k match?", "how do i file my commission taxes"]
    results_file.write_text('{"custom_id": "examples:sales-manager/overview", "error": {"message": "x"}}\n{oops\n')
    bad = enrich(card, "--batch-results", str(results_file), timeout=120)
    assert bad.returncode == 2 and f"{results_file} line 2: not JSON" in bad.stderr and "Traceback" not in bad.stderr
