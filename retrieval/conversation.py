"""A conversation's earlier turns, and what of them a follow-up question is searched with.

Every surface that carries a chat (the OpenAI-compatible API, ``/v1/ask``'s ``history``, MCP's ``ask``,
the chat page, ``persona chat``) turns it into one :class:`History`: the messages before the question,
oldest first. :meth:`retrieval.service.Retriever.search_conversation` searches a question in its
history; the pure functions here decide what it searches with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from retrieval.errors import InvalidQuery
from retrieval.text import is_blank, question_of

Role = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("user", "assistant")
MAX_MESSAGES = 200
"""Earlier messages a history may hold (a longer chat is cut to its most recent)."""
CONTEXT_QUESTIONS = 2
"""Earlier user questions a follow-up is searched with (the most recent ones)."""


@dataclass(frozen=True)
class Message:
    """One earlier turn of a chat: who said it and what."""

    role: Role
    text: str


@dataclass(frozen=True)
class History:
    """The turns before the question, oldest first (system messages are not turns: they are instructions)."""

    messages: tuple[Message, ...] = ()

    @classmethod
    def of(cls, messages: Iterable[Message | Mapping[str, object]]) -> History:
        """A history from messages or ``{"role", "content"}`` mappings; raises :class:`InvalidQuery` naming
        the message that is not a user or assistant turn with text."""
        out = []
        for n, message in enumerate(messages):
            if isinstance(message, Message):
                role, text = message.role, message.text
            else:
                role, text = message.get("role"), message.get("content", message.get("text"))
            if role not in ROLES:
                raise InvalidQuery(f"history[{n}].role must be 'user' or 'assistant', got {role!r}")
            if not isinstance(text, str):
                raise InvalidQuery(f"history[{n}].content must be a string")
            if not is_blank(text):
                out.append(Message(role, text))
        return cls(tuple(out[-MAX_MESSAGES:]))

    def questions(self, limit: int) -> list[str]:
        """The user's earlier questions as queries (a long message by its last question), oldest first."""
        return [question_of(m.text, limit) for m in self.messages if m.role == "user"]

    @property
    def last_reply(self) -> str:
        """The assistant's most recent reply ("" when there is none)."""
        return next((m.text for m in reversed(self.messages) if m.role == "assistant"), "")

    def __bool__(self) -> bool:
        return any(m.role == "user" for m in self.messages)


NO_HISTORY = History()
"""A question asked on its own."""


_FUNCTION_WORDS = """
a an the and or but so if then than of to in on for with about at by from into over after before as
is are was were be been being am do does did done have has had i you he she it we they me him her us them my your
his its our their mine yours this that these those there here what how why when where which who whom whose
should would could can will shall may might must just ok okay also too any some more most much many very
really whats hows whos wheres im ive id dont doesnt didnt isnt arent wont cant not no yes yeah tho though
even still now then again else one ones thing things stuff like get got go going
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
"""Words that say nothing of a topic on their own: what is left of a follow-up without them is what it says."""
RANK_WEIGHT = (0.2, 0.08)
"""A follow-up's own search weighs ``0.2 + 0.08`` per word of its own in the ranking (all of it from 10 words)."""
COVERAGE_WORDS = (2, 8)
"""A follow-up's own search weighs nothing in the coverage judgement up to 2 words of its own, all of it from 8."""
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEW_TOPIC = re.compile(
    r"\b(?:different|another|new|unrelated|separate|other|random|diff) (?:q|question|topic|subject|thing)\b"
    r"|\b(?:switching|changing|change of) (?:topics?|gears|subjects?)\b|\bunrelated\b|\bby the way\b|\bbtw\b"
    r"|\boff[- ]topic\b|\bon another note\b", re.IGNORECASE)
"""How people announce a question of its own in a chat ("ok different question: ...", "unrelated, but ...")."""
_REFERS_BACK = re.compile(
    r"\b(?:it|its|that|this|these|those|they|them|their|he|she|him|her|his|one|ones|there|then|same|such|either|"
    r"both|other|others)\b|^\W*(?:and|but|so|or|what about|how about|what if|even)\b", re.IGNORECASE)
"""What makes a message lean on the one before: a pronoun or demonstrative, or a connective it opens with."""
SELF_CONTAINED_WORDS = 3
"""A message of this many words of its own that does not refer back is a question of its own for coverage."""


def with_context(earlier: list[str], question: str, limit: int) -> str:
    """The follow-up after the most recent :data:`CONTEXT_QUESTIONS` earlier questions, cut from the front to
    ``limit`` characters: what the follow-up means in the chat, as one query."""
    text = " ".join([*earlier[-CONTEXT_QUESTIONS:], question])
    return text if len(text) <= limit else text[-limit:].split(" ", 1)[-1]


def own_words(question: str) -> int:
    """How many words of a question name something (:data:`FUNCTION_WORDS` left out): "how often?" has 1,
    "ok different question: how do i set territories" 4."""
    return sum(1 for w in _WORD.findall(question.lower()) if w.replace("'", "") not in FUNCTION_WORDS)


@dataclass(frozen=True)
class Weights:
    """How much a follow-up's own search counts beside its search with the earlier questions: in the ranking of
    passages, and in judging whether the card covers it."""

    rank: float
    coverage: float


def own_weights(question: str) -> Weights:
    """The weights of a follow-up's own search, from how much it says on its own (:func:`own_words`).

    A follow-up that names little ("how often?", "and for new reps?") is searched mostly with the chat before it;
    one that names its topic ("ok different question: how do i set territories") mostly by itself. Coverage
    leans on the chat more than the ranking does: a follow-up that names nothing cannot leave the card on its
    own, so it is covered when the chat's question is; one that names enough is judged as a question of its own,
    and so is one of :data:`SELF_CONTAINED_WORDS` words or more that does not refer back (so "whats the best
    pizza in chicago" is refused after any question). A question that announces a new topic ("ok different
    question: ...", "unrelated, but ...") is searched on its own. Chosen on sales-manager-conv-dev
    (docs/experiments/conversation-levers.md).
    """
    if _NEW_TOPIC.search(question):
        return Weights(1.0, 1.0)
    n = own_words(question)
    base, step = RANK_WEIGHT
    rank = min(1.0, base + step * n)
    if n >= SELF_CONTAINED_WORDS and not _REFERS_BACK.search(question):
        return Weights(rank, 1.0)
    low, high = COVERAGE_WORDS
    return Weights(rank, min(1.0, max(0.0, (n - low) / (high - low))))
