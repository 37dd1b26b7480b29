"""``persona enrich``: example questions per passage, written by an OpenAI-compatible LLM into the card's sidecar.

For every passage that takes examples (see :func:`takes_examples`) the LLM is asked for questions a
person would type into a chat box that the passage answers, worded unlike the passage. Its reply is
parsed line by line (:func:`parse_questions`) and merged into the sidecar (:func:`merge`): the
questions already there (written by hand or by an earlier run) are kept, and a passage is topped up
to ``per_passage`` questions; ``overwrite`` replaces them instead. ``not_covered`` is never touched.

Parsing and merging are pure; :func:`generate` talks to the LLM only through an :data:`Ask` callable
(:func:`llm_ask` builds the real one), so both are testable without a server.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.examples import MAX_EXAMPLE_CHARS, Sidecar, write_sidecar
from retrieval.errors import LLMUnavailable
from retrieval.settings import Settings
from retrieval.text import strip_markdown
from retrieval.types import Chunk

DEFAULT_PER_PASSAGE = 5
MIN_WORDS, MAX_WORDS = 3, 30

Ask = Callable[[list[dict[str, str]]], str]
"""Chat messages in, the LLM's reply text out (raises :class:`LLMUnavailable` when it cannot answer)."""
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


def prompt_messages(title: str, passage: Chunk, n: int) -> list[dict[str, str]]:
    """The request for ``n`` questions about one passage (one user message: some chat templates have no
    system role)."""
    text = strip_markdown(passage.text).strip()
    return [{"role": "user", "content": (
        f"This passage is from the knowledge card of a {title} ({passage_path(passage)}):\n\n"
        f"<passage>\n{text}\n</passage>\n\n"
        f"Write {n} different questions that someone would type into a chat box when asking a {title} for advice, "
        f"and that this passage answers. Write them the way people type: short, first person, about their own "
        f"situation, in their own words, not the passage's. One question per line, no numbering, nothing else.")}]


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


@dataclass
class Generated:
    """Questions per passage id from :func:`generate`, and a warning per passage the reply gave nothing for."""

    questions: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def generate(title: str, requests: Sequence[tuple[Chunk, int]], ask: Ask, seen: Iterable[str] = (),
             progress: Progress | None = None) -> Generated:
    """Ask for each passage's questions (``requests`` from :func:`wanted`), parse them, at most the number
    asked for each; a question is never repeated across the card nor one of ``seen`` (keys)."""
    known = set(seen)
    result = Generated()
    for done, (passage, n) in enumerate(requests, start=1):
        reply = ask(prompt_messages(title, passage, n))
        questions = parse_questions(reply, passage.embed_text + "\n" + strip_markdown(passage.text), known)[:n]
        known.update(key(q) for q in questions)
        result.questions[passage.id] = questions
        if not questions:
            result.warnings.append(f"{passage.id}: the LLM's reply held no usable question; nothing added")
        if progress is not None:
            progress("asking the LLM", done, len(requests))
    return result


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

    def ask(messages: list[dict[str, str]]) -> str:
        try:
            response = client.chat.completions.create(
                model=settings.llm_model, messages=messages,  # type: ignore[arg-type]
                max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature, extra_body=extra)
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
