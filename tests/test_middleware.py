"""The guard rails in front of the routes, through HTTP: body limit, request ids and JSON logs,
API key, CORS, rate limiting, metrics, and bad input that must never become a 500."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.servers import uvicorn_server
from generation.service import PersonaService
from retrieval.settings import Settings
from server.app import create_app
from server.logs import RequestIdFilter
from server.middleware import BodyLimit

KEY = "s3cret-key-for-tests"


def client_for(settings: Settings, service: PersonaService, **changes: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes), service=service), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(seeded_settings: Settings, service: PersonaService) -> Iterator[TestClient]:
    with client_for(seeded_settings, service, rate_limit=None) as test_client:
        yield test_client


# -- request body limit ---------------------------------------------------------------------------
def test_declared_oversize_body_is_413(client: TestClient) -> None:
    body = json.dumps({"question": "x" * (70 * 1024)})
    response = client.post("/v1/ask", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert "65536 bytes" in response.json()["detail"]


def test_streamed_oversize_body_is_413_before_it_is_read_whole(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(64):
            yield b" " * 4096

    response = client.post("/v1/ask", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_body_limit_stops_reading_at_the_limit() -> None:
    """At the ASGI level: the body is pulled chunk by chunk and refused once past the limit."""
    pulled, sent, reached = [], [], []

    async def app(scope, receive, send) -> None:
        reached.append(scope)

    async def receive() -> dict:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 4096, "more_body": True}  # endless

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/ask", "headers": [], "query_string": b""}
    asyncio.run(BodyLimit(app, max_bytes=64 * 1024)(scope, receive, send))
    assert not reached and sent[0]["status"] == 413
    assert len(pulled) == 17  # 16 chunks fill 64 KiB exactly; the 17th passes the limit


def test_only_a_client_allowed_to_ingest_may_send_a_larger_body(seeded_settings: Settings,
                                                                 service: PersonaService) -> None:
    """A live ingest carries cards and sidecars (PERSONA_MAX_INGEST_BYTES), but only from a client that may ingest:
    the key is checked for it before the body is read, so a stranger cannot make the server buffer 64 MiB."""
    big = {"cards": [{"path": "big.yaml", "text": "x" * 100_000}]}
    with client_for(seeded_settings, service, rate_limit=None, api_key=KEY) as keyed:
        stranger = keyed.post("/v1/ingest", json=big)
        allowed = keyed.post("/v1/ingest", json=big, headers={"X-API-Key": KEY})
        other_path = keyed.post("/v1/ask", json={"question": "x" * 100_000}, headers={"X-API-Key": KEY})
    assert stranger.status_code == 413 and "PERSONA_MAX_BODY_BYTES" in stranger.json()["detail"]
    assert allowed.status_code == 422 and allowed.json()["code"] == "invalid_card"  # read whole, then refused
    assert allowed.json()["detail"].startswith("big.yaml: field '(card)': expected a mapping of card fields")
    assert other_path.status_code == 413  # the larger limit is the ingest's alone


def test_body_at_the_limit_reaches_validation(client: TestClient) -> None:
    body = json.dumps({"question": "x" * 60_000})
    response = client.post("/v1/ask", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "question" in response.json()["detail"]


# -- wrong shapes: 422 naming the field, never a 500, never a traceback ----------------------------
@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/v1/ask", b"[1, 2, 3]", "body"),
        ("/v1/ask", b'"just a string"', "body"),
        ("/v1/ask", b"null", "body"),
        ("/v1/ask", b'{"question": {"nested": "object"}}', "question"),
        ("/v1/ask", b'{"question": ["a", "list"]}', "question"),
        ("/v1/ask", b'{"question": "hi", "k": 3.5}', "k"),
        ("/v1/ask", b'{"question": "hi", "persona": 7}', "persona"),
        ("/v1/retrieve", b'{"query": "forecast", "sections": "Ethics"}', "sections"),
        ("/v1/retrieve", b'{"query": "forecast", "sections": [1, 2]}', "sections"),
        ("/v1/retrieve", b'{"query": "forecast", "k": 1e309}', "k"),
        ("/v1/retrieve", b'{"q": "forecast"}', "query"),
        ("/v1/retrieve", b"", "body"),
        ("/v1/ask", b"not json", "body: request body is not valid JSON (at character 0)"),
    ],
)
def test_wrong_shape_is_422_naming_the_field(client: TestClient, path: str, raw: bytes, field: str) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "application/json"),  # nesting deeper than the JSON parser's stack
        (b'{"question": "\xff\xfe bad utf-8"}', "application/json"),
        (b'{"question": "\\ud800 lone surrogate"}', "application/json"),
        (b"question=hello", "application/x-www-form-urlencoded"),
        (b"hello", "text/plain"),
        (b"\x00\x01\x02", "application/octet-stream"),
    ],
)
def test_garbage_bodies_are_client_errors(client: TestClient, raw: bytes, content_type: str) -> None:
    response = client.post("/v1/ask", content=raw, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_unexpected_exception_is_a_generic_500_with_the_request_id(
        seeded_settings: Settings, service: PersonaService) -> None:
    app = create_app(seeded_settings.model_copy(update={"rate_limit": None}), service=service)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom", headers={"X-Request-ID": "trace-me-123"})
    assert response.status_code == 500 and response.json()["code"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] == "trace-me-123"


# -- request ids and structured logs ---------------------------------------------------------------
def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
    assert made.headers["x-request-id"] != "bad id\nwith newline" and len(made.headers["x-request-id"]) == 32
    assert client.get("/healthz").headers["x-request-id"] != made.headers["x-request-id"]


def test_access_log_is_one_json_line_with_the_request_id(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    from pythonjsonlogger.json import JsonFormatter

    with caplog.at_level(logging.INFO, logger="server.access"):
        client.post("/v1/retrieve", json={"query": "forecast", "k": 2}, headers={"X-Request-ID": "log-me-1"})
    [record] = [r for r in caplog.records if getattr(r, "request_id", None) == "log-me-1"]
    RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter("%(levelname)s %(name)s %(message)s").format(record))
    assert line["request_id"] == "log-me-1" and line["status"] == 200 and line["path"] == "/v1/retrieve"
    assert line["method"] == "POST" and line["duration_ms"] > 0


# -- API key ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(seeded_settings: Settings, service: PersonaService) -> Iterator[TestClient]:
    with client_for(seeded_settings, service, api_key=KEY, rate_limit=None) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/v1/personas", "/metrics", "/openapi.json", "/docs", "/nowhere"])
def test_api_key_required(keyed: TestClient, path: str) -> None:
    missing = keyed.get(path)
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = keyed.get(path, headers={"Authorization": f"Bearer {KEY}x"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"


def test_api_key_accepted_both_ways(keyed: TestClient) -> None:
    assert keyed.get("/v1/personas", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed.get("/v1/personas", headers={"X-API-Key": KEY}).status_code == 200
    ask = keyed.post("/v1/ask", json={"question": "What is OTE?"}, headers={"X-API-Key": KEY})
    assert ask.status_code == 200 and ask.json()["grounded"] is True
    assert keyed.post("/v1/ask", json={"question": "What is OTE?"}).status_code == 401


def test_healthz_is_public(keyed: TestClient) -> None:
    assert keyed.get("/healthz").json() == {"status": "ok"}


def test_non_ascii_key_attempt_is_401_not_500(keyed: TestClient) -> None:
    response = keyed.get("/v1/personas", headers={"X-API-Key": "clé-ünïcode".encode()})
    assert response.status_code == 401


# -- CORS ------------------------------------------------------------------------------------------
def test_cors_only_for_configured_origins(seeded_settings: Settings, service: PersonaService) -> None:
    with client_for(seeded_settings, service, cors_origins=["https://chat.example"], rate_limit=None) as test_client:
        allowed = test_client.get("/v1/personas", headers={"Origin": "https://chat.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://chat.example"
        other = test_client.get("/v1/personas", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = test_client.options("/v1/ask", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 400
        preflight = test_client.options("/v1/ask", headers={
            "Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key"})
        assert preflight.status_code == 200 and "x-api-key" in preflight.headers["access-control-allow-headers"].lower()


def test_no_cors_by_default(client: TestClient) -> None:
    response = client.get("/v1/personas", headers={"Origin": "https://chat.example"})
    assert "access-control-allow-origin" not in response.headers


# -- rate limiting ---------------------------------------------------------------------------------
def test_rate_limit_429_with_retry_after(seeded_settings: Settings, service: PersonaService) -> None:
    with client_for(seeded_settings, service, rate_limit="5/minute") as test_client:
        statuses = [test_client.get("/v1/personas").status_code for _ in range(5)]
        assert statuses == [200] * 5
        limited = test_client.get("/v1/personas")
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert test_client.post("/v1/ask", json={"question": "What is OTE?"}).status_code == 429
        assert test_client.get("/healthz").status_code == 200  # probes are never limited


def test_rate_limit_is_per_client(seeded_settings: Settings, service: PersonaService) -> None:
    app = create_app(seeded_settings.model_copy(update={"rate_limit": "2/minute"}), service=service)
    with TestClient(app, client=("10.0.0.1", 1000)) as first, TestClient(app, client=("10.0.0.2", 1000)) as second:
        assert [first.get("/v1/personas").status_code for _ in range(3)] == [200, 200, 429]
        assert second.get("/v1/personas").status_code == 200


def statuses(url: str, count: int, **headers: str) -> list[int]:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        return [http.get("/v1/personas").status_code for _ in range(count)]


def test_rate_limit_is_per_user_over_http(seeded_settings: Settings, service: PersonaService) -> None:
    """A chat tool's users share its address: each user it names (Open WebUI's header, or X-User-Id) has a
    budget of its own; requests naming no user share the address's."""
    app = create_app(seeded_settings.model_copy(update={"rate_limit": "2/minute"}), service=service)
    with uvicorn_server(app) as url:
        assert statuses(url, 3, **{"X-OpenWebUI-User-Id": "alice"}) == [200, 200, 429]
        assert statuses(url, 2, **{"X-OpenWebUI-User-Id": "bob"}) == [200, 200]
        assert statuses(url, 3, **{"X-User-Id": "carol"}) == [200, 200, 429]
        assert statuses(url, 3) == [200, 200, 429]
        assert statuses(url, 1, **{"X-OpenWebUI-User-Id": "dave"}) == [200]  # the address's budget is not his


def test_with_an_api_key_only_key_holders_name_users(seeded_settings: Settings, service: PersonaService) -> None:
    """Guessing the key under ever new user names still draws on the address's budget."""
    app = create_app(seeded_settings.model_copy(update={"rate_limit": "2/minute", "api_key": KEY}), service=service)
    with uvicorn_server(app) as url:
        keyed = {"Authorization": f"Bearer {KEY}"}
        assert statuses(url, 3, **keyed, **{"X-OpenWebUI-User-Id": "alice"}) == [200, 200, 429]
        assert statuses(url, 1, **keyed, **{"X-OpenWebUI-User-Id": "bob"}) == [200]
        guesses = [statuses(url, 1, **{"Authorization": f"Bearer guess-{n}", "X-User-Id": f"user-{n}"})[0]
                   for n in range(3)]
        assert guesses == [401, 401, 429]


def test_user_headers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().rate_limit == "600/minute"
    assert Settings().rate_limit_user_headers == ["X-OpenWebUI-User-Id", "X-User-Id"]
    monkeypatch.setenv("PERSONA_RATE_LIMIT_USER_HEADERS", "X-Forwarded-User, X-User-Id")
    assert Settings().rate_limit_user_headers == ["X-Forwarded-User", "X-User-Id"]
    monkeypatch.setenv("PERSONA_RATE_LIMIT_USER_HEADERS", "")
    assert Settings().rate_limit_user_headers == []


# -- metrics ---------------------------------------------------------------------------------------
def retrieved_ok(client: TestClient) -> float:
    """The module client's count of successful /v1/retrieve requests so far (other tests share the client)."""
    line = 'http_requests_total{handler="/v1/retrieve",method="POST",status="200"} '
    found = [row for row in client.get("/metrics").text.splitlines() if row.startswith(line)]
    return float(found[0][len(line):]) if found else 0.0


def test_prometheus_metrics(client: TestClient) -> None:
    before = retrieved_ok(client)
    for _ in range(2):  # the second request's handler is the remembered one
        client.post("/v1/retrieve", json={"query": "forecast"})
        client.get("/v1/models/nobody")
        client.get("/no/such/path")
    text = client.get("/metrics").text
    assert retrieved_ok(client) == before + 2
    assert 'http_requests_total{handler="/v1/models/{model}",method="GET"' in text
    assert 'http_requests_total{handler="none",method="GET"' in text  # an unknown path: untemplated, grouped
    assert "http_request_duration_seconds_bucket" in text and "process_resident_memory_bytes" in text
