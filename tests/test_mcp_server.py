"""The MCP server through both of its doors, driven by the `mcp` client library.

stdio: `python -m persona mcp` spawned on an index built in tmp from the seed.
relay: `python -m persona mcp` on the index a running `persona serve` holds (with an API key): it goes through
that server's /mcp.
streamable HTTP: the FastAPI app under uvicorn on a free local port, MCP at /mcp.
Every client test runs once per transport and protocol mode, on one client session each.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from mcp import Client, MCPError, StdioServerParameters

from bench.servers import persona_server, uvicorn_server
from generation.service import PersonaService
from ingest.indexer import ingest
from retrieval.embedder import Embedder
from retrieval.settings import Settings
from retrieval.store import SERVER_FILE, Store
from retrieval.text import markers
from server.app import create_app
from tests.conftest import ROOT, SEED

pytestmark = pytest.mark.anyio
KEY = "relay-key"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "test", "version": "0"}}}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stdio_server(tmp_path_factory: pytest.TempPathFactory,
                 embedder: Embedder) -> StdioServerParameters:
    """`persona mcp` as an MCP client launches it, on its own index of the seed."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("mcp") / "index")
    ingest([SEED], Store(settings), embedder, settings.model)
    env = {"PERSONA_DATA_DIR": str(settings.data_dir), "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    return StdioServerParameters(command=sys.executable, args=["-m", "persona", "mcp"], env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory,
            embedder: Embedder) -> Iterator[StdioServerParameters]:
    """`persona mcp` while `persona serve` runs on the same index: it reads through the server."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("relay") / "index")
    ingest([SEED], Store(settings), embedder, settings.model)
    with persona_server(settings.data_dir, PERSONA_API_KEY=KEY) as served:
        assert served.url in (settings.data_dir / SERVER_FILE).read_text()
        # The server imports its MCP part on the first /mcp request; done here, so that a busy machine does
        # not push the client's 10 s protocol probe into the fallback handshake (which works, but is not 2026).
        warm = httpx.post(f"{served.url}/mcp", json=INITIALIZE, timeout=120, headers={
            "authorization": f"Bearer {KEY}", "accept": "application/json, text/event-stream"})
        assert warm.status_code == 200, warm.text
        env = {"PERSONA_DATA_DIR": str(settings.data_dir), "PERSONA_API_KEY": KEY, "HF_HUB_OFFLINE": "1",
               "ANONYMIZED_TELEMETRY": "False"}
        yield StdioServerParameters(command=sys.executable, args=["-m", "persona", "mcp"], env=env, cwd=ROOT)
    assert not (settings.data_dir / SERVER_FILE).exists()


@pytest.fixture(scope="module")
def base_url(seeded_settings: Settings, service: PersonaService) -> Iterator[str]:
    """The whole app under uvicorn on a free local port."""
    settings = seeded_settings.model_copy(update={"mcp_allowed_hosts": ["persona.test:*"]})
    with uvicorn_server(create_app(settings, service=service)) as url:
        yield url


@pytest.fixture(scope="module", params=["stdio", "stdio-legacy", "relay", "relay-legacy", "http", "http-legacy"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A connected client per transport, in each protocol mode: "auto" negotiates the current
    protocol, "legacy" the initialize handshake that most chat tools still speak."""
    transport, _, legacy = request.param.partition("-")
    if transport == "stdio":
        target: StdioServerParameters | str = request.getfixturevalue("stdio_server")
    elif transport == "relay":
        target = request.getfixturevalue("relayed")
    else:
        target = request.getfixturevalue("base_url") + "/mcp"
    async with Client(target, mode=legacy or "auto", read_timeout_seconds=300) as connected:
        assert connected.protocol_version.startswith("2025" if legacy else "2026")
        yield connected


async def test_lists_the_three_tools(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"ask", "retrieve", "list_personas"}
    assert tools["ask"].input_schema["required"] == ["question"] and tools["ask"].output_schema
    assert set(tools["retrieve"].input_schema["properties"]) == {"query", "persona", "k"}
    assert all(t.annotations and t.annotations.read_only_hint for t in tools.values())


async def test_ask_is_grounded_and_cited(client: Client) -> None:
    result = await client.call_tool("ask", {"question": "How much pipeline do I need to hit my quota?"})
    assert not result.is_error
    body = result.structured_content
    assert body["persona"] == "sales-manager" and body["grounded"] is True and body["citations"]
    assert body["confidence"] in ("high", "low")
    assert all(c["id"].startswith("sales-manager/") and c["text"] for c in body["citations"])
    assert set(markers(body["answer"])) == {c["n"] for c in body["citations"]}
    text = result.content[0].text
    assert text.startswith(body["answer"]) and "Sources:" in text
    assert all(f"[{c['n']}] " in text and c["id"] in text for c in body["citations"])


async def test_ask_with_history_answers_the_follow_up_in_context(client: Client) -> None:
    first = await client.call_tool("ask", {"question": "how do i run a pipeline review"})
    history = [{"role": "user", "content": "how do i run a pipeline review"},
               {"role": "assistant", "content": first.content[0].text}]
    result = await client.call_tool("ask", {"question": "how often?", "history": history})
    body = result.structured_content
    assert not result.is_error and body["grounded"]
    assert body["searched_for"] == "how do i run a pipeline review how often?"
    assert body["citations"][0]["id"] == "sales-manager/workflow/run-the-cadence"
    bad = await client.call_tool("ask", {"question": "how often?", "history": [{"role": "tool", "content": "x"}]})
    assert bad.is_error and "history" in bad.content[0].text


async def test_ask_off_topic_says_so(client: Client) -> None:
    result = await client.call_tool("ask", {"question": "How do I bake sourdough bread?"})
    body = result.structured_content
    assert not result.is_error and body["grounded"] is False and body["citations"] == []
    assert body["nearest_sections"] and "Sources:" not in result.content[0].text


async def test_retrieve_returns_ranked_passages(client: Client) -> None:
    result = await client.call_tool("retrieve", {"query": "what does OTE mean", "k": 3})
    body = result.structured_content
    assert not result.is_error and body["persona"] == "sales-manager"
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
    assert body["results"][0]["id"] == "sales-manager/vocabulary/ote"
    assert result.content[0].text.startswith("[1] Vocabulary › OTE")


async def test_list_personas(client: Client) -> None:
    result = await client.call_tool("list_personas", {})
    [persona] = result.structured_content["personas"]
    assert persona["slug"] == "sales-manager" and persona["title"] == "Sales Manager"
    assert len(persona["sections"]) == 20 and result.content[0].text.startswith("sales-manager: Sales Manager")


async def test_card_sections_are_resources(client: Client) -> None:
    resources = {str(r.uri): r for r in (await client.list_resources()).resources}
    assert len(resources) == 21  # the overview and the 20 sections
    assert "persona://sales-manager/overview" in resources
    principles = resources["persona://sales-manager/guiding-principles"]
    assert principles.title == "Sales Manager › Guiding Principles" and principles.mime_type == "text/markdown"
    [content] = (await client.read_resource("persona://sales-manager/guiding-principles")).contents
    assert content.text.startswith("## Guiding Principles\n")
    assert "**Inspect what you expect.**" in content.text and "Pipeline coverage" not in content.text


async def test_speak_as_prompt_is_the_system_prompt(client: Client) -> None:
    assert [p.name for p in (await client.list_prompts()).prompts] == ["speak_as"]
    prompt = await client.get_prompt("speak_as", {"persona": "sales-manager"})
    text = prompt.messages[0].content.text
    assert text.startswith("You are a Sales Manager")
    assert "Core mission:\nBuild and lead a team that hits its revenue number" in text
    assert "- Inspect what you expect." in text and "[n]" in text


async def test_unknown_persona_is_an_error_listing_the_slugs(client: Client) -> None:
    result = await client.call_tool("ask", {"question": "hello", "persona": "astronaut"})
    assert result.is_error
    assert "unknown persona 'astronaut'; available personas: sales-manager" in result.content[0].text
    with pytest.raises(MCPError, match="available personas: sales-manager"):
        await client.get_prompt("speak_as", {"persona": "astronaut"})
    with pytest.raises(MCPError, match="available personas: sales-manager"):
        await client.read_resource("persona://astronaut/purpose")
    with pytest.raises(MCPError, match=r"unknown section 'cooking'.*persona://sales-manager/purpose"):
        await client.read_resource("persona://sales-manager/cooking")


async def test_bad_arguments_are_tool_errors(client: Client) -> None:
    result = await client.call_tool("retrieve", {"query": "forecast", "k": 0})
    assert result.is_error and "k" in result.content[0].text and "greater than or equal to 1" in result.content[0].text
    result = await client.call_tool("retrieve", {"query": "forecast", "k": True})  # JSON true is not the integer 1
    assert result.is_error and "k" in result.content[0].text and "valid integer" in result.content[0].text


def test_http_app_keeps_its_routes_beside_mcp(base_url: str) -> None:
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base_url}/nowhere").json()["code"] == "http_error"
    assert "/mcp" not in httpx.get(f"{base_url}/openapi.json").json()["paths"]


@pytest.mark.parametrize(("host", "status"), [("persona.test:8000", 200), ("attacker.test:8000", 421)])
def test_http_mcp_checks_the_host_header(base_url: str, host: str, status: int) -> None:
    response = httpx.post(f"{base_url}/mcp", json=INITIALIZE, headers={
        "host": host, "accept": "application/json, text/event-stream"})
    assert response.status_code == status


def test_the_app_does_not_import_mcp_until_mcp_is_called() -> None:
    """The mcp package costs a second of start-up: only a request to /mcp imports it."""
    import subprocess
    import sys

    code = ("import sys; from server.app import create_app; create_app(); "
            "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'nltk', 'torch'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout
