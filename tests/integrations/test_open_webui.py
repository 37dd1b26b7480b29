"""A real Open WebUI (0.12.4, its own virtualenv .venv-owui) against the service, driven in Debian's Chromium.

Opt-in: ``make test-integrations`` installs Open WebUI and runs this; the default run deselects the
``integration`` marker. Checks what a user of Open WebUI sees: the persona in the model list, a streamed
answer whose ``[n]`` markers are short chips, one number per source (no text "Sources" list beside
the chips), a source's pop-up with the card path, a follow-up answered from the chat before it, the chat title and the
follow-up suggestions Open WebUI asks the model for. Screenshots go to docs/img/openwebui-*.png.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.servers import free_port, uvicorn_server
from generation.service import PersonaService
from retrieval.settings import Settings
from server.app import create_app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OPEN_WEBUI = (ROOT / os.environ.get("OPEN_WEBUI", ".venv-owui/bin/open-webui")).absolute()
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "img"
QUESTION = "How much pipeline do I need to hit my quota?"
FOLLOW_UP = "why that much?"  # alone the card does not cover it; after QUESTION it asks about pipeline coverage
STARTUP_SECONDS = 420
ANSWER_MS = 120_000


@pytest.fixture(scope="module")
def persona_url(seeded_settings: Settings, service: PersonaService) -> Iterator[str]:
    with uvicorn_server(create_app(seeded_settings, service=service)) as url:
        yield url


@pytest.fixture(scope="module")
def open_webui(persona_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Open WebUI on a free port, its data in a temporary folder, connected to the service only."""
    if not OPEN_WEBUI.exists():
        pytest.skip(f"{OPEN_WEBUI} is missing: `make test-integrations` installs Open WebUI")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is missing (apt-get install chromium)")
    data = tmp_path_factory.mktemp("open-webui")
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data), "OPENAI_API_BASE_URL": f"{persona_url}/v1",
           "OPENAI_API_KEY": "any-key", "WEBUI_AUTH": "False", "OFFLINE_MODE": "true",
           "ENABLE_OLLAMA_API": "False", "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
           "WEBUI_SECRET_KEY": "integration-test", "ENABLE_VERSION_UPDATE_CHECK": "False"}
    log = (data / "open-webui.log").open("w")
    process = subprocess.Popen([str(OPEN_WEBUI), "serve", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, f"Open WebUI exited; see {data / 'open-webui.log'}"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"Open WebUI did not start in {STARTUP_SECONDS}s"
            time.sleep(2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def reply(persona_url: str, *messages: dict[str, str]) -> dict:
    body = {"model": "sales-manager", "messages": list(messages)}
    return httpx.post(f"{persona_url}/v1/chat/completions", json=body, timeout=120).json()


def test_open_webui_chat(open_webui: str, persona_url: str, service: PersonaService) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    expected = reply(persona_url, {"role": "user", "content": QUESTION})
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(ANSWER_MS)
        page.goto(open_webui)
        page.locator("#chat-input").wait_for()
        welcome = page.get_by_role("button", name="Okay, Let's Go!")
        if welcome.count():
            welcome.first.click()

        # The model list: the persona is the model, by its name.
        expect(page.get_by_text("Sales Manager").first).to_be_visible()

        # A streamed answer: markers become chips with short names, one per source, no text Sources list.
        page.locator("#chat-input").click()
        page.keyboard.type(QUESTION)
        page.keyboard.press("Enter")
        answer = page.locator("#response-content-container").nth(0)
        chips = answer.locator('button[aria-label^="View source: "]')
        expect(chips.first).to_be_visible()
        names = [chips.nth(i).inner_text().strip() for i in range(chips.count())]
        cited = expected["citations"]
        assert len(names) == len(cited), f"one chip per marker: {names}"
        assert all(len(name) <= 30 and not name.startswith("[") and "..." not in name for name in names), names
        text = answer.inner_text()
        assert "Sources:" not in text and not re.search(r"\[\d+\]", text), "no doubled numbers"
        toggle = page.get_by_role("button", name=re.compile(r"^Toggle \d+ sources?$")).last
        expect(toggle).to_have_attribute("aria-label", f"Toggle {len(cited)} source" + ("s" if len(cited) > 1 else ""))

        # Open WebUI's housekeeping, answered by the service: the title and follow-up suggestions.
        title = QUESTION.rstrip("?")
        chat_item = page.locator("#sidebar-chat-item").first
        expect(chat_item).to_contain_text(title)
        assert QUESTION not in chat_item.inner_text(), "the generated title, not Open WebUI's fallback (the message)"
        suggestions = page.locator('button[aria-label^="Follow up: "]')
        expect(suggestions.first).to_be_visible()
        assert suggestions.count() >= 3
        toggle.click()
        page.mouse.move(0, 0)
        page.screenshot(path=str(SHOTS / "openwebui-answer.png"))

        # A source's pop-up: the card path and passage.
        chips.first.click()
        dialog = page.locator('[role="dialog"]').last
        path = f"{cited[0]['section']} › {cited[0]['item']}" if cited[0]["item"] else cited[0]["section"]
        expect(dialog).to_contain_text(path)
        expect(dialog).to_contain_text(cited[0]["text"][:40].replace("**", ""))
        page.screenshot(path=str(SHOTS / "openwebui-source.png"))
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        # A follow-up that means nothing alone, answered from the chat Open WebUI sends with it.
        assert not service.ask(FOLLOW_UP).grounded, "alone, the follow-up is not covered"
        page.locator("#chat-input").click()
        page.keyboard.type(FOLLOW_UP)
        page.keyboard.press("Enter")
        expect(page.locator("#response-content-container")).to_have_count(2)
        second = page.locator("#response-content-container").nth(1)
        expect(second.locator('button[aria-label^="View source: "]').first).to_be_visible()
        expect(page.locator('button[aria-label^="Follow up: "]').first).to_be_visible()
        assert "pipeline" in second.inner_text().lower()
        page.mouse.move(0, 0)
        page.screenshot(path=str(SHOTS / "openwebui-follow-up.png"))
        browser.close()
