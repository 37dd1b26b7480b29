"""The FastAPI app factory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from generation.registry import generators
from generation.service import PersonaService
from retrieval.embedder import cpu_count
from retrieval.settings import Settings
from retrieval.store import exclusive
from server import errors, health, ingest_api, mcp_http, openai_api, page, routes, stream
from server.middleware import install_middleware


def one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """numpy's BLAS on one thread while the app serves (the process's setting, restored at shutdown).

    A request's matrix-vector products (a question against a card's ~2,000 example vectors) are short: split over
    BLAS threads they wait for cores the embedder keeps busy. Measured on the 2-core machine, 1,747 x 384: 40 us on
    one thread, 530 us on two idle cores, 3.4 ms on two busy ones.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


WORKERS_ENV = "PERSONA_SERVE_WORKERS"
"""Set by ``persona serve --workers N`` (N > 1) for its worker processes: how many serve the index it holds."""


def worker_environment(settings: Settings, workers: int) -> dict[str, str]:
    """What ``persona serve --workers N`` sets for its workers, which build their settings from the environment: the
    command's index and cards, the number of workers, and the cores shared out (``PERSONA_EMBED_THREADS``: each
    worker's embedding batches side by side, the cores over the workers, unless set)."""
    env = {WORKERS_ENV: str(workers), "PERSONA_DATA_DIR": str(settings.data_dir.resolve())}
    if settings.seeds_dir is not None:
        env["PERSONA_SEEDS_DIR"] = str(settings.seeds_dir.resolve())
    if "PERSONA_EMBED_THREADS" not in os.environ:
        env["PERSONA_EMBED_THREADS"] = str(max(1, cpu_count() // workers))
    return env


def worker_app() -> FastAPI:
    """The app of one of ``persona serve --workers N``'s processes (uvicorn's factory, called in each worker): its
    settings from the environment the command set (:func:`worker_environment`), the index only read."""
    return create_app(Settings(), workers=int(os.environ.get(WORKERS_ENV, "1")))


def create_app(settings: Settings | None = None, service: PersonaService | None = None,
               serving_at: str | None = None, workers: int = 1) -> FastAPI:
    """Build the app. The model and the index are opened in the lifespan, not at import time.

    ``serving_at``: the base URL the app is served at (``persona serve`` passes it), noted beside the index
    lock so that ``persona mcp`` on the same index goes through this server.

    ``workers``: the processes serving the index (``persona serve --workers N``). With more than one, the command
    holds the index's lock for all of them and each worker only reads the index (a live ingest is refused: one
    process writes an embedded index).
    """
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        held = exclusive(settings, serving_at) if workers == 1 else contextlib.nullcontext()
        with held, one_blas_thread():
            app.state.service = service or PersonaService(settings, generators=generators(settings))
            # Open the index and load the model before the first request; what is missing is logged.
            problems = await run_in_threadpool(health.warm_up, app.state.service)
            warming = None if problems else health.warm_indexes(app.state.service)
            try:
                async with mcp_http.serve_http(app):
                    yield
            finally:
                if warming is not None:  # the index is not let go while it is being read
                    await run_in_threadpool(warming.join)
                await run_in_threadpool(app.state.ingests.join)  # nor while a live ingest writes

    app = FastAPI(
        title="persona-rag",
        version="0.1.0",
        summary="Occupation personas that answer in their own voice, every claim cited to the card.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.workers = workers
    app.state.ingests = ingest_api.Ingests()
    errors.install(app)
    install_middleware(app, settings)
    app.include_router(routes.router)
    app.include_router(stream.router)
    page.install(app)
    app.include_router(openai_api.router)
    app.include_router(ingest_api.router)
    mcp_http.mount(app)
    return app
