"""The OpenAI-compatible door: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Chat tools that speak OpenAI's API (Open WebUI, LibreChat, the OpenAI SDKs) see one model per
persona, named by its slug. The last user message is the question (a message over
``MAX_QUERY_CHARS`` is searched by its last question); the user and assistant messages before it are
the conversation it is asked in, so a follow-up ("and what if the rep is new?") is searched as the
standalone question it stands for (:meth:`generation.service.PersonaService.find`), which the
response names in ``searched_for``. Client ``system`` messages are passed to the generator as
extra instructions: they never replace the persona or its grounding. A chat tool's housekeeping
prompts (title, follow-up suggestions, tags) are answered by :mod:`server.housekeeping`.

Citations reach every kind of client: the text carries ``[n]`` markers and ends with a "Sources"
list; the response carries a structured ``citations`` list; a stream also sends one Open WebUI
citation event per source (``{"event": {"type": "citation", "data": ...}}``) before ``[DONE]``,
named to fit Open WebUI's chip (:func:`chip_name`). Open WebUI turns every ``[n]`` of the text into
a chip, the Sources list's too, so a stream to it (:func:`sources_as_events`) leaves the text list out.

``usage`` counts tokens as words and punctuation marks (:func:`count_tokens`): the service has no
LLM tokenizer of its own, so this is a documented approximation, the same for prompt and answer.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from generation.sources import sources_block, with_sources
from retrieval.conversation import NO_HISTORY, History, Message
from retrieval.errors import INTERNAL, INTERNAL_MESSAGE, InvalidQuery, PersonaError
from retrieval.types import Answer, AnswerEvent, Citation, PersonaInfo
from server import housekeeping, inline
from server.routes import service_of
from server.schemas import PassageCount

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])

OWNER = "persona-rag"
CHIP_CHARS = 30
"""Open WebUI shows a source name of more than 30 characters as its first 15, "...", its last 10."""
OPEN_WEBUI_TOOLS = frozenset({"view_chat", "search_chats", "get_current_timestamp"})
"""Built-in tools Open WebUI (0.12, native function calling, its default) offers the model on every chat."""
SOURCES_HEADER = "x-persona-sources"
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
    k: PassageCount | None = Field(None, description="Passages retrieved (extension; default setting).")
    generator: str | None = Field(None, max_length=40,
                                  description="A generator's name (extension; default PERSONA_CHAT_GENERATOR).")


# -- pure helpers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversation:
    """What a chat asks: the question (the last user message, or its last question when it is long),
    the user and assistant turns before it, and the client's instructions."""

    question: str
    instructions: str
    history: History = NO_HISTORY


def conversation(messages: Sequence[ChatMessage]) -> Conversation:
    """The question to answer (the last user message, its last question when it is long), with the user and
    assistant messages before it as its history."""
    asked = [i for i, m in enumerate(messages) if m.role == "user" and m.text().strip()]
    if not asked:
        raise InvalidQuery("messages must contain a user message with text")
    question = housekeeping.chat_query(messages[asked[-1]].text())
    instructions = "\n".join(m.text().strip() for m in messages if m.role in ("system", "developer") and m.text())
    earlier = [Message(m.role, m.text()) for m in messages[:asked[-1]] if m.role in ("user", "assistant")]
    return Conversation(question, instructions, History.of(earlier))


def count_tokens(text: str) -> int:
    """Words and punctuation marks: an honest, tokenizer-free approximation of tokens."""
    return len(_TOKEN.findall(text))


def closing_text(streamed: str, answer: Answer, with_list: bool = True) -> str:
    """What a stream still owes after its deltas: the rest of the checked answer, then the Sources
    (unless ``with_list`` is false).

    When the generator's final text is not what it streamed (it fell back to the extractive answer
    after a draft it could not back), the checked answer follows the draft, clearly marked.
    """
    if answer.text.startswith(streamed):
        rest = answer.text[len(streamed):]
    else:
        rest = (CORRECTION if streamed.strip() else "") + answer.text
    return rest + (sources_block(answer.citations) if with_list else "")


def chip_name(citation: Citation, limit: int = CHIP_CHARS) -> str:
    """A source's name on an Open WebUI chip: its item (or section), cut at a word to fit ``limit``.

    No "[n]" prefix: Open WebUI numbers the sources itself. The full path is in the pop-up.
    """
    name = " ".join((citation.item or citation.section).split())
    if len(name) <= limit:
        return name
    cut = name[:limit - 1].rsplit(" ", 1)[0] if " " in name[:limit - 1] else name[:limit - 1]
    return cut.rstrip(",;:.–—- …") + "…"


def citation_event(citation: Citation) -> dict[str, Any]:
    """One source in the form Open WebUI renders under a message: a short name for the chip, the
    card's path and passage in the pop-up."""
    name = chip_name(citation)
    return {"type": "citation", "data": {
        "document": [f"**{citation.path}**\n\n{citation.text}"],
        "metadata": [{"source": citation.id, "name": name, "path": citation.path}],
        "source": {"id": citation.id, "name": name},
    }}


def sources_as_events(request: Request, body: ChatCompletionRequest, setting: str) -> bool:
    """Whether a stream's sources go as citation events only, without the text "Sources" list.

    ``setting`` is ``PERSONA_CHAT_SOURCES``: ``text`` never, ``events`` always, ``auto`` (default)
    for Open WebUI, told apart by any of: an ``X-Persona-Sources: events`` header (a connection's
    custom header), the ``X-OpenWebUI-*`` headers it forwards when told to, or the built-in tools
    it offers the model on every chat (:data:`OPEN_WEBUI_TOOLS`).
    """
    asked = request.headers.get(SOURCES_HEADER, "").strip().lower()
    if asked in ("text", "events"):
        return asked == "events"
    if setting != "auto":
        return setting == "events"
    if any(name.lower().startswith("x-openwebui-") for name in request.headers):
        return True
    tools = getattr(body, "tools", None) or []
    names = {str((t.get("function") or {}).get("name", "")) for t in tools if isinstance(t, dict)}
    return bool(names & OPEN_WEBUI_TOOLS)


def usage(prompt: str, completion: str) -> dict[str, int]:
    p, c = count_tokens(prompt), count_tokens(completion)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def model_card(info: PersonaInfo) -> dict[str, Any]:
    return {"id": info.slug, "object": "model", "created": 0, "owned_by": OWNER, "name": info.title,
            "description": info.summary}


def answer_fields(answer: Answer) -> dict[str, Any]:
    """Extension fields every response carries beside OpenAI's own."""
    return {"citations": [c.to_dict() for c in answer.citations], "grounded": answer.grounded,
            "confidence": answer.confidence, "generator": answer.generator, "warnings": list(answer.warnings),
            "searched_for": answer.searched_for or answer.question}


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
    settings = request.app.state.settings
    info = await inline.run(lambda: service.persona(body.model))
    prompt = "\n".join(m.text() for m in body.messages)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    chores = housekeeping.recognise(last_user_text(body.messages)) if settings.chat_housekeeping else None
    if chores is not None:
        content = await run_in_threadpool(housekeeping.reply_text, service, info, chores)
        return chores_reply(body, Chunks(completion_id, created, info.slug), prompt, content)
    chat = conversation(body.messages)
    generator = service.generator_name(body.generator or settings.chat_generator)
    on_loop = inline.answers_inline(service, generator, chat.history)
    if body.stream:
        # The first event is awaited here, so a failure before any text is a plain HTTP error.
        events = await inline.started(lambda: service.ask_events(chat.question, info.slug, body.k, generator,
                                                                 chat.instructions, chat.history), on_loop)
        chunks = Chunks(completion_id, created, info.slug)
        with_list = not sources_as_events(request, body, settings.chat_sources)
        return StreamingResponse(stream(events, chunks, prompt, with_list), media_type="text/event-stream",
                                 headers=STREAM_HEADERS)
    answer = await inline.run(lambda: service.ask(chat.question, info.slug, body.k, generator, chat.instructions,
                                                  chat.history), on_loop)
    content = with_sources(answer)
    return {**completion(completion_id, created, info.slug, content), "usage": usage(prompt, content),
            **answer_fields(answer)}


STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    asked = [m.text() for m in messages if m.role == "user" and m.text().strip()]
    return asked[-1] if asked else ""


def completion(completion_id: str, created: int, model: str, content: str) -> dict[str, Any]:
    """A ``chat.completion`` with one assistant message."""
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", "logprobs": None}]}


def chores_reply(body: ChatCompletionRequest, chunks: Chunks, prompt: str,
                 content: str) -> dict[str, Any] | StreamingResponse:
    """A housekeeping answer (JSON text, no citations), as a completion or a one-delta stream."""
    extra = {"citations": [], "grounded": True, "generator": "housekeeping", "warnings": []}
    if not body.stream:
        return {**completion(chunks.id, chunks.created, chunks.model, content), "usage": usage(prompt, content),
                **extra}

    async def one() -> AsyncIterator[str]:
        yield sse(chunks.make({"role": "assistant", "content": content}))
        yield sse(chunks.make({}, "stop", usage=usage(prompt, content), **extra))
        yield DONE

    return StreamingResponse(one(), media_type="text/event-stream", headers=STREAM_HEADERS)


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


async def stream(events: AsyncIterator[AnswerEvent], chunks: Chunks, prompt: str,
                 with_list: bool = True) -> AsyncIterator[str]:
    """Deltas as the generator produces them, the Sources (unless ``with_list`` is false), one citation
    event per source, the usage.

    The citation events are chunks with no choices (OpenAI SDKs skip them) and an ``event`` field
    (what Open WebUI reads). An error after the stream started is sent as OpenAI's error object.
    """
    yield sse(chunks.make({"role": "assistant", "content": ""}))
    streamed: list[str] = []
    answer: Answer | None = None
    try:
        async for event in events:
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
    tail = closing_text("".join(streamed), answer, with_list)
    if tail:
        yield sse(chunks.make({"content": tail}))
    for citation in answer.citations:
        yield sse(chunks.make(event=citation_event(citation)))
    content = "".join(streamed) + tail
    yield sse(chunks.make({}, "stop", usage=usage(prompt, content), **answer_fields(answer)))
    yield DONE
