"""Readiness: can the service reach its index, load its embedding model, and is any persona indexed?
Used at start-up and by /healthz."""

from __future__ import annotations

import logging
import threading

from retrieval.errors import PersonaError
from retrieval.service import Retriever

log = logging.getLogger(__name__)

NO_PERSONA = ("no persona is indexed: run `persona ingest DIR` (or `persona serve --cards DIR`), or check "
              "PERSONA_SEEDS_DIR and PERSONA_DATA_DIR")


def problems(service: Retriever) -> dict[str, str]:
    """What keeps the service from answering, by component (``index``, ``model``, ``personas``); empty when ready."""
    return {**_index_problems(service), **_model_problems(service)}


def _index_problems(service: Retriever) -> dict[str, str]:
    try:
        service.store.ping()
        return {} if service.personas() else {"personas": NO_PERSONA}
    except PersonaError as exc:
        return {"index": exc.message}


def _model_problems(service: Retriever, embed: bool = False) -> dict[str, str]:
    try:
        if embed:
            service.embed_query("warm up")
        else:
            _ = service.embedder.dimension
    except PersonaError as exc:
        return {"model": exc.message}
    return {}


def status(found: dict[str, str]) -> str:
    """``ok``; ``degraded`` when the service runs but has no persona to answer as; ``unavailable`` otherwise."""
    if not found:
        return "ok"
    return "degraded" if set(found) == {"personas"} else "unavailable"


def warm_up(service: Retriever) -> dict[str, str]:
    """Open the index and load the model before the first request; the personas' indexes load afterwards
    (:func:`warm_indexes`), or with the first question to each, so that start-up takes as long with 100 cards as
    with one.

    What is missing is logged as one clear error per component; the server still starts, so that ``/healthz``
    can say what is wrong (503) and the API answers 503 with the same message.
    """
    found = _index_problems(service)
    found.update(_model_problems(service, embed=True))
    for component, message in found.items():
        log.error("start-up check failed: %s: %s (GET /healthz answers 503 until this is fixed)", component, message)
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
