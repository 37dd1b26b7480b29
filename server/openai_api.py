"""The OpenAI-compatible door: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Chat tools that speak OpenAI's API (Open WebUI, LibreChat, the OpenAI SDKs) see one model per
persona, named by its slug. The last user message is the question; a short follow-up that refers
back ("and what if the rep is new?") is answered with the previous user question folded in. Client
``system`` messages are passed to the generator as extra instructions: they never replace the
persona or its grounding.

Citations reach every kind of client: the text carries ``[n]`` markers and ends with a "Sources"
list; the response carries a structured ``citations`` list; a stream also sends one Open WebUI
citation event per source (``{"event": {"type": "citation", "data": ...}}``) before ``[DONE]``.

``usage`` counts tokens as words and punctuation marks (:func:`count_tokens`): the service has no
LLM tokenizer of its own, so this is a documented approximation, the same for prompt and answer.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool

from generation.sources import sources_block, with_sources
from retrieval.errors import INTERNAL, INTERNAL_MESSAGE, InvalidQuery, PersonaError
from retrieval.service import MAX_K, MAX_QUERY_CHARS
from retrieval.types import Answer, AnswerEvent, Citation, PersonaInfo
from server.routes import service_of

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])

OWNER = "persona-rag"
FOLLOW_UP_MAX_WORDS = 12
_CONNECTIVE = re.compile(r"^\W*(and|but|also|so|then|or|what about|how about|what if|same)\b", re.IGNORECASE)
_REFERENCE = re.compile(r"\b(it|its|that|this|these|those|they|them|their|he|she|him|her|one)\b", re.IGNORECASE)
_TOKEN = re.compile(r"\w+|[^\w\s]")
CORRECTION = "\n\n---\nChecked against my sources, this is the answer I stand by:\n\n"


# -- request bodies ---------------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; the text parts of a multi-part message joined."""
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """OpenAI's request body. Sampling fields (temperature, top_p, ...) are accepted and not used."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=100, description="Persona slug, e.g. 'sales-manager'.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    stream: bool = False
    k: int | None = Field(None, ge=1, le=MAX_K, description="Passages retrieved (extension; default setting).")
    generator: str | None = Field(None, max_length=40,
                                  description="A generator's name (extension; default PERSONA_CHAT_GENERATOR).")


# -- pure helpers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversation:
    """What a chat asks: the question answered (follow-ups folded in) and the client's instructions."""

    question: str
    instructions: str


def is_follow_up(text: str) -> bool:
    """A message that leans on the previous question: opens with a connective ("and what if ..."),
    or is short and refers back ("how do I fix that?")."""
    if _CONNECTIVE.search(text):
        return True
    return len(text.split()) <= FOLLOW_UP_MAX_WORDS and bool(_REFERENCE.search(text))


def conversation(messages: Sequence[ChatMessage]) -> Conversation:
    """The question to answer: the last user message, with the previous one folded in for a follow-up."""
    asked = [m.text().strip() for m in messages if m.role == "user" and m.text().strip()]
    if not asked:
        raise InvalidQuery("messages must contain a user message with text")
    question = asked[-1]
    if len(question) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"the last user message must be at most {MAX_QUERY_CHARS} characters, got {len(question)}")
    if len(asked) > 1 and is_follow_up(question):
        room = MAX_QUERY_CHARS - len(question) - 1
        previous = asked[-2][-room:] if room > 0 else ""
        question = f"{previous} {question}".strip()
    instructions = "\n".join(m.text().strip() for m in messages if m.role in ("system", "developer") and m.text())
    return Conversation(question, instructions)


def count_tokens(text: str) -> int:
    """Words and punctuation marks: an honest, tokenizer-free approximation of tokens."""
    return len(_TOKEN.findall(text))


def closing_text(streamed: str, answer: Answer) -> str:
    """What a stream still owes after its deltas: the rest of the checked answer, then the Sources.

    When the generator's final text is not what it streamed (it fell back to the extractive answer
    after a draft it could not back), the checked answer follows the draft, clearly marked.
    """
    if answer.text.startswith(streamed):
        rest = answer.text[len(streamed):]
    else:
        rest = (CORRECTION if streamed.strip() else "") + answer.text
    return rest + sources_block(answer.citations)


def citation_event(citation: Citation) -> dict[str, Any]:
    """One source in the form Open WebUI renders under a message."""
    name = f"[{citation.n}] {citation.path}"
    return {"type": "citation", "data": {
        "document": [citation.text],
        "metadata": [{"source": citation.id, "name": name}],
        "source": {"id": citation.id, "name": name},
    }}


def usage(prompt: str, completion: str) -> dict[str, int]:
    p, c = count_tokens(prompt), count_tokens(completion)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def model_card(info: PersonaInfo) -> dict[str, Any]:
    return {"id": info.slug, "object": "model", "created": 0, "owned_by": OWNER, "name": info.title,
            "description": info.summary}


def answer_fields(answer: Answer) -> dict[str, Any]:
    """Extension fields every response carries beside OpenAI's own."""
    return {"citations": [c.to_dict() for c in answer.citations], "grounded": answer.grounded,
            "confidence": answer.confidence, "generator": answer.generator, "warnings": list(answer.warnings)}


# -- routes -----------------------------------------------------------------------------------
class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """Errors on these routes come in OpenAI's shape (built by the one table in server/errors.py)."""

    error: OpenAIErrorBody


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIError} for code in (400, 401, 404, 413, 422, 429, 503)
}


@router.get("/models", responses=OPENAI_ERRORS)
async def list_models(request: Request) -> dict[str, Any]:
    """One model per indexed persona, id = slug."""
    infos = await run_in_threadpool(service_of(request).personas)
    return {"object": "list", "data": [model_card(i) for i in infos]}


@router.get("/models/{model}", responses=OPENAI_ERRORS)
async def get_model(model: str, request: Request) -> dict[str, Any]:
    return model_card(await run_in_threadpool(service_of(request).persona, model))


@router.post("/chat/completions", response_model=None, responses=OPENAI_ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> dict[str, Any] | StreamingResponse:
    """A reply in the persona's voice, every claim cited; ``stream: true`` for server-sent events."""
    service = service_of(request)
    chat = conversation(body.messages)
    info = await run_in_threadpool(service.persona, body.model)
    generator = service.generator_name(body.generator or request.app.state.settings.chat_generator)
    prompt = "\n".join(m.text() for m in body.messages)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        events = service.ask_events(chat.question, info.slug, body.k, generator, chat.instructions)
        # The first event is awaited here, so a failure before any text is a plain HTTP error.
        first = await run_in_threadpool(next, events, None)
        events = itertools.chain([first] if first else [], events)
        chunks = Chunks(completion_id, created, info.slug)
        return StreamingResponse(stream(events, chunks, prompt), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    answer = await run_in_threadpool(service.ask, chat.question, info.slug, body.k, generator, chat.instructions)
    content = with_sources(answer)
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": info.slug,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": usage(prompt, content),
        **answer_fields(answer),
    }


# -- streaming --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunks:
    """Builds ``chat.completion.chunk`` objects of one completion."""

    id: str
    created: int
    model: str

    def make(self, delta: dict[str, Any] | None = None, finish_reason: str | None = None,
             **extra: Any) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                             "logprobs": None}]
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": choices, **extra}


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


async def stream(events: Iterator[AnswerEvent], chunks: Chunks, prompt: str) -> AsyncIterator[str]:
    """Deltas as the generator produces them, the Sources, one citation event per source, the usage.

    The citation events are chunks with no choices (OpenAI SDKs skip them) and an ``event`` field
    (what Open WebUI reads). An error after the stream started is sent as OpenAI's error object.
    """
    yield sse(chunks.make({"role": "assistant", "content": ""}))
    streamed: list[str] = []
    answer: Answer | None = None
    try:
        async for event in iterate_in_threadpool(events):
            if event.type == "delta" and event.text:
                streamed.append(event.text)
                yield sse(chunks.make({"content": event.text}))
            elif event.type == "answer":
                answer = event.answer
    except PersonaError as exc:
        yield sse(exc.surface.openai_body(exc.message)) + DONE
        return
    except Exception:  # the stream has started: report in-band, log the details
        log.exception("chat stream failed")
        yield sse(INTERNAL.openai_body(INTERNAL_MESSAGE)) + DONE
        return
    if answer is None:
        yield sse(INTERNAL.openai_body("the generator ended without an answer")) + DONE
        return
    tail = closing_text("".join(streamed), answer)
    if tail:
        yield sse(chunks.make({"content": tail}))
    for citation in answer.citations:
        yield sse(chunks.make(event=citation_event(citation)))
    content = "".join(streamed) + tail
    yield sse(chunks.make({}, "stop", usage=usage(prompt, content), **answer_fields(answer)))
    yield DONE
