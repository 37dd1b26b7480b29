"""A question asked in a conversation: the history value, the follow-up's weights (pure), and the search the
service runs for it, on the seed's real index with the real model."""

from __future__ import annotations

import pytest

from generation.service import PersonaService
from generation.sources import with_sources
from retrieval.conversation import (
    CONTEXT_QUESTIONS,
    MAX_MESSAGES,
    History,
    Message,
    own_weights,
    own_words,
    with_context,
)
from retrieval.errors import InvalidQuery

REVIEW = "how do i run a pipeline review"


def chat(service: PersonaService, *questions: str) -> History:
    """The history a chat client holds after asking ``questions`` in turn: each with the reply it got."""
    messages: list[Message] = []
    for question in questions:
        answer = service.ask(question, history=History(tuple(messages)))
        messages += [Message("user", question), Message("assistant", with_sources(answer))]
    return History(tuple(messages))


# -- pure -------------------------------------------------------------------------------------
def test_history_keeps_user_and_assistant_turns_and_names_a_bad_one() -> None:
    history = History.of([{"role": "user", "content": "What is OTE?"}, {"role": "assistant", "content": "It is..."},
                          {"role": "user", "content": "   "}, Message("user", "and for new reps?")])
    assert [m.role for m in history.messages] == ["user", "assistant", "user"]  # the blank one is dropped
    assert history.questions(2000) == ["What is OTE?", "and for new reps?"]
    assert history.last_reply == "It is..." and history
    assert not History() and not History.of([{"role": "assistant", "content": "hello"}])
    with pytest.raises(InvalidQuery, match=r"history\[1\]\.role must be 'user' or 'assistant', got 'system'"):
        History.of([{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}])
    with pytest.raises(InvalidQuery, match=r"history\[0\]\.content must be a string"):
        History.of([{"role": "user", "content": 3}])
    long = History.of([{"role": "user", "content": f"q{n}"} for n in range(MAX_MESSAGES + 5)])
    assert len(long.messages) == MAX_MESSAGES and long.messages[-1].text == f"q{MAX_MESSAGES + 4}"


def test_a_follow_up_is_searched_after_the_last_questions_within_the_limit() -> None:
    earlier = ["first question", "second question", "third question"]
    assert with_context(earlier, "how often?", 2000) == " ".join([*earlier[-CONTEXT_QUESTIONS:], "how often?"])
    cut = with_context(["a" * 50 + " start of a long question"], "how often?", 30)
    assert len(cut) <= 30 and cut.endswith("how often?") and not cut.startswith("a")


def test_how_much_a_follow_up_says_on_its_own() -> None:
    assert own_words("how often?") == 1
    assert own_words("and what if they push back") == 2
    assert own_words("how do I set quotas for new reps?") == 4
    short = own_weights("how often?")
    long = own_weights("how should I set quotas for a territory with uneven potential")
    assert short.rank < long.rank and short.coverage == 0.0 and long.coverage == 1.0
    assert own_weights("is that different from base?").coverage == 0.0  # it refers back: the chat covers it
    assert own_weights("whats the best pizza in chicago").coverage == 1.0  # names its own topic, refers to nothing
    assert own_weights("ok different question: how do i set territories") == own_weights("unrelated, but why?")
    assert own_weights("ok different question: how do i set territories").rank == 1.0


# -- the service --------------------------------------------------------------------------------
def test_a_terse_follow_up_is_answered_from_the_earlier_question(service: PersonaService) -> None:
    alone = service.ask("how often?")
    follow = service.ask("how often?", history=chat(service, REVIEW))
    assert not alone.grounded, "on its own the card does not cover it"
    assert follow.grounded and follow.citations[0].path == "Workflow › Run the cadence"  # weekly pipeline reviews
    assert follow.searched_for == f"{REVIEW} how often?" and alone.searched_for == "how often?"


def test_an_off_topic_follow_up_is_still_refused(service: PersonaService) -> None:
    history = chat(service, REVIEW)
    for question in ("whats the best pizza in chicago", "ok unrelated, how do i get red wine out of a carpet"):
        answer = service.ask(question, history=history)
        assert not answer.grounded and not answer.citations, question


def test_a_new_topic_is_searched_on_its_own(service: PersonaService) -> None:
    question = "ok different question: how do i split territories fairly between reps"
    answer = service.ask(question, history=chat(service, REVIEW))
    assert answer.grounded and answer.citations[0].section == "Decision Frameworks"  # territory and quota design
    assert answer.searched_for == question


def test_the_previous_replys_passage_stays_eligible(service: PersonaService) -> None:
    history = chat(service, "what is a PIP in sales")
    first = service.ask("what is a PIP in sales")
    follow = service.ask("how long should one last?", history=history)
    assert follow.grounded and first.citations[0].id in {c.id for c in follow.citations}


def test_search_conversation_ranks_k_passages_and_judges_the_query_it_used(service: PersonaService) -> None:
    found = service.search_conversation("and for new reps?", chat(service, "What is OTE?"), k=7)
    assert len(found.hits) == 7 and [h.rank for h in found.hits] == list(range(1, 8))
    assert [h.score for h in found.hits] == sorted((h.score for h in found.hits), reverse=True)
    assert found.searched_for == "What is OTE? and for new reps?" and found.coverage.covered
    standalone = service.search_conversation("and for new reps?", History(), standalone="What is ramp for new reps?")
    assert standalone.searched_for == "What is ramp for new reps?"


def test_a_blank_follow_up_is_refused_as_bad_input(service: PersonaService) -> None:
    with pytest.raises(InvalidQuery):
        service.ask("   ", history=chat(service, REVIEW))
