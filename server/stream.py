"""``POST /v1/ask/stream``: the answer as Server-Sent Events (``delta``..., ``answer``, ``done``).

The stream is started in a dependency, before the response begins, so an unknown persona or bad
input is still the normal JSON error (404/422). An error once streaming has begun becomes an ``error``
event; both come from the one table, :data:`retrieval.errors.SURFACES`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from retrieval.errors import INTERNAL, INTERNAL_MESSAGE, PersonaError
from retrieval.types import AnswerEvent
from server import inline
from server.routes import ERRORS, service_of
from server.schemas import AskRequest

log = logging.getLogger(__name__)
router = APIRouter()


async def started_events(body: AskRequest, request: Request) -> AsyncIterator[AnswerEvent]:
    """The answer's events, with the first one already produced (which raises any domain error)."""
    service, history = service_of(request), body.conversation()
    return await inline.started(
        lambda: service.ask_events(body.question, body.persona, body.k, body.generator, "", history),
        inline.answers_inline(service, body.generator, history))


def to_sse(event: AnswerEvent) -> ServerSentEvent:
    """A core event on the wire: ``delta`` carries ``{"text"}``, ``answer`` the full /v1/ask body."""
    if event.type == "answer" and event.answer is not None:
        return ServerSentEvent(event="answer", data=event.answer.to_dict())
    return ServerSentEvent(event="delta", data={"text": event.text})


# Errors before the stream starts are JSON, not events: documented as such (a ``model`` would be
# documented under the route's text/event-stream media type).
STREAM_ERRORS = {code: {"description": "Error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorOut"}}}} for code in ERRORS}


@router.post("/v1/ask/stream", response_class=EventSourceResponse, responses=STREAM_ERRORS, tags=["personas"])
async def ask_stream(
    events: Annotated[AsyncIterator[AnswerEvent], Depends(started_events)],
) -> AsyncIterator[ServerSentEvent]:
    """Like ``/v1/ask``, streamed: ``delta`` events of answer text, then ``answer``, then ``done``."""
    try:
        async for event in events:
            yield to_sse(event)
    except PersonaError as exc:
        yield ServerSentEvent(event="error", data=exc.surface.body(exc.message))
        return
    except Exception:
        log.exception("unexpected error while streaming an answer")
        yield ServerSentEvent(event="error", data=INTERNAL.body(INTERNAL_MESSAGE))
        return
    yield ServerSentEvent(event="done", data={})
