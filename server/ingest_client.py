"""``persona ingest`` beside a running server: the cards sent to its ``POST /v1/ingest`` (:mod:`server.ingest_api`),
its progress relayed to the command line, its report returned.

The cards are read here (an unreadable file or one that is not UTF-8 is refused here, naming it) and validated
by the server, which embeds with its own model and publishes into the index it holds. An error the server answers
with keeps its message and its row of the error table (:class:`retrieval.errors.RemoteError`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpx

from ingest.indexer import CardFile, IngestReport, Progress
from retrieval.errors import IndexUnavailable, RemoteError
from server.middleware import INGEST_PATH

CONNECT_SECONDS = 30.0


def request_body(files: Sequence[CardFile], prune: bool) -> dict[str, Any]:
    """The JSON body of a live ingest: each card's file name, text and sidecar text."""
    return {"cards": [{"path": f.path, "text": f.text, "sidecar": f.sidecar} for f in files], "prune": prune}


def ingest_through(url: str, files: Sequence[CardFile], *, prune: bool = False, api_key: str | None = None,
                   progress: Progress | None = None) -> IngestReport:
    """Ingest ``files`` through the persona server at ``url`` (its base URL); raises what it refuses with."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    target = url.rstrip("/") + INGEST_PATH
    # no read timeout: embedding a large card, or waiting for another ingest, sends nothing for a while
    timeout = httpx.Timeout(CONNECT_SECONDS, read=None)
    try:
        with (httpx.Client(timeout=timeout) as client,
              client.stream("POST", target, json=request_body(files, prune), headers=headers) as response):
            if response.status_code != 200:
                response.read()
                raise refusal(response, url)
            return follow(server_events(response.iter_lines()), progress)
    except httpx.HTTPError as exc:
        raise IndexUnavailable(f"the persona server at {url} (holding the index) does not answer: {exc}") from None


def refusal(response: httpx.Response, url: str) -> RemoteError:
    """The error a non-200 answer stands for: the server's ``{"detail", "code"}``, or what the status says."""
    try:
        body = response.json()
        detail, code = str(body["detail"]), str(body["code"])
    except (ValueError, KeyError, TypeError):
        detail, code = f"HTTP {response.status_code}: {response.text[:200]}", "http_error"
    if response.status_code == 404 and code == "http_error":
        detail = f"the server at {url} takes no live ingest (POST {INGEST_PATH}: {detail}); is it persona-rag?"
    return RemoteError(detail, response.status_code, code)


def server_events(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-Sent Events as ``(event, data)``: ``event:`` and ``data:`` lines, a blank line ends each."""
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield name, json.loads("\n".join(data))


def follow(events: Iterable[tuple[str, dict[str, Any]]], progress: Progress | None) -> IngestReport:
    """Relay ``progress`` events, return the ``report``; an ``error`` event raises."""
    report: IngestReport | None = None
    for name, data in events:
        if name == "progress" and progress is not None:
            progress(str(data["description"]), int(data["done"]), int(data["total"]))
        elif name == "report":
            report = IngestReport.from_dict(data)
        elif name == "error":
            raise RemoteError(str(data.get("detail", "the ingest failed")), 500, str(data.get("code", "")))
    if report is None:
        raise RemoteError("the server ended the ingest without a report (see its log)", 500, "internal_error")
    return report
