"""The chat page in a real browser: Debian's Chromium, headless, driven by Playwright, against uvicorn.

Each state is screenshotted to ``artifacts/`` (wide, dark and phone-size viewports) and checked with
axe-core for WCAG 2.2 AA problems (contrast, names, labels).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bench.servers import uvicorn_server
from generation.service import PersonaService
from retrieval.settings import Settings
from server.app import create_app

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
IN_SCOPE = "How much pipeline do I need to hit my quota?"
OFF_TOPIC = "How do I bake sourdough bread?"
VIEWPORTS = {
    "wide": {"viewport": {"width": 1366, "height": 900}},
    "dark": {"viewport": {"width": 1024, "height": 768}, "color_scheme": "dark"},
    "phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
              "has_touch": True},
}

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason="needs Debian's chromium (.ci/run installs it with apt-get)")


class KeyGate:
    """Stands in for an API key on /v1/: off unless a test sets ``key``."""

    def __init__(self) -> None:
        self.key: str | None = None

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        wanted = f"Bearer {self.key}"
        if self.key and request.url.path.startswith("/v1/") and request.headers.get("authorization") != wanted:
            return JSONResponse({"detail": "missing or wrong API key", "code": "unauthorized"}, status_code=401)
        return await call_next(request)


@pytest.fixture(scope="module")
def gate() -> KeyGate:
    return KeyGate()


@pytest.fixture(scope="module")
def live_url(seeded_settings: Settings, service: PersonaService, gate: KeyGate) -> Iterator[str]:
    """The app under uvicorn on a free local port, over the seed's real index."""
    app = create_app(seeded_settings, service=service)
    app.middleware("http")(gate)
    with uvicorn_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture(params=list(VIEWPORTS))
def page(request: pytest.FixtureRequest, browser: Browser, live_url: str) -> Iterator[Page]:
    """A fresh page on the chat; fails the test if the browser logged any error."""
    context = browser.new_context(**VIEWPORTS[request.param], reduced_motion="reduce")
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(live_url)
    expect(page.locator("#persona-title")).to_have_text("Sales Manager")
    yield page
    context.close()
    assert problems == [], f"console errors: {problems}"


Shot = Callable[[str], None]
WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]},
           "resultTypes": ["violations"]}


@pytest.fixture
def shot(request: pytest.FixtureRequest, page: Page) -> Shot:
    """Screenshots of a state (the viewport, and the whole page), and axe-core's WCAG 2.2 AA checks of it."""
    viewport = request.node.callspec.params["page"]

    def take(state: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{viewport}-{state}.png"))
        page.screenshot(path=str(ARTIFACTS / f"{viewport}-{state}-full.png"), full_page=True)
        results = Axe().run(page, options=WCAG_AA)
        assert results.violations_count == 0, f"{state}: {results.generate_report()}"

    return take


def ask(page: Page, question: str) -> None:
    box = page.get_by_label("Your question")
    box.fill(question)
    box.press("Enter")
    expect(page.locator(".msg-persona").last).to_have_attribute("aria-busy", "false", timeout=60_000)


def test_page_is_served_with_its_assets(live_url: str) -> None:
    page = httpx.get(live_url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
        assert asset in page.text and httpx.get(live_url + asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from elsewhere


def test_stream_arrives_in_pieces_over_http(live_url: str) -> None:
    """Through a real socket: the deltas arrive as separate reads, before the final answer."""
    with httpx.stream("POST", live_url + "/v1/ask/stream", json={"question": IN_SCOPE}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        reads = [chunk for chunk in response.iter_text() if chunk.strip()]
    assert len(reads) > 3 and reads[0].startswith("event: delta") and "event: done" in reads[-1]
    answer = next(c for c in reads if c.startswith("event: answer"))
    assert json.loads(answer.split("data: ", 1)[1])["grounded"] is True


def test_in_scope_answer_cites_and_opens_the_passage(page: Page, shot: Shot, live_url: str) -> None:
    expected = httpx.post(live_url + "/v1/ask", json={"question": IN_SCOPE}).json()
    shot("empty")
    ask(page, IN_SCOPE)
    reply = page.locator(".msg-persona").last
    markers = reply.locator(".answer-text button.cite")
    expect(markers).to_have_count(len(expected["citations"]))
    expect(reply.locator(".source")).to_have_count(len(expected["citations"]))
    expect(reply).not_to_have_class("not-covered")
    shot("answer")

    first = expected["citations"][0]
    markers.first.click()
    passage = reply.locator(".passage")
    expect(passage).to_be_visible()
    expect(passage.locator(".passage-path")).to_have_text(f"{first['section']} › {first['item']}")
    expect(passage.locator(".passage-id")).to_have_text(first["id"])
    words = first["text"].replace("**", "").split()
    expect(passage.locator(".passage-body")).to_contain_text(" ".join(words[:6]))
    expect(markers.first).to_have_attribute("aria-expanded", "true")
    shot("passage")

    page.keyboard.press("Escape")  # focus moved into the passage; Escape closes it and returns focus
    expect(passage).to_be_hidden()
    expect(markers.first).to_be_focused()
    page.keyboard.press("Enter")  # the marker works from the keyboard too
    expect(passage).to_be_visible()


def test_off_topic_answer_is_clearly_not_covered(page: Page, shot: Shot) -> None:
    ask(page, OFF_TOPIC)
    reply = page.locator(".msg-persona").last
    expect(reply).to_have_class("msg msg-persona not-covered")
    expect(reply.locator(".badge")).to_have_text("Not covered by the card")
    expect(reply.locator("button.cite")).to_have_count(0)
    chips = reply.locator(".nearest .chip")
    expect(chips.first).to_be_visible()
    section = chips.first.inner_text()
    chips.first.click()
    passage = reply.locator(".passage")
    expect(passage.locator(".passage-path")).to_have_text(section)
    expect(passage.locator(".passage-body li, .passage-body p").first).not_to_have_text("Loading the section…")
    shot("not-covered")


def test_history_shift_enter_and_start_over(page: Page, shot: Shot) -> None:
    box = page.get_by_label("Your question")
    box.fill("What does OTE mean?")
    box.press("Shift+Enter")
    expect(page.locator(".turn")).to_have_count(0)  # a new line, not a send
    assert box.input_value() == "What does OTE mean?\n"
    box.press("Enter")
    expect(page.locator(".msg-persona").last).to_have_attribute("aria-busy", "false", timeout=60_000)
    ask(page, "What trap do you watch out for?")
    expect(page.locator(".turn")).to_have_count(2)
    shot("history")
    page.get_by_role("button", name="Start over").click()
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.locator("#intro")).to_be_visible()
    expect(box).to_be_focused()
    shot("start-over")


def test_follow_up_is_read_in_the_conversation(page: Page, shot: Shot) -> None:
    """The page sends the conversation with each question; "how often?" is answered from the one before it."""
    ask(page, "how do i run a pipeline review")
    with page.expect_request("**/v1/ask/stream") as sent:
        ask(page, "how often?")
    body = json.loads(sent.value.post_data or "{}")
    assert [m["role"] for m in body["history"]] == ["user", "assistant"]
    assert body["history"][0]["content"] == "how do i run a pipeline review"
    reply = page.locator(".msg-persona").last
    expect(reply).not_to_have_class("msg msg-persona not-covered")
    expect(reply.locator(".searched")).to_have_text("Read in context as: how do i run a pipeline review how often?")
    expect(reply.locator(".source").first).to_contain_text("Workflow › Run the cadence")
    shot("follow-up")
    page.get_by_role("button", name="Start over").click()
    with page.expect_request("**/v1/ask/stream") as sent:
        ask(page, "how often?")
    assert json.loads(sent.value.post_data or "{}")["history"] == []
    expect(page.locator(".msg-persona").last).to_have_class("msg msg-persona not-covered")


def test_suggestion_asks_it(page: Page) -> None:
    page.get_by_role("button", name="Should I coach this rep or manage them out?").click()
    reply = page.locator(".msg-persona").last
    expect(reply).to_have_attribute("aria-busy", "false", timeout=60_000)
    expect(reply.locator(".answer-text button.cite").first).to_be_visible()


def test_text_is_escaped_never_run_as_html(page: Page) -> None:
    """A question, answer or passage containing HTML shows it as text; markdown emphasis still renders."""
    hostile = '<img src=x onerror="window.hacked=1"> What does OTE mean?'
    ask(page, hostile)
    expect(page.locator(".msg-user .bubble")).to_have_text(hostile)
    assert page.locator(".log img").count() == 0 and page.evaluate("window.hacked") is None
    rendered = page.evaluate("passageHtml('- **Bold.** <script>x()</script> and *soft*')")
    assert rendered == "<ul><li><strong>Bold.</strong> &lt;script&gt;x()&lt;/script&gt; and <em>soft</em></li></ul>"


def test_api_key_is_asked_for_on_401(browser: Browser, live_url: str, gate: KeyGate) -> None:
    gate.key = "s3cret"
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(live_url)
        key = page.get_by_label("API key")
        expect(key).to_be_visible()
        key.fill("s3cret")
        key.press("Enter")
        expect(page.locator("#persona-title")).to_have_text("Sales Manager")
        expect(key).to_be_hidden()
        ask(page, IN_SCOPE)
        expect(page.locator(".msg-persona .answer-text button.cite").first).to_be_visible()
    finally:
        gate.key = None
        context.close()


def test_low_confidence_answer_is_marked_as_the_closest_guidance(browser: Browser, seeded_settings: Settings,
                                                                  service: PersonaService) -> None:
    """With ``confident_score`` above every score, each covered answer is the card's closest guidance."""
    tentative = seeded_settings.model_copy(update={"confident_score": 0.99, "thresholds": "settings"})
    app = create_app(tentative, service=PersonaService(tentative, embedder=service.embedder, store=service.store))
    with uvicorn_server(app) as url:
        context = browser.new_context(**VIEWPORTS["wide"], reduced_motion="reduce")
        page = context.new_page()
        page.goto(url)
        ask(page, "How much pipeline do I need to hit my quota?")
        reply = page.locator(".msg-persona").last
        expect(reply).to_have_class("msg msg-persona low-confidence")
        expect(reply.locator(".badge-low")).to_have_text("Closest guidance: not an exact match")
        expect(reply.locator(".answer-text")).to_contain_text("The closest I have on that:")
        expect(reply.locator("button.cite").first).to_be_visible()
        context.close()
