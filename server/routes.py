"""Thin HTTP routes over :class:`generation.service.PersonaService`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from generation.service import PersonaService
from retrieval.types import retrieval_body
from server import health, inline
from server.schemas import (
    AskRequest,
    AskResponse,
    ErrorOut,
    Health,
    PersonasResponse,
    RetrieveRequest,
    RetrieveResponse,
)

router = APIRouter()
ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422, 429, 503)}


def service_of(request: Request) -> PersonaService:
    """The app's one service (made in the lifespan of :func:`server.app.create_app`)."""
    return request.app.state.service


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["ops"])
async def healthz(request: Request) -> JSONResponse:
    """Readiness: ``ok`` when the index and the model answer and a persona is indexed; otherwise 503 saying what
    is wrong (``degraded``: running, but no persona to answer as; ``unavailable``: the index or the model)."""
    found = await run_in_threadpool(health.problems, service_of(request))
    if found:
        return JSONResponse({"status": health.status(found), "checks": found}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/v1/personas", response_model=PersonasResponse, responses=ERRORS, tags=["personas"])
async def personas(request: Request) -> dict:
    infos = await run_in_threadpool(service_of(request).personas)
    return {"personas": [p.public() for p in infos]}


@router.post("/v1/retrieve", response_model=RetrieveResponse, responses=ERRORS, tags=["personas"])
async def retrieve(body: RetrieveRequest, request: Request) -> dict:
    """The card passages nearest to the query, best first, scores in [0, 1]."""
    service = service_of(request)
    info, hits = await inline.run(lambda: service.retrieve(body.query, body.persona, body.k, body.sections))
    return retrieval_body(info.slug, body.query, hits)


@router.post("/v1/ask", response_model=AskResponse, responses=ERRORS, tags=["personas"])
async def ask(body: AskRequest, request: Request) -> dict:
    """An answer in the persona's voice; every ``[n]`` marker resolves to one citation."""
    service, history = service_of(request), body.conversation()
    answer = await inline.run(lambda: service.ask(body.question, body.persona, body.k, body.generator, "", history),
                              inline.answers_inline(service, body.generator, history))
    return answer.to_dict()
