"""``persona enrich``: a card's whole sidecar, written by an OpenAI-compatible LLM.

The work is a list of :class:`Request` (:func:`plan`): for every passage that takes examples (see
:func:`takes_examples`) the questions a person would type into a chat box that the passage answers, from
several angles (:data:`ANGLES`), worded unlike the passage; and for the card, questions near its field
that it does not answer (its boundary, ``not_covered``). The requests are answered live, one chat call
each (:func:`answer_live` through an :data:`Ask`), or through the OpenAI Batch format: written as JSONL
(:func:`batch_requests`), answered elsewhere (a batch API, or a writer standing in for the LLM), and their
results file read back (:func:`read_batch_results`). Replies are parsed line by line
(:func:`parse_questions`, :func:`collect`) and merged into the sidecar (:func:`merge`,
:func:`merge_boundary`): what is there (written by hand or by an earlier run) is kept and topped up to
``per_passage`` questions a passage and ``boundary`` boundary questions; ``overwrite`` replaces the
examples instead.

Everything here is pure but :func:`llm_ask` (the real :data:`Ask`), so it is testable without a server.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.examples import MAX_EXAMPLE_CHARS, Sidecar, write_sidecar
from retrieval.errors import LLMUnavailable, PersonaError
from retrieval.settings import Settings
from retrieval.text import strip_markdown
from retrieval.types import Chunk

DEFAULT_PER_PASSAGE = 10
DEFAULT_BOUNDARY = 100
MIN_WORDS, MAX_WORDS = 3, 30
ANGLES = (
    "short: a few words, the way people type into a search box",
    "rambling: a long message that tells their situation before it asks",
    "a symptom: what is going wrong, without naming the cause",
    "a dilemma: torn between two options",
    "someone else asking: a colleague, a boss, a newcomer or a client of the field",
)
"""The angles the example questions of a passage are asked from (the issue's lesson: one wording style is not
enough)."""
EXAMPLES, BOUNDARY = "examples", "not-covered"
QUESTION_TOKENS = 40
"""Tokens a question may take in a reply (a request's ``max_tokens`` grows with its count)."""
BOUNDARY_FOCI = (
    "a neighbouring profession's work, or the field next door",
    "laws, HR rules, taxes, contracts and pay",
    "exact figures, prices, statistics or software how-tos that the card does not give",
    "personal matters and career questions of someone in the field",
    "topics unrelated to the field: cooking, travel, health, sport, coding, home and family",
)
"""What each boundary request asks about: the boundary is asked for in parts, each with its own focus (one
long list repeats itself, and fits no reply limit)."""

Ask = Callable[[list[dict[str, str]], int], str]
"""Chat messages and the most tokens to generate in, the LLM's reply text out (raises :class:`LLMUnavailable`
when it cannot answer)."""
Progress = Callable[[str, int, int], None]

# What models put before a question: bullets, "1." / "(2)" / "3)" / "a)", "Q1:", "Question 2.".
_LEAD = re.compile(r"^(?:[-*•+>#]+\s*|\(?\d{1,3}\s*[.):\]]\s*|\(?[a-z][.)]\s+|q(?:uestion)?\s*\d{0,3}\s*[:.)]\s*)",
                   re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"  # straight, curly and angle quotes
_EMPHASIS = re.compile(r"\*\*|__|(?<!\w)[*_](?=\w)|(?<=[\w?.!])[*_](?!\w)")
# A line that talks about the reply rather than being a question.
_CHATTER = re.compile(r"^(?:sure|okay|ok|certainly|of course|absolutely|great|here (?:are|is)|here's|these are|"
                      r"below are|i hope|let me know|note|i've|i have written)\b", re.IGNORECASE)
_WORD = re.compile(r"\w+")
_COPIED_RUN = 8  # a line sharing this many consecutive words with the passage is copied from it


def words(text: str) -> list[str]:
    """Lower-case word tokens (punctuation, quotes and markdown ignored)."""
    return _WORD.findall(text.lower().replace("_", " "))


def key(question: str) -> str:
    """What two questions share when they are duplicates: their words, lower case."""
    return " ".join(words(question))


def takes_examples(passages: Sequence[Chunk]) -> list[Chunk]:
    """The passages a sidecar may give examples to, in card order: every chunk but a section chunk whose
    section has items (its items take them), i.e. the overview, the items and the sections without items."""
    with_items = {c.section for c in passages if c.kind == "item"}
    return [c for c in passages if c.kind in {"overview", "section", "item"}
            and not (c.kind == "section" and c.section in with_items)]


def passage_path(passage: Chunk) -> str:
    return passage.section + (f" › {passage.item}" if passage.item else "")


def a(title: str) -> str:
    """``title`` after its indefinite article: "a Sales Manager", "an Executive Chef"."""
    return f"{'an' if title[:1].lower() in 'aeiou' else 'a'} {title}"


def prompt_messages(title: str, passage: Chunk, n: int) -> list[dict[str, str]]:
    """The request for ``n`` questions about one passage, from every angle of :data:`ANGLES` (one user message:
    some chat templates have no system role)."""
    text = strip_markdown(passage.text).strip()
    angles = "\n".join(f"- {angle}" for angle in ANGLES)
    return [{"role": "user", "content": (
        f"This passage is from the knowledge card of {a(title)} ({passage_path(passage)}):\n\n"
        f"<passage>\n{text}\n</passage>\n\n"
        f"Write {n} different questions that someone would type into a chat box when asking {a(title)} for "
        f"advice, and that this passage answers better than anything else {a(title)} knows. Spread them over these "
        f"angles:\n{angles}\n"
        f"Write them the way people type: mostly first person and about their own situation, in their own "
        f"words and not the passage's (never its title), lower case and abbreviations are fine. "
        f"One question per line, no numbering, no labels, nothing else.")}]


def boundary_messages(title: str, card_text: str, n: int, focus: str) -> list[dict[str, str]]:
    """The request for ``n`` questions about ``focus`` that people would ask a persona of the card and that the
    card does not answer (its boundary)."""
    return [{"role": "user", "content": (
        f"This is the knowledge card of {a(title)}:\n\n<card>\n{card_text}\n</card>\n\n"
        f"Write {n} different questions that people chatting with {a(title)} might type, which this card does NOT "
        f"answer, about {focus}. Check each against the card: if the card answers it, write another. Write them "
        f"the way people type into a chat box, in their own words. One question per line, no numbering, no "
        f"labels, nothing else.")}]


def clean_line(line: str) -> str:
    """One reply line without numbering, bullets, emphasis or surrounding quotes."""
    text = line.strip()
    previous = None
    while text != previous:
        previous = text
        text = _LEAD.sub("", text, count=1).strip()
        text = _EMPHASIS.sub("", text).strip()
        while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
        if text and text[0] in _QUOTES and text.count(text[0]) == 1:  # an opening quote the model never closed
            text = text[1:].strip()
    return " ".join(text.split())


def copied(question: str, passage: str) -> bool:
    """Whether ``question`` repeats the passage: all its words in a row there, or a run of 8 of them."""
    mine, theirs = words(question), words(passage)
    if not mine:
        return False
    span = min(len(mine), _COPIED_RUN)
    runs = {tuple(theirs[i:i + span]) for i in range(len(theirs) - span + 1)}
    return any(tuple(mine[i:i + span]) in runs for i in range(len(mine) - span + 1))


def parse_questions(reply: str, passage: str, seen: Iterable[str] = ()) -> list[str]:
    """The questions in an LLM's reply, in order: one per line, numbering, bullets and quotes stripped; a line
    is kept when it ends with "?" (two words at least) or has 3-30 words, and is not chatter ("Here are ...:"),
    a fragment (ending in ":", ";" or ","), a duplicate (of another line or of a key in ``seen``, see
    :func:`key`) or copied from ``passage``."""
    known = set(seen)
    questions: list[str] = []
    for line in reply.splitlines():
        text = clean_line(line)
        count = len(words(text))
        if not text or text.endswith((":", ";", ",")) or _CHATTER.match(text) or len(text) > MAX_EXAMPLE_CHARS:
            continue
        if not ((text.endswith("?") and count >= 2) or MIN_WORDS <= count <= MAX_WORDS):
            continue
        if key(text) in known or copied(text, passage):
            continue
        known.add(key(text))
        questions.append(text)
    return questions


def wanted(sidecar: Sidecar, passages: Sequence[Chunk], per_passage: int,
           overwrite: bool = False) -> list[tuple[Chunk, int]]:
    """The passages to ask about and how many questions each needs: ``per_passage`` less what it already has
    (all of it with ``overwrite``); passages that are full are left out."""
    needs = [(p, per_passage if overwrite else per_passage - len(sidecar.examples.get(p.id, [])))
             for p in takes_examples(passages)]
    return [(p, n) for p, n in needs if n > 0]


def merge(sidecar: Sidecar, generated: Mapping[str, Sequence[str]], per_passage: int, overwrite: bool = False,
          order: Sequence[str] = ()) -> tuple[Sidecar, dict[str, list[str]]]:
    """The sidecar with generated questions merged in, and what was added per passage.

    Without ``overwrite`` a passage's questions are kept and generated ones appended (duplicates dropped)
    until it has ``per_passage``; with it they are replaced by the generated ones, unless none were
    generated for it. ``not_covered`` and the examples of other passages are unchanged. Passages are
    listed in ``order`` (card order), then the others as they were.
    """
    examples = {pid: list(questions) for pid, questions in sidecar.examples.items()}
    added: dict[str, list[str]] = {}
    for pid, questions in generated.items():
        kept = [] if overwrite else examples.get(pid, [])
        known = {key(q) for q in kept}
        new: list[str] = []
        for question in questions:
            if len(kept) + len(new) >= per_passage:
                break
            if key(question) and key(question) not in known:
                known.add(key(question))
                new.append(question)
        if new:
            examples[pid] = kept + new
            added[pid] = new
    rank = {pid: n for n, pid in enumerate(order)}
    ordered = dict(sorted(examples.items(), key=lambda entry: rank.get(entry[0], len(rank))))
    return Sidecar(card=sidecar.card, examples=ordered, not_covered=list(sidecar.not_covered)), added


@dataclass(frozen=True)
class Request:
    """One question to the LLM: what it is for (``custom_id``: ``examples:<passage id>`` or
    ``not-covered:<slug>:<part>``), its messages, how many questions it asks for, and the passage it is about."""

    custom_id: str
    messages: list[dict[str, str]]
    wants: int
    passage: Chunk | None = None  # None for the boundary

    @property
    def max_tokens(self) -> int:
        return QUESTION_TOKENS * self.wants


def card_text(card_title: str, passages: Sequence[Chunk]) -> str:
    """The card as the boundary prompt shows it: each section's heading and text."""
    sections = [c for c in passages if c.kind in ("overview", "section")]
    return "\n\n".join(f"## {c.section}\n{strip_markdown(c.text)}" for c in sections) or card_title


def plan(title: str, slug: str, passages: Sequence[Chunk], sidecar: Sidecar, per_passage: int, boundary: int,
         overwrite: bool = False, limit: int | None = None) -> list[Request]:
    """The requests that fill the sidecar: a passage's examples up to ``per_passage`` (at most ``limit``
    passages, card order), then the boundary up to ``boundary`` questions, in one part per focus of
    :data:`BOUNDARY_FOCI`."""
    requests = [Request(f"{EXAMPLES}:{p.id}", prompt_messages(title, p, n), n, p)
                for p, n in wanted(sidecar, passages, per_passage, overwrite)[:limit]]
    missing = boundary - len(sidecar.not_covered)
    if missing > 0:
        text = card_text(title, passages)
        parts = [missing // len(BOUNDARY_FOCI) + (i < missing % len(BOUNDARY_FOCI)) for i in range(len(BOUNDARY_FOCI))]
        requests += [Request(f"{BOUNDARY}:{slug}:{i}", boundary_messages(title, text, n, focus), n)
                     for i, (n, focus) in enumerate(zip(parts, BOUNDARY_FOCI, strict=True), start=1) if n]
    return requests


@dataclass
class Generated:
    """Parsed replies: questions per passage id, the boundary questions, and a warning per request the replies
    gave nothing for."""

    questions: dict[str, list[str]] = field(default_factory=dict)
    boundary: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def collect(requests: Sequence[Request], replies: Mapping[str, str], seen: Iterable[str] = (),
            failures: Mapping[str, str] | None = None) -> Generated:
    """Each request's reply parsed (at most the number it asked for); a question is never repeated across the
    card nor one of ``seen`` (keys). A request without a reply (``failures`` says why, when it knows), or whose
    reply holds no question, is warned of."""
    known = set(seen)
    result = Generated()
    for request in requests:
        reply = replies.get(request.custom_id)
        if reply is None:
            reason = (failures or {}).get(request.custom_id)
            result.warnings.append(f"{request.custom_id}: " + (f"the request failed ({reason})" if reason
                                                               else "no reply") + "; nothing added")
            continue
        source = "" if request.passage is None else (request.passage.embed_text + "\n"
                                                     + strip_markdown(request.passage.text))
        questions = parse_questions(reply, source, known)[:request.wants]
        known.update(key(q) for q in questions)
        if request.passage is None:
            result.boundary += questions
        else:
            result.questions[request.passage.id] = questions
        if not questions:
            result.warnings.append(f"{request.custom_id}: the reply held no usable question; nothing added")
    return result


def answer_live(requests: Sequence[Request], ask: Ask, progress: Progress | None = None) -> dict[str, str]:
    """Every request asked of the LLM in turn; its replies by ``custom_id``."""
    replies: dict[str, str] = {}
    for done, request in enumerate(requests, start=1):
        replies[request.custom_id] = ask(request.messages, request.max_tokens)
        if progress is not None:
            progress("asking the LLM", done, len(requests))
    return replies


def merge_boundary(sidecar: Sidecar, generated: Sequence[str], boundary: int) -> tuple[Sidecar, list[str]]:
    """The sidecar with boundary questions appended (duplicates dropped) up to ``boundary``, and those added."""
    known = {key(q) for q in sidecar.not_covered}
    added: list[str] = []
    for question in generated:
        if len(sidecar.not_covered) + len(added) >= boundary:
            break
        if key(question) not in known:
            known.add(key(question))
            added.append(question)
    return sidecar.model_copy(update={"not_covered": [*sidecar.not_covered, *added]}), added


# -- the OpenAI Batch format -------------------------------------------------------------------
class InvalidBatchFile(PersonaError):
    """A batch results file that cannot be read, naming the file and the line."""


BATCH_URL = "/v1/chat/completions"


def batch_requests(requests: Sequence[Request], model: str, temperature: float) -> str:
    """The requests as an OpenAI Batch input file: one JSON object a line."""
    lines = [json.dumps({"custom_id": r.custom_id, "method": "POST", "url": BATCH_URL,
                         "body": {"model": model, "messages": r.messages, "max_tokens": r.max_tokens,
                                  "temperature": temperature}}, ensure_ascii=False) for r in requests]
    return "\n".join(lines) + "\n" if lines else ""


def read_batch_results(text: str, source: str) -> tuple[dict[str, str], dict[str, str]]:
    """The replies of an OpenAI Batch output file by ``custom_id``, and why each failed request failed (an
    ``error``, a status other than 200). A line that is not such a result raises :class:`InvalidBatchFile`
    naming ``source`` and the line."""
    replies: dict[str, str] = {}
    failures: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            result = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidBatchFile(f"{source} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(result, dict) or not isinstance(result.get("custom_id"), str):
            raise InvalidBatchFile(f"{source} line {number}: a batch result with a custom_id expected")
        custom_id = result["custom_id"]
        response = result.get("response") or {}
        if result.get("error") or not isinstance(response, dict) or response.get("status_code", 200) != 200:
            status = response.get("status_code") if isinstance(response, dict) else None
            error = result.get("error")
            failures[custom_id] = (str(error.get("message") or error) if isinstance(error, dict) else str(error)) \
                if error else f"status {status}"
            continue
        try:
            content = response["body"]["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise InvalidBatchFile(f"{source} line {number}: response.body.choices[0].message.content "
                                   "expected") from None
        if not isinstance(content, str):
            raise InvalidBatchFile(f"{source} line {number}: the message content must be a string")
        replies[custom_id] = content
    return replies, failures


def seen_keys(sidecar: Sidecar, replaced: Iterable[str] = ()) -> set[str]:
    """Keys of the sidecar's questions (examples and boundary) that stay, i.e. not those of ``replaced``."""
    gone = set(replaced)
    kept = [q for pid, questions in sidecar.examples.items() if pid not in gone for q in questions]
    return {key(q) for q in [*kept, *sidecar.not_covered]}


# -- the LLM and the file ---------------------------------------------------------------------
def llm_ask(settings: Settings) -> Ask:
    """An :data:`Ask` through the configured OpenAI-compatible server (``PERSONA_LLM_*``); raises
    :class:`LLMUnavailable` when it is not configured, and from the callable when a call fails."""
    if not settings.llm_base_url or not settings.llm_model:
        raise LLMUnavailable("persona enrich needs an OpenAI-compatible LLM: set PERSONA_LLM_BASE_URL (its base URL, "
                             "ending in /v1) and PERSONA_LLM_MODEL (and PERSONA_LLM_API_KEY if it wants a key)")
    import openai

    url = settings.llm_base_url
    client = openai.OpenAI(base_url=url, api_key=settings.llm_api_key or "not-needed",
                           timeout=settings.llm_timeout, max_retries=0)
    extra = dict(settings.llm_extra_body) if settings.llm_extra_body else None

    def ask(messages: list[dict[str, str]], max_tokens: int) -> str:
        try:
            response = client.chat.completions.create(
                model=settings.llm_model, messages=messages,  # type: ignore[arg-type]
                max_tokens=min(max_tokens, settings.llm_max_tokens), temperature=settings.llm_temperature,
                extra_body=extra)
        except openai.APITimeoutError:
            raise LLMUnavailable(f"the LLM server at {url} did not answer within {settings.llm_timeout:g}s "
                                 "(PERSONA_LLM_TIMEOUT)") from None
        except openai.APIConnectionError:
            raise LLMUnavailable(f"cannot reach the LLM server at {url} (PERSONA_LLM_BASE_URL)") from None
        except openai.APIStatusError as exc:
            raise LLMUnavailable(f"the LLM server at {url} answered {exc.status_code}: {exc.message}") from None
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""

    return ask


def header_of(path: Path) -> str:
    """The leading ``#`` comment lines of a sidecar file, without the ``# `` (kept when it is rewritten)."""
    if not path.is_file():
        return ""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" "))
    return "\n".join(lines)


def write_atomically(path: Path, sidecar: Sidecar, header: str = "") -> None:
    """:func:`write_sidecar` to a temporary file beside ``path``, then renamed over it: a reader sees the
    old file or the new one, never half of one (the file's permissions are kept)."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        write_sidecar(temporary, sidecar, header)
        temporary.chmod(mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
