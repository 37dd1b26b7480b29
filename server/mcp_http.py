"""``/mcp`` in the FastAPI app: the MCP server over streamable HTTP, loaded on its first request.

The ``mcp`` package takes about a second to import, more than the rest of the service's start-up,
so it is not imported until a client calls ``/mcp``: the first request imports
:mod:`server.mcp_server` (in a worker thread), starts its session manager in the app's lifespan
task group and waits for it; later requests go straight to it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

MOUNT_PATH = "/mcp"


@contextlib.asynccontextmanager
async def serve_http(app: FastAPI) -> AsyncIterator[None]:
    """For the app's lifetime: the task group the MCP server runs in once it is started."""
    app.state.mcp_http = None
    app.state.mcp_lock = anyio.Lock()
    async with anyio.create_task_group() as tasks:
        app.state.mcp_tasks = tasks
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()


async def _started(app: FastAPI) -> ASGIApp:
    if app.state.mcp_http is None:
        async with app.state.mcp_lock:
            if app.state.mcp_http is None:
                module = await anyio.to_thread.run_sync(importlib.import_module, "server.mcp_server")
                await app.state.mcp_tasks.start(module.run_http, app)
    return app.state.mcp_http


class _Forward:
    """The ASGI app at ``/mcp``: hands each request to the MCP server, starting it first if needed."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http_app = await _started(scope["app"])
        await http_app(scope, receive, send)


def mount(app: FastAPI) -> None:
    """Route ``/mcp`` (streamable HTTP) to the MCP server."""
    app.add_route(MOUNT_PATH, _Forward(), include_in_schema=False)
