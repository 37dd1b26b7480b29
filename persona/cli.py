"""``persona``: ingest cards, retrieve, ask, and serve the API.

Every command calls the same library functions as the HTTP routes. Domain errors are turned
into one clear line on stderr and a non-zero exit in :func:`main`, the one place that does so.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ingest.enrich import DEFAULT_BOUNDARY, DEFAULT_PER_PASSAGE
from retrieval.errors import PersonaError
from retrieval.settings import Settings

if TYPE_CHECKING:
    from generation.service import PersonaService
    from ingest.enrich import Generated
    from ingest.indexer import CardFile, IngestReport
    from retrieval.conversation import History

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Occupation personas that answer in their own voice, every claim cited to the card.")
out = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None,
                    typer.Option("--data-dir", help="Index folder (default $PERSONA_DATA_DIR or ./.persona).")]
PersonaOpt = Annotated[str | None, typer.Option("--persona", "-p", help="Persona slug (optional with one persona).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
IndexProgress = Callable[[str, int, int], None]
"""``progress(description, done, total)`` of an ingest (:data:`ingest.indexer.Progress`)."""
GeneratorOpt = Annotated[str | None, typer.Option("--generator", "-g",
                                                  help="Generator that answers (default: the first registered).")]


def settings_for(data_dir: Path | None = None, **overrides: object) -> Settings:
    """Settings from the environment, with command-line overrides."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def service_for(settings: Settings) -> PersonaService:
    """The service with the registered generators (imported here: the CLI starts without the model stack)."""
    from generation.registry import generators
    from generation.service import PersonaService

    return PersonaService(settings, generators=generators(settings))


def run_ingest(settings: Settings, paths: list[Path], *, unless_others: bool = False, prune: bool = False,
               server: str | None = None, here: bool = False) -> None:
    """Ingest cards with a progress bar on the terminal: into the index here, or through the server that holds it
    (``server``, else the one :func:`retrieval.store.holder` names when the index is taken; see
    :func:`server.ingest_client.ingest_through`).

    ``unless_others``: leave the index alone when it holds a persona of another card (the built-in example
    is ingested into an empty index, or to refresh itself, never beside cards of your own).
    ``prune``: also remove the indexed personas whose card is not among ``paths``.
    ``here``: never through a server (``persona serve`` before it serves: a taken index is an error)."""
    from ingest.indexer import read_cards
    from retrieval.errors import IndexUnavailable
    from retrieval.store import exclusive, holder

    files = read_cards(paths)
    with contextlib.ExitStack() as held, progress_bar() as progress:
        if server is None:
            try:
                held.enter_context(exclusive(settings))
            except IndexUnavailable:
                server = None if here else holder(settings)
                if server is None:  # held by another `persona ingest`, or a server that did not say where it is
                    raise
        if server is not None:
            from server.ingest_client import ingest_through

            report = ingest_through(server, files, prune=prune, api_key=settings.api_key, progress=progress)
        else:
            report = ingest_here(settings, files, unless_others=unless_others, prune=prune, progress=progress)
    for line in report.lines() if report else []:
        err.print(line, highlight=False, markup=False, soft_wrap=True)


def ingest_here(settings: Settings, files: list[CardFile], *, unless_others: bool, prune: bool,
                progress: IndexProgress) -> IngestReport | None:
    """Ingest into the index of ``settings``, which this process holds (``None``: left alone, see ``unless_others``)."""
    from ingest.indexer import publish_cards, validate
    from retrieval.embedder import ensure_onnx
    from retrieval.store import Store
    from retrieval.vector_cache import ingest_embedder

    cards = validate(files)
    store = Store(settings)
    if unless_others:
        others = {p.slug for p in store.personas()} - {c.card.slug for c in cards}
        if others:
            err.print(f"serving the personas indexed in {store.location} ({', '.join(sorted(others))}); "
                      "the built-in example is not added", highlight=False, markup=False, soft_wrap=True)
            return None
    ensure_onnx(settings.model, settings.models_dir, settings.embedder, settings.embed_precision)
    return publish_cards(cards, store, ingest_embedder(settings), settings.model,
                         batch_size=settings.embed_batch_size, progress=progress, prune=prune)


@contextlib.contextmanager
def progress_bar() -> Iterator[IndexProgress]:
    """Progress bars on stderr, one per description (``embedding SLUG``, ``writing SLUG``), gone when done."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total or None)
            bar.update(tasks[description], completed=done, total=total or None)

        yield progress


ServerOpt = Annotated[str | None, typer.Option(
    "--server", help="Go through the persona server at this URL (default: the server holding the index, when one "
                     "does; else open the index here).")]


@app.command("ingest")
def ingest_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Card files or folders (default: $PERSONA_SEEDS_DIR, else ./seeds, else the built-in example).")] = None,
    data_dir: DataDir = None,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Also remove the indexed personas whose card is not among PATHS (a card deleted from "
                        "the folder).")] = False,
    server: ServerOpt = None,
) -> None:
    """Validate cards, chunk them and index what changed; beside a running server, through it (no restart)."""
    from ingest.cards import default_cards

    settings = settings_for(data_dir)
    run_ingest(settings, paths or [default_cards(settings.seeds_dir)], prune=prune, server=server)


@app.command("enrich")
def enrich_command(
    card: Annotated[Path, typer.Argument(help="The card file; its sidecar <slug>.examples.yaml is written beside it.")],
    per_passage: Annotated[int, typer.Option("--per-passage", "-n", min=0, max=50,
                                             help="Example questions each passage should have.")] = DEFAULT_PER_PASSAGE,
    boundary: Annotated[int, typer.Option("--boundary", min=0, max=2000,
                                          help="Questions the card does not cover (not_covered) it should have.")]
    = DEFAULT_BOUNDARY,
    overwrite: Annotated[bool, typer.Option("--overwrite",
                                            help="Replace the examples already there (default: keep them).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be added; write nothing.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1,
                                              help="Ask about at most this many passages (card order).")] = None,
    requests_file: Annotated[Path | None, typer.Option(
        "--batch-requests", help="Write the requests as an OpenAI Batch input file (JSONL) and stop.")] = None,
    results_file: Annotated[Path | None, typer.Option(
        "--batch-results", help="Read the replies from an OpenAI Batch output file instead of asking the LLM.")]
    = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Model named in the batch requests (default $PERSONA_LLM_MODEL).")] = None,
    eval_sets: Annotated[list[Path] | None, typer.Option(
        "--eval-set", help="Question sets the sidecar must not leak into (repeatable; default: the shipped "
                           "eval sets). Questions of this card that come near one are dropped.")] = None,
) -> None:
    """Write the card's sidecar through an OpenAI-compatible LLM (PERSONA_LLM_*) or the OpenAI Batch format:
    example questions per passage, from several angles, and the questions the card does not cover. What is
    there is kept and topped up; questions near an eval question are dropped."""
    from ingest.cards import load_card
    from ingest.chunking import chunk_card
    from ingest.enrich import (
        answer_live,
        batch_requests,
        collect,
        header_of,
        llm_ask,
        merge,
        merge_boundary,
        plan,
        read_batch_results,
        seen_keys,
        write_atomically,
    )
    from ingest.examples import Sidecar, load_sidecar, sidecar_path
    from retrieval.errors import InvalidQuery, LLMUnavailable

    if requests_file and results_file:
        raise InvalidQuery("--batch-requests writes the requests, --batch-results reads the replies: one at a time")
    settings = settings_for()
    parsed = load_card(card)
    passages = chunk_card(parsed)
    path = sidecar_path(card)
    sidecar = load_sidecar(card, parsed.slug) or Sidecar(card=parsed.slug)
    requests = plan(parsed.title, parsed.slug, passages, sidecar, per_passage, boundary, overwrite, limit)
    if not requests:
        err.print(f"every passage already has {per_passage} example questions and the boundary {boundary} in "
                  f"{path}; nothing to do", highlight=False, markup=False, soft_wrap=True)
        return
    if requests_file is not None:
        named = model or settings.llm_model
        if not named:
            raise InvalidQuery("name the model the batch requests are for: --model NAME (or PERSONA_LLM_MODEL)")
        write_text_atomically(requests_file, batch_requests(requests, named, settings.llm_temperature))
        err.print(f"wrote {len(requests)} requests ({sum(r.wants for r in requests)} questions) to {requests_file}: "
                  f"run them as an OpenAI batch, then: persona enrich {card} --batch-results RESULTS.jsonl",
                  highlight=False, markup=False, soft_wrap=True)
        return
    if results_file is not None:
        try:
            text = results_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidQuery(f"cannot read the batch results {results_file}: {exc.strerror or exc}") from None
        replies, failures = read_batch_results(text, str(results_file))
    else:
        ask = llm_ask(settings)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("asking the LLM", total=len(requests))
            try:
                replies = answer_live(requests, ask, lambda _d, done, _t: bar.update(task, completed=done))
            except LLMUnavailable as exc:
                raise LLMUnavailable(f"{exc.message}; {path} left unchanged") from None
        failures = {}
    replaced = [r.passage.id for r in requests if r.passage is not None] if overwrite else ()
    generated = collect(requests, replies, seen_keys(sidecar, replaced), failures)
    dropped = drop_leaks(generated, parsed.slug, eval_sets, settings)
    for warning in generated.warnings:
        err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    if dropped:
        err.print(f"dropped {dropped} questions that came near an eval question of {parsed.slug}",
                  highlight=False, markup=False, soft_wrap=True)
    merged, added = merge(sidecar, generated.questions, per_passage, overwrite, order=[p.id for p in passages])
    merged, bounds = merge_boundary(merged, generated.boundary, boundary)
    total = sum(len(q) for q in added.values())
    asked = sum(r.passage is not None for r in requests)
    summary = (f"{total} example questions to {len(added)} of {asked} passages asked about and {len(bounds)} "
               f"questions it does not cover")
    if dry_run:
        for pid, questions in [*added.items(), *([("not_covered", bounds)] if bounds else [])]:
            out.print(pid, highlight=False, markup=False)
            for question in questions:
                out.print(f"  + {question}", highlight=False, markup=False, soft_wrap=True)
        err.print(f"would add {summary} in {path} (dry run: nothing written)", highlight=False, markup=False,
                  soft_wrap=True)
        return
    if added or bounds:
        writer = f"written by {settings.llm_model}" if results_file is None else f"from {results_file.name}"
        header = header_of(path) or (f"Example questions per passage of {card.name} (persona enrich {parsed.slug}, "
                                     f"{writer}, and by hand).\nEach is indexed as an extra search vector pointing "
                                     "at its passage; not_covered lists what the card does not answer.")
        write_atomically(path, merged, header)
    err.print(f"added {summary}: {path}" + ("" if added or bounds else " (unchanged)"), highlight=False,
              markup=False, soft_wrap=True)


def write_text_atomically(path: Path, text: str) -> None:
    """``text`` written to a temporary file beside ``path``, then renamed over it."""
    import os
    import tempfile

    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(name, path)


def drop_leaks(generated: Generated, slug: str, sets: list[Path] | None, settings: Settings) -> int:
    """Drop from ``generated`` the questions near an eval question of ``slug`` (eval/leakage.py); how many."""
    from eval.leakage import leaking
    from eval.sets import default_sets, load_set
    from retrieval.settings import DEFAULT_MODEL
    from retrieval.vector_cache import ingest_embedder

    questions = [q.question for path in (sets or default_sets()) for q in load_set(path).questions if q.persona == slug]
    candidates = [q for qs in generated.questions.values() for q in qs] + generated.boundary
    if not questions or not candidates:
        return 0
    embedder = ingest_embedder(settings.model_copy(update={"model": DEFAULT_MODEL}))  # the model its limits are for
    leaks = leaking(candidates, questions, embedder.encode(candidates), embedder.encode(questions))
    generated.questions = {pid: [q for q in qs if q not in leaks] for pid, qs in generated.questions.items()}
    generated.boundary = [q for q in generated.boundary if q not in leaks]
    return len(leaks)


@app.command("personas")
def personas_command(data_dir: DataDir = None, as_json: JsonOpt = False, server: ServerOpt = None) -> None:
    """List the indexed personas, with what each card has (example and boundary questions, where its coverage
    thresholds come from) and a warning for a card that lacks them; beside a running server, through it."""
    personas = listed_personas(settings_for(data_dir), server)
    if as_json:
        out.print_json(json.dumps({"personas": personas}))
        return
    for p in personas:
        out.print(f"[bold]{escape(str(p['slug']))}[/bold]  {escape(str(p['title']))}: {escape(str(p['summary']))}  "
                  f"({p['chunks']} chunks; {escape(card_status(p))})", highlight=False, soft_wrap=True)
    for p in personas:
        for warning in p.get("warnings") or []:
            err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)


def card_status(persona: dict[str, Any]) -> str:
    """``1768 example questions, 188 boundary questions; thresholds: settings`` (``status not recorded`` for an index
    from before the status was)."""
    if persona.get("example_questions") is None:
        return "status not recorded"
    source = (persona.get("calibration") or {}).get("source", "settings")
    return (f"{persona['example_questions']} example questions, {persona['boundary_questions']} boundary questions; "
            f"thresholds: {source}")


def listed_personas(settings: Settings, server: str | None) -> list[dict[str, Any]]:
    """Every persona's public fields (``/v1/personas``): from the server that holds the index (or ``server``), else
    read here (also while a `persona ingest` holds it: a read, as before the lock)."""
    import httpx

    from retrieval.errors import IndexUnavailable, RemoteError
    from retrieval.store import exclusive, holder

    with contextlib.ExitStack() as held:
        if server is None:
            try:
                held.enter_context(exclusive(settings))
            except IndexUnavailable:
                server = holder(settings)
        if server is None:
            return [p.public() for p in service_for(settings).personas()]
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        response = httpx.get(server.rstrip("/") + "/v1/personas", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise IndexUnavailable(f"the persona server at {server} (holding the index) does not answer: {exc}") from None
    if response.status_code != 200:
        from server.ingest_client import refusal

        raise refusal(response, server)
    try:
        return list(response.json()["personas"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"the server at {server} answered /v1/personas with {exc!r}", 502, "http_error") from None


@app.command("retrieve")
def retrieve_command(
    query: Annotated[str, typer.Argument(help="What to look for in the card.")],
    persona: PersonaOpt = None,
    k: Annotated[int, typer.Option("-k", help="How many passages.")] = 5,
    section: Annotated[list[str] | None, typer.Option("--section", "-s", help="Only these sections.")] = None,
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the card passages nearest to a query."""
    from retrieval.types import retrieval_body

    info, hits = service_for(settings_for(data_dir)).retrieve(query, persona, k, section)
    if as_json:
        out.print_json(json.dumps(retrieval_body(info.slug, query, hits)))
        return
    for hit in hits:
        out.print(f"{hit.rank}. [bold]{escape(hit.path)}[/bold]  ({hit.score:.3f})  [dim]{escape(hit.id)}[/dim]",
                  highlight=False)
        out.print(f"   {hit.text}", highlight=False, markup=False)


HistoryOpt = Annotated[Path | None, typer.Option(
    "--history", help="The conversation so far, a JSON or YAML file: a list of {role: user|assistant, content} "
                      "(or a chat request's {messages: [...]}); the question is answered as its follow-up.")]


@app.command("ask")
def ask_command(
    question: Annotated[str, typer.Argument(help="Your question to the persona.")],
    persona: PersonaOpt = None,
    k: Annotated[int | None, typer.Option("-k", help="Passages to retrieve.")] = None,
    generator: GeneratorOpt = None,
    history: HistoryOpt = None,
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the persona; the answer cites the card."""
    from generation.sources import with_sources

    chat = read_history(history) if history else None
    answer = service_for(settings_for(data_dir)).ask(question, persona, k, generator, history=chat)
    if as_json:
        out.print_json(json.dumps(answer.to_dict()))
        return
    out.print(with_sources(answer, with_ids=True), highlight=False, markup=False)
    if chat:
        err.print(f"searched for: {answer.searched_for}", highlight=False, markup=False, soft_wrap=True)
    for warning in answer.warnings:
        err.print(f"warning: {warning}", highlight=False, markup=False)


def read_history(path: Path) -> History:
    """A conversation file as a :class:`History`; a file that is not one raises :class:`InvalidQuery` naming it."""
    import yaml

    from retrieval.conversation import History
    from retrieval.errors import InvalidQuery

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidQuery(f"cannot read the history file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidQuery(f"the history file {path} is not JSON or YAML: {exc}") from None
    if isinstance(data, dict) and "messages" in data:
        data = [m for m in data["messages"] or [] if not (isinstance(m, dict) and m.get("role") == "system")]
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise InvalidQuery(f"the history file {path} must hold a list of {{role, content}} messages")
    try:
        return History.of(data)
    except InvalidQuery as exc:
        raise InvalidQuery(f"{path}: {exc.message}") from None


@app.command("chat")
def chat_command(
    persona: PersonaOpt = None,
    k: Annotated[int | None, typer.Option("-k", help="Passages to retrieve.")] = None,
    generator: GeneratorOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Talk with a persona: each question is answered in the context of the ones before it
    (/new starts over, /quit or Ctrl-D ends)."""
    from generation.sources import with_sources
    from retrieval.conversation import History, Message

    service = service_for(settings_for(data_dir))
    info = service.persona(persona)
    err.print(f"Talking with the {info.title} persona: ask away; /new starts over, /quit or Ctrl-D ends.",
              highlight=False, markup=False, soft_wrap=True)
    messages: list[Message] = []
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if line in ("/quit", "/exit"):
            break
        if line in ("/new", "/reset"):
            messages = []
            err.print("(a new conversation)", highlight=False, markup=False)
            continue
        if not line:
            continue
        try:
            answer = service.ask(line, info.slug, k, generator, history=History(tuple(messages)))
        except PersonaError as exc:  # bad input: say so and keep the conversation
            err.print(f"error: {exc.message}", highlight=False, markup=False, soft_wrap=True)
            continue
        reply = with_sources(answer)
        out.print(f"{info.slug}> {reply}\n", highlight=False, markup=False, soft_wrap=True)
        if messages and answer.searched_for != line:
            err.print(f"(searched for: {answer.searched_for})", highlight=False, markup=False, soft_wrap=True)
        messages += [Message("user", line), Message("assistant", reply)]


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="Port (default $PORT or 8000).")] = 8000,
    cards: Annotated[Path | None, typer.Option(
        "--cards", help="Your cards (a folder or a file), ingested before serving (default: $PERSONA_SEEDS_DIR, "
                        "else ./seeds, else the built-in Sales Manager example while no other card is indexed).",
    )] = None,
    ingest_seeds: Annotated[bool, typer.Option("--ingest/--no-ingest",
                                               help="Ingest the cards when missing or stale.")] = True,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes (uvicorn), each with its own model, reading one index; live ingest needs 1.",
    )] = 1,
    data_dir: DataDir = None,
) -> None:
    """Serve the HTTP API (ingesting the cards first when the index is missing or stale)."""
    from ingest.cards import BUILTIN_CARDS, default_cards
    from retrieval.embedder import ensure_onnx

    settings = settings_for(data_dir, seeds_dir=cards)
    ensure_onnx(settings.model, settings.models_dir, settings.embedder, settings.embed_precision)
    if ingest_seeds:
        source = default_cards(settings.seeds_dir)
        builtin = source == BUILTIN_CARDS
        if builtin:
            err.print("no cards named (--cards DIR, PERSONA_SEEDS_DIR) and no ./seeds folder: the built-in Sales "
                      "Manager example is served", highlight=False, markup=False, soft_wrap=True)
        run_ingest(settings, [source], unless_others=builtin, here=True)
    serving_at = f"http://{local_address(host)}:{port}"
    if workers == 1:
        from server.app import create_app

        run_uvicorn(create_app(settings, serving_at=serving_at), settings, host, port)
        return
    from retrieval.store import exclusive
    from server.app import worker_environment
    from server.logs import configure_logging

    configure_logging(settings.log_json)
    os.environ.update(worker_environment(settings, workers))  # what each worker builds its settings from
    with exclusive(settings, serving_at):  # held here for every worker: they only read the index
        run_uvicorn("server.app:worker_app", settings, host, port, factory=True, workers=workers)


def run_uvicorn(app: object, settings: Settings, host: str, port: int, **options: Any) -> None:
    """uvicorn on ``host:port``; log_config=None: uvicorn leaves logging to the app (JSON lines with request ids, see
    server/logs.py), and no access log of its own (the app writes one)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", log_config=None, access_log=False,
                timeout_keep_alive=settings.keep_alive_seconds, **options)


def local_address(host: str) -> str:
    """How a client on this machine reaches a server bound to ``host`` (a wildcard address: loopback)."""
    if host in {"", "0.0.0.0"}:
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@app.command("mcp")
def mcp_command(
    data_dir: DataDir = None,
    server: Annotated[str | None, typer.Option(
        "--server", help="Go through the persona server at this URL (default: the server holding the index, "
                         "when one does; else open the index here).")] = None,
) -> None:
    """Serve the personas to MCP clients on stdin/stdout (tools, card sections, speak_as prompt)."""
    from server.mcp_server import run_stdio

    run_stdio(settings_for(data_dir), server)


@app.command("eval")
def eval_command(
    sets: Annotated[list[Path] | None, typer.Option(
        "--set", help="Question set YAML (repeatable; default: eval/sets/*.yaml).")] = None,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder for report.json, report.md and plots.")] = Path("eval/out"),
    generator: GeneratorOpt = None,
    thresholds: Annotated[Path | None, typer.Option(
        "--thresholds", help="Minimum metrics per set (default: eval/thresholds.yaml).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Evaluate this index (default: a temporary index of seeds/).")] = None,
    cards: Annotated[list[Path] | None, typer.Option(
        "--card", help="Card files or folders the sets' personas are found in, beside the seeds (repeatable; "
                       "default: eval/cards).")] = None,
) -> None:
    """Measure retrieval, citations and abstention against the baselines; fail below the thresholds. Any card can
    be scored: persona eval --card CARD.yaml --set ITS-QUESTIONS.yaml."""
    from rich.table import Table

    from eval import report
    from eval.runner import configurations, failures, report_data, run
    from eval.sets import CARDS_DIR, THRESHOLDS_FILE, default_sets, load_set, load_thresholds
    from generation.registry import generators

    if not report.can_plot():
        err.print(f"error: {report.PLOTTING_MISSING}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2)
    settings = settings_for(data_dir)
    generator = generators(settings).name(generator)
    question_sets = [load_set(path) for path in (sets or default_sets())]
    limits = load_thresholds(thresholds or THRESHOLDS_FILE)
    personas = sorted({q.persona for s in question_sets for q in s.questions})
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        sources = cards if cards is not None else [CARDS_DIR] if CARDS_DIR.is_dir() else []
        with configurations(settings, personas, generator, data_dir is not None, progress=progress,
                            cards=sources) as configs:
            results = run(question_sets, configs, progress)
    failed = failures(results, limits)
    data = report_data(results, settings, generator, limits, failed)
    paths = report.write(data, out_dir)
    console = out if out.is_terminal else Console(width=160)
    for qset in data["sets"]:
        headers, rows = report.set_table(data, qset["name"])
        table = Table(title=f"persona eval: {qset['name']}")
        table.add_column("metric")
        for name in headers:
            table.add_column(name, justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    headers, rows = report.cards_table(data)
    if rows:
        table = Table(title="persona eval: every card, with its sidecar and without")
        for name in headers:
            table.add_column(name, justify="left" if name in ("set", "card") else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    if data["calibration"]:
        derived = data["calibration"]["coverage"]
        out.print(f"coverage thresholds derived from {', '.join(data['calibration']['sets'])}: min_score "
                  f"{derived['min_score']:.3f}, boundary_margin {derived['boundary_margin']:.3f}, confident_score "
                  f"{derived['confident_score']:.3f} (in use: {settings.min_score}, {settings.boundary_margin}, "
                  f"{settings.confident_score})", highlight=False)
    out.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)
    for failure in failed:
        err.print(f"FAILED {failure.line()}", highlight=False, markup=False)
    if failed:
        raise typer.Exit(1)


@app.command("export-onnx")
def export_onnx_command(
    data_dir: DataDir = None,
    model: Annotated[str | None, typer.Option(help="Model name or folder (default $PERSONA_MODEL).")] = None,
) -> None:
    """Export the embedding model to ONNX for serving (ingest and serve do it when missing)."""
    from retrieval.embedder import ensure_onnx

    settings = settings_for(data_dir, model=model)
    folder = ensure_onnx(settings.model, settings.models_dir, "onnx", settings.embed_precision)
    if folder is None:  # a GGUF model: llama.cpp runs the file itself
        err.print(f"{settings.model} runs in llama.cpp: nothing to export", highlight=False)
        return
    err.print(f"ONNX export of {settings.model}: {folder}", highlight=False)


@app.command("bench")
def bench_command(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Work folder (default: a temporary one).")] = None,
    concurrency: Annotated[list[int] | None, typer.Option("--concurrency", "-c", help="Levels (1 4 16 64).")] = None,
    seconds: Annotated[float, typer.Option(help="Seconds of load per level and endpoint.")] = 5.0,
    queries: Annotated[int, typer.Option(help="In-process questions per method.")] = 200,
    cold_starts: Annotated[int, typer.Option(help="Cold starts to time (the median is checked).")] = 3,
    cards: Annotated[int, typer.Option(help="Synthetic cards for the ingest benchmark (0 skips it).")] = 0,
    workers: Annotated[list[int] | None, typer.Option(
        "--workers", help="persona serve --workers N to compare, each N (1 2; 0 skips the part).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON results file.")] = Path("bench.json"),
) -> None:
    """Benchmark in-process and HTTP speed, the cores' limit, cold start and memory; print a table."""
    from bench.run import BenchOptions, run_bench

    options = BenchOptions(concurrency=concurrency or [1, 4, 16, 64], seconds=seconds, queries=queries,
                           cold_starts=cold_starts, cards=cards, work_dir=data_dir,
                           workers=[1, 2] if workers is None else workers)
    report = run_bench(options, log=lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
    output.write_text(json.dumps(report, indent=2))
    out.print(report["table"], highlight=False, markup=False, soft_wrap=True)
    err.print(f"results written to {output}", highlight=False)


def main() -> None:
    """Entry point of the ``persona`` script: a domain error becomes one line and the exit code of
    :data:`retrieval.errors.SURFACES` (2)."""
    try:
        app()
    except PersonaError as exc:
        err.print(f"error: {exc.message}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.surface.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
