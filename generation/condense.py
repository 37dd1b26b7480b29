"""The condense-question step: an LLM rewrites a follow-up as the standalone question it stands for.

With an LLM configured (``PERSONA_LLM_BASE_URL`` and ``PERSONA_LLM_MODEL``, ``PERSONA_LLM_CONDENSE`` on),
:meth:`generation.service.PersonaService.find` asks it first and searches its rewrite; when the LLM fails,
times out (``PERSONA_LLM_CONDENSE_TIMEOUT``) or answers with something that is not one question, the
offline path (:meth:`retrieval.service.Retriever.search_conversation`) searches instead and the answer says
so in its warnings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from generation.openai_chat import failure_reason, llm_client
from retrieval.conversation import History
from retrieval.service import MAX_QUERY_CHARS
from retrieval.settings import Settings
from retrieval.text import is_blank, strip_markdown

CONDENSE_FELL_BACK = "condensing the follow-up fell back to the offline search: "
REPLY_CHARS = 600
"""Characters of each earlier reply the LLM sees (its Sources list dropped): enough for its topic."""
TURNS = 6
"""Most recent earlier messages the LLM sees."""
MAX_TOKENS = 96
SYSTEM = ("You rewrite the last message of a chat as a standalone question. Use the conversation to fill in "
          "what the message leaves out (what 'it', 'that', 'them' or 'how often?' refer to); keep its meaning, "
          "its words where possible, and its language. If it is already standalone or changes the subject, "
          "return it unchanged. Reply with the question only: no answer, no preamble, no quotes.")
QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_SOURCES = re.compile(r"\n\s*Sources:\s*\n.*\Z", re.DOTALL)
_LABEL = re.compile(r"^\s*(?:standalone question|question|rewritten(?: question)?)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Condensed:
    """What the condense step gave: the standalone question, or why there is none."""

    question: str | None
    failure: str | None = None


def enabled(settings: Settings) -> bool:
    """Whether follow-ups are condensed by an LLM (one is configured and the step is on)."""
    return bool(settings.llm_condense and settings.llm_base_url and settings.llm_model)


def condense_messages(question: str, history: History) -> list[dict[str, str]]:
    """The prompt: the instruction, the recent conversation (replies shortened), the follow-up."""
    lines = []
    for message in history.messages[-TURNS:]:
        text = message.text if message.role == "user" else _SOURCES.sub("", message.text)[:REPLY_CHARS]
        lines.append(f"{message.role.capitalize()}: {' '.join(strip_markdown(text).split())}")
    user = "Conversation:\n" + "\n".join(lines) + f"\n\nLast message: {question}\n\nStandalone question:"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def standalone_of(reply: str) -> str | None:
    """The question in an LLM's reply: its first non-blank line, a label or quotes around it dropped; None when
    nothing usable is left or it is longer than a query may be."""
    line = next((ln for ln in reply.splitlines() if not is_blank(ln)), "")
    line = _LABEL.sub("", line).strip().strip(QUOTES).strip()
    if is_blank(line) or len(line) > MAX_QUERY_CHARS:
        return None
    return line


def condense(settings: Settings, question: str, history: History) -> Condensed:
    """Ask the configured LLM for the standalone question (never raises: a failure is returned)."""
    import openai

    try:
        client = llm_client(settings).with_options(timeout=settings.llm_condense_timeout)
        extra = dict(settings.llm_extra_body) if settings.llm_extra_body else None
        response = client.chat.completions.create(
            model=settings.llm_model or "", messages=condense_messages(question, history),  # type: ignore[arg-type]
            max_tokens=MAX_TOKENS, temperature=0.0, extra_body=extra)
    except (openai.APITimeoutError, TimeoutError):
        return Condensed(None, f"the LLM did not answer within {settings.llm_condense_timeout:g}s "
                               "(PERSONA_LLM_CONDENSE_TIMEOUT)")
    except openai.APIError as exc:
        return Condensed(None, failure_reason(exc, settings))
    content = response.choices[0].message.content if response.choices else None
    found = standalone_of(content or "")
    return Condensed(found, None if found else "the LLM gave no standalone question")
