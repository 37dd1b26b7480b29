"""Chat-tool housekeeping: the title, follow-up suggestions and tags a chat tool asks the model for.

After each reply Open WebUI (and tools like it) sends the same model a task prompt: the chat so far
inside ``<chat_history>`` and the JSON it wants back (``{"title": ...}``, ``{"follow_ups": [...]}``,
``{"tags": [...]}``). These are not questions for the persona; answering them as questions gets a
refusal (or a 400 for a long chat). They are recognised by that shape, never by a header line, and
answered from the card without generating anything:

- **title**: the conversation's first user question, shortened, without its question mark (:func:`title_of`);
- **follow_ups**: questions the user could ask next, drawn from the card: its own "Questions Experts
  Constantly Ask" nearest the last question, and the titled items retrieved near the answer that the
  answer did not already use, phrased by their section's role (:func:`suggestion`);
- **tags**: the card's category and its tags nearest the conversation (:func:`tags_of`).

``PERSONA_CHAT_HOUSEKEEPING=false`` turns this off: such prompts are then answered as questions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from generation.service import PersonaService
from retrieval.conversation import History, Message
from retrieval.sections import role_of
from retrieval.service import MAX_QUERY_CHARS
from retrieval.text import question_of, strip_markdown
from retrieval.types import Hit, PersonaInfo

Task = Literal["title", "follow_ups", "tags"]
QUESTIONS_SECTION = "Questions Experts Constantly Ask"
TITLE_CHARS = 50
MAX_FOLLOW_UPS = 4
MAX_TAGS = 3

_HISTORY = re.compile(r"<chat_history>\s*(?P<history>.*?)\s*</chat_history>", re.DOTALL | re.IGNORECASE)
_JSON_KEY = re.compile(r'\{\s*"(?P<key>title|follow_ups|tags)"\s*:')
_TURN = re.compile(r"^(?P<role>USER|ASSISTANT|SYSTEM):[ \t]?", re.MULTILINE)
_QUESTION_END = re.compile(r"(?<=[?.!])\s+")
_UNTITLED = "…"

# How a titled item of a section is asked about, by the section's role (retrieval/sections.py).
ASK_BY_ROLE: dict[str, str] = {
    "term": "What do you mean by {T}?",
    "model": "How do you think about {t}?",
    "framework": "How do you decide on {t}?",
    "workflow": "How do you {t}?",
    "tradeoff": "How do you weigh {t}?",
    "trap": "How do I spot {t}?",
    "refusal": "What is wrong with {t}?",
    "principle": "Why does “{T}” matter?",
    "scenario": "What did you do about {t}?",
    "tool": "How do you use {T}?",
}
ASK_DEFAULT = "Tell me more about {t}."


@dataclass(frozen=True)
class Request:
    """A recognised housekeeping prompt: what it asks for and the chat it is about."""

    task: Task
    history: History

    @property
    def questions(self) -> list[str]:
        return [m.text for m in self.history.messages if m.role == "user"]

    @property
    def last_reply(self) -> str:
        return self.history.last_reply


def recognise(text: str) -> Request | None:
    """The housekeeping request in a prompt, or None for anything else.

    The shape: a ``<chat_history>`` block with at least one user turn, and outside it the JSON
    object asked for, whose first key is ``title``, ``follow_ups`` or ``tags``.
    """
    history = _HISTORY.search(text)
    if history is None:
        return None
    outside = text[:history.start()] + text[history.end():]
    key = _JSON_KEY.search(outside)
    if key is None:
        return None
    chat = parse_history(history.group("history"))
    if not chat:  # no user turn
        return None
    return Request(key.group("key"), chat)  # type: ignore[arg-type]


def parse_history(history: str) -> History:
    """``USER: ...`` / ``ASSISTANT: ...`` lines (a message may span lines) as the chat's turns (``SYSTEM:`` lines
    are not turns)."""
    starts = list(_TURN.finditer(history))
    turns = []
    for here, after in zip(starts, [*starts[1:], None], strict=True):
        end = after.start() if after else len(history)
        role = here.group("role").lower()
        if role != "system":
            turns.append(Message(role, history[here.end():end].strip()))  # type: ignore[arg-type]
    return History.of(turns)


def title_of(question: str, limit: int = TITLE_CHARS) -> str:
    """A question as a title: its first sentence without the closing mark, cut at a word within
    ``limit`` characters."""
    first = _QUESTION_END.split(" ".join(question.split()), maxsplit=1)[0].rstrip("?!. ")
    if len(first) <= limit:
        return first
    cut = first[:limit - 1].rsplit(" ", 1)[0].rstrip(",;:-–— ")
    return cut + "…"


def suggestion(hit: Hit) -> str | None:
    """A titled item as a question a user would ask next; None for a passage without a title."""
    if hit.kind != "item" or not hit.item or hit.item.endswith(_UNTITLED):
        return None
    title = hit.item.strip().rstrip(".")
    lowered = title if title[:2].isupper() else title[:1].lower() + title[1:]
    row = role_of(hit.section)
    return ASK_BY_ROLE.get(row.role, ASK_DEFAULT).format(t=lowered, T=title)


def used_in(hit: Hit, reply: str) -> bool:
    """Whether a reply already drew on the passage: its path is listed, or one of its sentences quoted."""
    if hit.path in reply:
        return True
    plain = " ".join(strip_markdown(reply).split()).lower()
    body = strip_markdown(hit.text).lower()
    return any(len(s) >= 30 and s in plain for s in (p.strip() for p in re.split(r"[.;:!?—]", body)))


def follow_ups(service: PersonaService, info: PersonaInfo, request: Request) -> list[str]:
    """Up to :data:`MAX_FOLLOW_UPS` next questions: the card's expert questions nearest the last one,
    alternating with the items near the answer that the answer did not use."""
    asked = request.questions
    question = chat_query(asked[-1])
    reply = request.last_reply
    seen = {" ".join(q.lower().split()) for q in asked}
    expert: list[str] = []
    if QUESTIONS_SECTION in info.sections:
        for hit in service.search(question, info.slug, 6, sections=[QUESTIONS_SECTION]).hits:
            if hit.kind == "item" and not used_in(hit, reply):
                expert.append(strip_markdown(hit.text))
    near = [s for hit in service.search(question, info.slug, 12).hits
            if not used_in(hit, reply) and hit.section != QUESTIONS_SECTION and (s := suggestion(hit))]
    out: list[str] = []
    for pair in zip(expert + [""] * len(near), near + [""] * len(expert), strict=False):
        for text in pair:
            if text and " ".join(text.lower().split()) not in seen and text not in out:
                out.append(text)
    return out[:MAX_FOLLOW_UPS]


def chat_query(text: str) -> str:
    """What of a chat message is searched: all of it within the query limit, else its last question
    (:func:`retrieval.text.question_of`)."""
    return question_of(text, MAX_QUERY_CHARS)


def humanise(tag: str) -> str:
    """``pipeline-management`` -> ``Pipeline Management``."""
    return " ".join(w[:1].upper() + w[1:] for w in re.split(r"[-_\s]+", tag.strip()) if w)


def tags_of(service: PersonaService, info: PersonaInfo, request: Request) -> list[str]:
    """The card's category, then its tags nearest the conversation's questions (the title without tags)."""
    broad = [info.category] if info.category else []
    tags = list(info.tags)
    if len(tags) > MAX_TAGS:
        scores = service.similarity(chat_query(" ".join(request.questions)))(tags)
        tags = [t for _, t in sorted(zip(scores, tags, strict=True), key=lambda p: -p[0])][:MAX_TAGS]
    out = broad + [humanise(t) for t in tags] if tags else [*broad, info.title]
    return list(dict.fromkeys(out))


def answer(service: PersonaService, info: PersonaInfo, request: Request) -> dict[str, object]:
    """The JSON object the prompt asked for."""
    if request.task == "title":
        return {"title": title_of(request.questions[0])}
    if request.task == "follow_ups":
        return {"follow_ups": follow_ups(service, info, request)}
    return {"tags": tags_of(service, info, request)}


def reply_text(service: PersonaService, info: PersonaInfo, request: Request) -> str:
    return json.dumps(answer(service, info, request), ensure_ascii=False)
