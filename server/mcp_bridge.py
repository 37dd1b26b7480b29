"""``persona mcp`` beside a running server: stdin/stdout relayed to the server's ``/mcp``.

The embedded index belongs to one process (:func:`retrieval.store.exclusive`). When ``persona serve`` holds it,
the stdio MCP server does not open a second copy: it passes each JSON-RPC message from the MCP client on stdin
to the running server's streamable HTTP endpoint and writes the answers to stdout. The MCP server itself (tools,
resources, prompts) lives once, in :mod:`server.mcp_server`, and answers through both doors.

The relay adds what a streamable HTTP client must add to each request and the stdio client never writes: the
``MCP-Protocol-Version`` header (the version a 2026-era request carries in its ``_meta``, or the one the
``initialize`` handshake settled), ``Mcp-Method`` and ``Mcp-Name``; and the API key, when one is set.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import PROTOCOL_VERSION_META_KEY, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

log = logging.getLogger(__name__)


class Stamp:
    """The per-message HTTP headers of a client's messages, as the ``mcp`` client session would set them."""

    def __init__(self) -> None:
        self.handshake_version: str | None = None  # settled by an initialize handshake (pre-2026 protocol)
        self.initialize_ids: set[Any] = set()

    def headers(self, message: Any) -> dict[str, str]:
        if not isinstance(message, JSONRPCRequest | JSONRPCNotification):
            return {MCP_PROTOCOL_VERSION_HEADER: self.handshake_version} if self.handshake_version else {}
        params = message.params or {}
        meta = params.get("_meta") if isinstance(params, dict) else None
        version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        if isinstance(message, JSONRPCRequest) and message.method == "initialize":
            self.initialize_ids.add(message.id)
            self.handshake_version = None
            return {}
        if not isinstance(version, str):  # the handshake's era: the version it settled, nothing else
            return {MCP_PROTOCOL_VERSION_HEADER: self.handshake_version} if self.handshake_version else {}
        headers = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: message.method}
        name_key = NAME_BEARING_METHODS.get(message.method)
        if name_key is not None and isinstance(name := params.get(name_key), str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
        return headers

    def answered(self, message: Any) -> None:
        """Note the protocol version an ``initialize`` response settles."""
        if isinstance(message, JSONRPCResponse) and message.id in self.initialize_ids:
            self.initialize_ids.discard(message.id)
            version = (message.result or {}).get("protocolVersion")
            self.handshake_version = version if isinstance(version, str) else None


async def relay(url: str, api_key: str | None = None) -> None:
    """Relay stdin/stdout to the streamable HTTP MCP endpoint ``url`` until stdin closes."""
    stamp = Stamp()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with (create_mcp_http_client(headers=headers) as http,
                stdio_server() as (from_client, to_client),
                streamable_http_client(url, http_client=http) as (from_server, to_server),
                anyio.create_task_group() as tasks):

        async def downstream() -> None:
            async for item in from_server:
                if isinstance(item, Exception):
                    log.warning("MCP relay: %s", item)
                    continue
                stamp.answered(item.message)
                await to_client.send(item)

        tasks.start_soon(downstream)
        async for item in from_client:
            if isinstance(item, Exception):
                log.warning("MCP relay: unreadable message from the client: %s", item)
                continue
            await to_server.send(SessionMessage(item.message,
                                                metadata=ClientMessageMetadata(headers=stamp.headers(item.message))))
        tasks.cancel_scope.cancel()  # the client closed stdin: done


def run(url: str, api_key: str | None = None) -> None:
    """``persona mcp`` through the server at ``url`` (its base URL; the MCP endpoint is ``/mcp``)."""
    from server.mcp_http import MOUNT_PATH

    anyio.run(relay, url.rstrip("/") + MOUNT_PATH, api_key)
