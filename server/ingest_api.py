"""``POST /v1/ingest``: cards handed to the running server, which validates, embeds and publishes them.

The embedded index belongs to one process (:func:`retrieval.store.exclusive`), so ``persona ingest`` beside a
running ``persona serve`` sends the cards here (:mod:`server.ingest_client`) instead of opening the index. The
request carries each card's text and its sidecar's; the server validates all of them before anything is written
(a bad card is a 422 ``invalid_card`` naming the file and the field, and nothing changes), then streams
Server-Sent Events while it embeds and publishes: ``progress`` (``{"description", "done", "total"}``), then
``report`` (what changed, as ``persona ingest`` prints it) or ``error`` (``{"detail", "code"}``), then ``done``.
Each persona's new version is switched in with one pointer, as any ingest does: a question sees the old version or
the new one, never a mix. The questions keep being answered meanwhile; ingest batches queue with them in the
embedder.

One ingest runs at a time (a second waits its turn, saying so). Once validated, an ingest runs to its end on the
server even if the client goes away. Only a client allowed to ingest gets here
(:func:`server.middleware.may_ingest`): the API key when one is set; without a key, this machine only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import Field

from generation.service import PersonaService
from ingest.cards import MAX_CARD_BYTES
from ingest.indexer import CardFile, CardToIngest, IngestReport, publish_cards, validate
from retrieval.embedder import CachedEmbedder, Embedder
from retrieval.errors import INTERNAL, INTERNAL_MESSAGE, Forbidden, PersonaError
from retrieval.vector_cache import DiskCachedEmbedder, cache_path
from server.middleware import INGEST_PATH, may_ingest
from server.routes import ERRORS, service_of
from server.schemas import Strict

log = logging.getLogger(__name__)
router = APIRouter()

MAX_CARDS = 10_000
MAX_SIDECAR_CHARS = 16 * 1024 * 1024
Event = tuple[str, dict[str, Any]]
"""An SSE event: its name (``progress``, ``report``, ``error``) and its data."""


class CardIn(Strict):
    path: str = Field(min_length=1, max_length=4096,
                      description="The card's file as the operator named it; errors name it.")
    text: str = Field(max_length=MAX_CARD_BYTES, description="The card's YAML.")
    sidecar: str | None = Field(None, max_length=MAX_SIDECAR_CHARS,
                                description="Its sidecar's YAML (<slug>.examples.yaml), if it has one.")


class IngestRequest(Strict):
    cards: list[CardIn] = Field(min_length=1, max_length=MAX_CARDS)
    prune: bool = Field(False, description="Also remove the indexed personas whose card is not among these.")

    def files(self) -> list[CardFile]:
        return [CardFile(c.path, c.text, c.sidecar) for c in self.cards]


class Ingests:
    """The server's live ingests: one at a time, each in a thread of its own that the app waits for at shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, work: Callable[[], None], emit: Callable[[Event], None]) -> None:
        """Run ``work`` after any ingest in progress (``emit`` says it waits)."""
        def run() -> None:
            if not self._lock.acquire(blocking=False):
                emit(("progress", {"description": "waiting for the ingest in progress", "done": 0, "total": 0}))
                self._lock.acquire()
            try:
                work()
            finally:
                self._lock.release()

        thread = threading.Thread(target=run, name="live-ingest", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def join(self) -> None:
        """Wait for the ingests in progress (the index is not let go while one writes)."""
        for thread in list(self._threads):
            thread.join()


def ingests_of(request: Request) -> Ingests:
    return request.app.state.ingests


def live_embedder(service: PersonaService) -> Embedder:
    """What a live ingest embeds with: the serving model's batching workers (no second model in memory; ingest
    batches queue with the questions), behind the model's vector cache on disk rather than the questions' cache."""
    embedder = service.embedder
    inner = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
    settings = service.settings
    return DiskCachedEmbedder(inner, cache_path(settings.models_dir, settings.model, settings.embed_precision))


@dataclass(frozen=True)
class Validated:
    """A request whose cards all passed validation: ready to publish."""

    cards: list[CardToIngest]
    prune: bool


async def validated(body: IngestRequest, request: Request) -> Validated:
    """The request's cards validated before any event is sent, so that a refusal is a plain JSON error: 403 for a
    client that may not ingest, 422 ``invalid_card`` naming the file and the field (nothing is written)."""
    if not may_ingest(request.scope, request.app.state.settings.api_key):  # the app's key, as its middleware's
        raise Forbidden("a live ingest needs the API key (PERSONA_API_KEY) or, without one, a client on the "
                        "server's own machine")
    workers = request.app.state.workers
    if workers > 1:
        raise Forbidden(f"this server runs {workers} worker processes that only read the index: stop it to ingest "
                        "(`persona ingest`), or serve with one worker to ingest live")
    cards = await run_in_threadpool(validate, body.files())
    return Validated(cards, body.prune)


def publish(service: PersonaService, request: Validated, emit: Callable[[Event], None]) -> None:
    """Publish the cards, load the new versions' indexes, and emit the report (or the error)."""
    settings = service.settings
    try:
        report: IngestReport = publish_cards(
            request.cards, service.store, live_embedder(service), settings.model, settings.embed_batch_size,
            progress=lambda description, done, total: emit(
                ("progress", {"description": description, "done": done, "total": total})),
            prune=request.prune)
        changed = [c.slug for c in report.changes if c.published]
        for n, slug in enumerate(changed, 1):
            emit(("progress", {"description": "loading the new versions", "done": n - 1, "total": len(changed)}))
            service.refresh([slug])
        if report.removed:
            service.refresh()
        log.info("live ingest: %d published, %d removed", len(changed), len(report.removed))
        emit(("report", report.to_dict()))
    except PersonaError as exc:
        log.warning("live ingest failed: %s", exc.message)
        emit(("error", exc.surface.body(exc.message)))
    except Exception:
        log.exception("unexpected error in a live ingest")
        emit(("error", INTERNAL.body(INTERNAL_MESSAGE)))


def to_sse(event: Event) -> ServerSentEvent:
    return ServerSentEvent(event=event[0], data=event[1])


# Errors before the stream starts are JSON, not events (as on /v1/ask/stream).
STREAM_ERRORS = {code: {"description": "Error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorOut"}}}} for code in (*ERRORS, 403)}


@router.post(INGEST_PATH, response_class=EventSourceResponse, responses=STREAM_ERRORS, tags=["ops"])
async def ingest(request: Request, cards: Annotated[Validated, Depends(validated)]) -> AsyncIterator[ServerSentEvent]:
    """Validate, embed and publish cards while the server answers (``persona ingest`` beside ``persona serve``):
    ``progress`` events, then ``report`` or ``error``, then ``done``."""
    send, receive = anyio.create_memory_object_stream[Event | None](max_buffer_size=math.inf)
    token = anyio.lowlevel.current_token()

    def emit(event: Event | None) -> None:
        # the client went away (the ingest goes on), or the server is stopping
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, RuntimeError):
            anyio.from_thread.run_sync(send.send_nowait, event, token=token)

    service = service_of(request)

    def work() -> None:
        try:
            publish(service, cards, emit)
        finally:
            emit(None)

    ingests_of(request).start(work, emit)
    async with receive:
        async for event in receive:
            if event is None:
                break
            yield to_sse(event)
    yield ServerSentEvent(event="done", data={})
