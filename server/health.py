"""Readiness: can the service reach its index and load its embedding model? Used at start-up and by /healthz."""

from __future__ import annotations

import logging
import threading

from retrieval.errors import PersonaError
from retrieval.service import Retriever

log = logging.getLogger(__name__)


def problems(service: Retriever) -> dict[str, str]:
    """What keeps the service from answering, by component (``index``, ``model``); empty when ready."""
    found: dict[str, str] = {}
    try:
        service.store.ping()
    except PersonaError as exc:
        found["index"] = exc.message
    try:
        _ = service.embedder.dimension
    except PersonaError as exc:
        found["model"] = exc.message
    return found


def warm_up(service: Retriever) -> dict[str, str]:
    """Open the index and load the model before the first request.

    What is missing is logged as one clear error per component; the server still starts, so that
    ``/healthz`` can say what is wrong (503) and the API answers 503 with the same message.
    """
    found = problems(service)
    for component, message in found.items():
        log.error("start-up check failed: %s: %s (GET /healthz answers 503 until this is fixed)", component, message)
    if not found:
        service.embed_query("warm up")
    return found


def warm_indexes(service: Retriever) -> threading.Thread:
    """Load the personas' indexes and embed their cards' sentences in the background (started once the
    service is ready), so the first questions pay for neither; a failure is logged, and the first
    question meets it again and reports it."""
    def run() -> None:
        try:
            service.warm_up()
        except Exception as exc:  # logged; the request path reports it properly
            log.warning("warming the indexes failed: %s", exc)

    thread = threading.Thread(target=run, name="warm-indexes", daemon=True)
    thread.start()
    return thread
