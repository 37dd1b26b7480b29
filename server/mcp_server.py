"""The persona as an MCP server: tools, the card's sections as resources, and a system prompt.

One server per :class:`PersonaService`. ``persona mcp`` serves it on stdin/stdout
(:func:`run_stdio`); the FastAPI app serves it over streamable HTTP at ``/mcp`` (:func:`run_http`,
started by :mod:`server.mcp_http` on the first request), sharing ``app.state.service``.

Domain errors reach MCP clients with their message: as a tool error (``isError``) from a tool,
as a JSON-RPC error from a resource read or a prompt.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
import anyio.abc
import anyio.to_thread
from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, Resource, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from generation.prompts import system_prompt
from generation.registry import generators
from generation.service import PersonaService
from generation.sources import with_sources
from retrieval.conversation import MAX_MESSAGES
from retrieval.errors import IndexUnavailable, PersonaError
from retrieval.service import MAX_QUERY_CHARS
from retrieval.settings import Settings
from retrieval.store import exclusive, holder
from retrieval.types import retrieval_body
from server.mcp_http import MOUNT_PATH
from server.schemas import (
    AskResponse,
    HistoryMessage,
    PassageCount,
    PersonasResponse,
    RetrieveResponse,
    conversation,
)

NAME = "persona-rag"
SCHEME = "persona://"
LOCAL_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
CARD_KINDS = ("overview", "section")
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
INSTRUCTIONS = (
    "Occupation personas (e.g. sales-manager) that answer from their card, every claim cited. "
    "Call `ask` for an answer in the persona's voice with [n] citations, `retrieve` for the raw card "
    "passages, `list_personas` to see who is here. Each card section is a resource "
    "(persona://<slug>/<section>); the `speak_as` prompt gives a persona's system prompt."
)

Persona = Annotated[str | None, Field(description="Persona slug, e.g. 'sales-manager'; optional while only one "
                                                  "persona is indexed.", max_length=100)]


def build_server(service: PersonaService) -> MCPServer:
    """The MCP server over ``service``: tools ask / retrieve / list_personas, section resources, speak_as."""
    server = _PersonaMCP(service, NAME, title="Occupation personas", instructions=INSTRUCTIONS,
                         log_level="WARNING")  # MCPServer calls logging.basicConfig: keep the root level as it is

    def ask(
        question: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="Your question.")],
        persona: Persona = None,
        history: Annotated[list[HistoryMessage] | None, Field(
            max_length=MAX_MESSAGES, description="The conversation so far, oldest first ({role: user|assistant, "
            "content}): a follow-up such as 'how often?' is then answered in its context.")] = None,
    ) -> Annotated[CallToolResult, AskResponse]:
        """Ask the persona. The answer is in its first-person voice, every claim marked [n]; the
        sources list and the structured citations resolve each marker to a passage of its card.
        When the card does not cover the question, the answer says so (grounded=false). Pass the
        earlier turns as `history` for a follow-up; `searched_for` says what it was searched as."""
        with domain_errors(tool=True):
            answer = service.ask(question, persona, history=conversation(history))
        return _result(with_sources(answer, with_ids=True), AskResponse.model_validate(answer.to_dict()))

    def retrieve(
        query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")],
        persona: Persona = None,
        k: Annotated[PassageCount, Field(description="How many passages.")] = 5,
    ) -> Annotated[CallToolResult, RetrieveResponse]:
        """The passages of the persona's card nearest to the query, best first, scores in [0, 1]."""
        with domain_errors(tool=True):
            info, hits = service.retrieve(query, persona, k)
        body = RetrieveResponse.model_validate(retrieval_body(info.slug, query, hits))
        text = "\n\n".join(f"[{h.rank}] {h.path} ({h.score:.2f}) {h.id}\n{h.text}" for h in hits)
        return _result(text, body)

    def list_personas() -> Annotated[CallToolResult, PersonasResponse]:
        """The indexed personas: slug, title, aliases, summary and the sections of each card."""
        with domain_errors(tool=True):
            infos = service.personas()
        text = "\n".join(f"{p.slug}: {p.title}. {p.summary} ({len(p.sections)} sections)" for p in infos)
        return _result(text or "No persona is indexed yet; run `persona ingest seeds/`.",
                       PersonasResponse.model_validate({"personas": [p.public() for p in infos]}))

    @server.resource(SCHEME + "{persona}/{section}", name="card-section", mime_type="text/markdown",
                     title="A section of a persona's card")
    def card_section(persona: str, section: str) -> str:
        """One section of a persona's card (or its overview), as markdown."""
        with domain_errors(tool=False):
            return section_markdown(service, persona, section)

    def speak_as(persona: Persona = None) -> str:
        """The persona's system prompt (who I am, core mission, guiding principles), for clients
        that bring their own model."""
        with domain_errors(tool=False):
            return system_prompt(service.persona(persona))

    for tool in (ask, retrieve, list_personas):
        server.add_tool(tool, description=inspect.getdoc(tool), annotations=READ_ONLY)
    server.add_prompt(Prompt.from_function(speak_as, title="Speak as a persona", description=inspect.getdoc(speak_as)))
    return server


class _PersonaMCP(MCPServer):
    """An MCP server whose resource list is read from the index on every request."""

    def __init__(self, service: PersonaService, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.service = service

    async def list_resources(self) -> list[Resource]:
        listed = await super().list_resources()
        with domain_errors(tool=False):
            return listed + await anyio.to_thread.run_sync(section_resources, self.service)


def section_resources(service: PersonaService) -> list[Resource]:
    """One resource per card section (and overview) of every persona, in card order."""
    resources = []
    for info in service.personas():
        for chunk in service.store.chunks(info.slug):
            if chunk.metadata.get("kind") in CARD_KINDS:
                section = chunk.metadata.get("section", "")
                resources.append(Resource(uri=SCHEME + chunk.id, name=chunk.id, title=f"{info.title} › {section}",
                                          description=f"The {section} section of the {info.title} card.",
                                          mime_type="text/markdown"))
    return resources


def section_markdown(service: PersonaService, persona: str, section: str) -> str:
    """The markdown of ``persona://<persona>/<section>`` under its heading; unknown ones raise."""
    info = service.persona(persona)
    sections = {c.id: c.metadata for c in service.store.chunks(info.slug) if c.metadata.get("kind") in CARD_KINDS}
    meta = sections.get(f"{info.slug}/{section}")
    if meta is None:
        known = ", ".join(SCHEME + cid for cid in sections)
        raise MCPError(INVALID_PARAMS, f"unknown section {section!r} of persona {info.slug!r}; sections: {known}")
    return f"## {meta.get('section', '')}\n\n{meta.get('text', '')}"


@contextlib.contextmanager
def domain_errors(tool: bool) -> Iterator[None]:
    """Turn a domain error into an MCP tool error (``tool``) or a JSON-RPC error, message intact
    (the code from :data:`retrieval.errors.SURFACES`)."""
    try:
        yield
    except PersonaError as exc:
        if tool:
            raise ToolError(exc.message) from exc
        raise MCPError(exc.surface.jsonrpc_code, exc.message, {"code": exc.code}) from exc


def _result(text: str, body: BaseModel) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=body.model_dump(mode="json"))




# -- transports -------------------------------------------------------------------------------
def run_stdio(settings: Settings, server: str | None = None) -> None:
    """``persona mcp``: serve on stdin/stdout, holding the index as the HTTP server does; or, when a
    ``persona serve`` holds it (or ``server`` names one), relay to that server's ``/mcp`` (:mod:`server.mcp_bridge`)."""
    with contextlib.ExitStack() as held:
        if server is None:
            try:
                held.enter_context(exclusive(settings))
            except IndexUnavailable:
                server = holder(settings)
                if server is None:  # held by `persona ingest`, or by a server that did not say where it is
                    raise
        if server is None:
            service = PersonaService(settings, generators=generators(settings))
            service.store.ping()
            service.embed_query("warm up")
            build_server(service).run("stdio")
            return
    from server import mcp_bridge

    mcp_bridge.run(server, settings.api_key)


def transport_security(extra_hosts: list[str]) -> TransportSecuritySettings:
    """DNS-rebinding protection: only localhost Host headers, plus ``extra_hosts`` ("*" turns it off)."""
    if "*" in extra_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = [*LOCAL_HOSTS, *extra_hosts]
    return TransportSecuritySettings(allowed_hosts=hosts,
                                     allowed_origins=[f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")])


async def run_http(app: FastAPI, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Build the MCP server on ``app.state.service``, publish its ASGI app, run it until cancelled.

    Stateless: no session lives in one process, so several API workers can serve ``/mcp``.
    Started by :mod:`server.mcp_http` on the first request to ``/mcp``.
    """
    server = build_server(app.state.service)
    security = transport_security(app.state.settings.mcp_allowed_hosts)
    http_app = server.streamable_http_app(streamable_http_path=MOUNT_PATH, stateless_http=True,
                                          transport_security=security)
    async with server.session_manager.run():
        app.state.mcp_http = http_app
        task_status.started()
        await anyio.sleep_forever()
