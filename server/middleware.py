"""What stands between the network and the routes: request ids and access logs, metrics, CORS,
the body-size limit, rate limiting and the optional API key.

Each piece is a plain ASGI middleware or a maintained library (starlette's CORS, slowapi,
prometheus-fastapi-instrumentator). :func:`install_middleware` wires them in this order, outermost
first::

    request id + access log -> metrics -> CORS -> body limit -> rate limit -> API key -> routes

so every response (even a 401, 413 or 429) carries ``X-Request-ID`` and is counted, a browser can
read the errors, and over-size or over-rate requests are refused before anyone looks at a key.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrieval.settings import Settings
from server import errors, logs

log = logging.getLogger("server.access")

REQUEST_ID_HEADER = "X-Request-ID"
_GOOD_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PUBLIC_PATHS = frozenset({"/healthz", "/", "/favicon.ico"})
"""Paths served without the API key: the health probe and the static chat page."""
PUBLIC_PREFIXES = ("/static/",)
MAX_REMEMBERED_HANDLERS = 256  # metrics: routes without path parameters whose handler is remembered


def _error(scope: Scope, status: int, detail: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return errors.respond(Request(scope), status, detail, code, headers=headers)


class RequestContext:
    """Give every request an id (the client's ``X-Request-ID`` when sane), echo it, log one JSON line.

    An exception that escapes the app becomes the error table's generic 500 here, so even that
    response carries the request id; no traceback ever reaches the client.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        rid = given if _GOOD_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        status, responded = 500, False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if responded:  # the response had started: nothing more can be said to the client
                raise
            response = await errors.unexpected_error(Request(scope), exc)
            await response(scope, receive, send_with_id)
        finally:
            client = scope.get("client")
            log.info("%s %s %s", scope["method"], scope["path"], status, extra={
                "request_id": rid, "method": scope["method"], "path": scope["path"], "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "client": client[0] if client else None,
            })
            logs.request_id.reset(token)


INGEST_PATH = "/v1/ingest"


def may_ingest(scope: Scope, api_key: str | None) -> bool:
    """Whether a request may hand the server cards to ingest: it carries the API key when one is set; without a
    key, it comes from this machine (a loopback address), since anyone else could then rewrite the personas."""
    if api_key:
        return key_matches(Headers(scope=scope), api_key.encode("utf-8"))
    client = scope.get("client")
    try:
        return client is not None and ipaddress.ip_address(client[0]).is_loopback
    except ValueError:  # not an address (a test client's name)
        return False


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, before the body is read whole.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body is counted
    as it streams in and refused as soon as it passes the limit. An accepted body (at most
    ``max_bytes``) is handed to the app unchanged. A live ingest (:data:`INGEST_PATH`) from a client that
    may ingest (:func:`may_ingest`) may send up to ``ingest_bytes``: cards with their sidecars.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, ingest_bytes: int | None = None,
                 api_key: str | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.ingest_bytes = ingest_bytes or max_bytes
        self.api_key = api_key

    def limit(self, scope: Scope) -> int:
        """The largest body this request may send."""
        if scope["path"] == INGEST_PATH and may_ingest(scope, self.api_key):
            return max(self.max_bytes, self.ingest_bytes)
        return self.max_bytes

    def _too_large(self, scope: Scope, limit: int) -> JSONResponse:
        setting = "PERSONA_MAX_INGEST_BYTES" if limit != self.max_bytes else "PERSONA_MAX_BODY_BYTES"
        return _error(scope, 413, f"request body too large: at most {limit} bytes are accepted ({setting})",
                      "payload_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _error(scope, 400, "invalid Content-Length header", "bad_request")(scope, receive, send)
                return
            if int(declared) > limit:
                await self._too_large(scope, limit)(scope, receive, send)
                return
        parts: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await self._too_large(scope, limit)(scope, receive, send)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(parts), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then defers to the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def presented_key(headers: Headers) -> bytes | None:
    """The API key a request carries (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``), if any."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip().encode("utf-8", "replace")
    given = headers.get("x-api-key")
    return given.strip().encode("utf-8", "replace") if given else None


def key_matches(headers: Headers, key: bytes) -> bool:
    """Whether the request carries ``key``, compared in constant time (:func:`hmac.compare_digest`)."""
    given = presented_key(headers)
    return given is not None and hmac.compare_digest(given, key)


class ApiKey:
    """Require the API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``) on non-public paths.

    Keys are compared with :func:`hmac.compare_digest`, in constant time.
    """

    def __init__(self, app: ASGIApp, key: str, public_paths: Iterable[str] = PUBLIC_PATHS,
                 public_prefixes: tuple[str, ...] = PUBLIC_PREFIXES) -> None:
        self.app = app
        self.key = key.encode("utf-8")
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = public_prefixes

    def is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"} or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if key_matches(headers, self.key):
            await self.app(scope, receive, send)
            return
        detail = ("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
                  if presented_key(headers) is None else "invalid API key")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": detail})
            return
        response = _error(scope, 401, detail, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class RateLimit:
    """Per-user request budget over the whole API (slowapi's :class:`~slowapi.Limiter`), 429 past it.

    A chat tool sends all its users' requests from one address, so the budget is keyed by the user it names
    in the first of ``user_headers`` present (Open WebUI's ``X-OpenWebUI-User-Id`` when it forwards user
    info, or a generic ``X-User-Id``), and by the client address when there is none. The header is trusted
    only from a client holding the API key when one is set (without a key every client is anonymous anyway):
    a stranger cannot mint budgets, nor dodge the limit while guessing the key.

    slowapi's own middleware finds the route's endpoint to decide what to limit, which misses
    routes FastAPI includes from routers (and mounted apps); here every path but the probes
    (``/healthz``, ``/metrics``) shares one budget per user or client address.
    """

    EXEMPT = frozenset({"/healthz", "/metrics"})
    MAX_USER_CHARS = 200

    def __init__(self, app: ASGIApp, rate: str, user_headers: Iterable[str] = (), api_key: str | None = None) -> None:
        from slowapi import Limiter

        self.app = app
        self.user_headers = tuple(user_headers)
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.limiter = Limiter(key_func=self.budget, application_limits=[rate], key_style="url",
                               storage_uri="memory://")

    def budget(self, request: Request) -> str:
        """Whose budget a request draws on: ``user:<id>`` for a trusted user header, else the client address."""
        from slowapi.util import get_remote_address

        headers = request.headers
        if self.api_key is None or key_matches(headers, self.api_key):
            for name in self.user_headers:
                user = headers.get(name, "").strip()
                if user:
                    return f"user:{user[:self.MAX_USER_CHARS]}"
        return f"address:{get_remote_address(request)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from slowapi.errors import RateLimitExceeded

        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            self.limiter._check_request_limit(request, None, True)
        except RateLimitExceeded as exc:
            await self.refuse(request, exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refuse(self, request: Request, exc: Exception) -> JSONResponse:
        """429 with ``Retry-After``: the seconds until the client's window lets a request through."""
        retry_after = 1
        current = getattr(request.state, "view_rate_limit", None)
        if current is not None:
            reset_at, _remaining = self.limiter.limiter.get_window_stats(current[0], *current[1])
            retry_after = max(1, math.ceil(reset_at - time.time()))
        detail = f"rate limit exceeded ({getattr(exc, 'detail', exc)}); retry in {retry_after} s"
        return _error(request.scope, 429, detail, "rate_limited", headers={"Retry-After": str(retry_after)})


def _install_metrics(app: FastAPI) -> None:
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
    from prometheus_fastapi_instrumentator import Instrumentator
    from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
    from starlette.middleware import Middleware

    class Metrics(PrometheusInstrumentatorMiddleware):
        """The instrumentator's middleware, remembering the handler of each route without path parameters.

        Its lookup flattens and matches every route of the app on every request (FastAPI's included
        routers make that costly: a sixth of the GIL time of a cached ``/v1/retrieve``); a path that
        is its own template always gets the same answer, so it is looked up once. Other paths (a
        template with parameters, an unknown path) are looked up every time, as before.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.handlers: dict[tuple[str, str, str], tuple[str, bool]] = {}

        def _get_handler(self, request: Request) -> tuple[str, bool]:
            scope = request.scope
            key = (scope["method"], scope["path"], scope.get("root_path", ""))
            found = self.handlers.get(key)
            if found is None:
                found = super()._get_handler(request)
                if found == (scope["path"], True) and len(self.handlers) < MAX_REMEMBERED_HANDLERS:
                    self.handlers[key] = found
            return found

    registry = CollectorRegistry()  # one per app: several apps in one process do not collide
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    instrumentator = Instrumentator(registry=registry, excluded_handlers=["/metrics"],
                                    should_group_status_codes=False)
    instrumentator.instrument(app).expose(app, endpoint="/metrics", include_in_schema=False)
    app.user_middleware = [Middleware(Metrics, *m.args, **m.kwargs) if m.cls is PrometheusInstrumentatorMiddleware
                           else m for m in app.user_middleware]


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """Wire request ids, logs, metrics, CORS, the body limit, rate limiting and the API key."""
    from starlette.middleware.cors import CORSMiddleware

    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key)
    if settings.rate_limit:
        app.add_middleware(RateLimit, rate=settings.rate_limit, user_headers=settings.rate_limit_user_headers,
                           api_key=settings.api_key)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, ingest_bytes=settings.max_ingest_bytes,
                       api_key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key", REQUEST_ID_HEADER],
                           expose_headers=[REQUEST_ID_HEADER, "Retry-After"], max_age=600)
    _install_metrics(app)
    app.add_middleware(RequestContext)
    logs.configure_logging(settings.log_json)
