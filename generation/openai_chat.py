"""The ``openai`` generator: fluent answers from any OpenAI-compatible LLM, citations enforced.

The LLM (a hosted API, vLLM, Ollama, a llama.cpp server) gets a system prompt built from the
card (who I am, core mission, guiding principles, how I speak) and the retrieved passages as
numbered, delimited sources that are data, never instructions. Its reply is then checked:

- citation markers that point to no source are removed (as the tokens stream, so what a client
  saw is what the final answer says) and reported in ``warnings``;
- every sentence's support by the source it cites is scored with the shared judge
  (:mod:`generation.support`); unsupported and uncited sentences are reported in ``warnings``;
- a reply with no valid citation left, an upstream error or a timeout falls back to the
  extractive answer: ``generator`` is then ``"extractive"`` and the one warning says
  ``"openai generator fell back: <reason>"`` (the rejected draft's other problems are not listed).

A question the card does not cover is answered with the usual honest "not covered" without
asking the LLM to improvise.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from generation.base import Context
from generation.extractive import extractive_answer, not_covered
from generation.prompts import system_prompt
from generation.support import SUPPORT_THRESHOLD, cited_sentences, support_score
from retrieval.errors import GeneratorUnavailable
from retrieval.settings import Settings
from retrieval.types import Answer, AnswerEvent, Citation, Hit, PersonaInfo

if TYPE_CHECKING:
    import openai

GENERATOR = "openai"
FALLBACK = "openai generator fell back: "

# A citation group as models write it: [3], [1, 2], [1; 4], [Source 2]. Leading whitespace belongs to it.
_GROUP = re.compile(r"(?P<space>\s*)\[(?P<body>(?:source\s*)?\d{1,3}(?:\s*[,;]\s*(?:source\s*)?\d{1,3})*)\]",
                    re.IGNORECASE)
# What may still become a group: trailing whitespace, then an unclosed bracket (held back while streaming).
_PENDING = re.compile(r"\s*(?:\[[^\]\n]{0,40})?\Z")
_DELIMITER = re.compile(r"</?\s*sources?\b[^>]*>", re.IGNORECASE)


# -- the prompt -------------------------------------------------------------------------------
def sources_prompt(hits: Sequence[Hit]) -> str:
    """The retrieved passages as numbered, delimited sources (delimiters inside a text are removed)."""
    blocks = []
    for n, hit in enumerate(hits, start=1):
        text = _DELIMITER.sub(" ", hit.text)
        blocks.append(f'<source id="{n}" title="{hit.path}">\n{text}\n</source>')
    return "\n".join(blocks)


def prompt_messages(info: PersonaInfo, question: str, hits: Sequence[Hit], instructions: str = "") -> list[dict]:
    user = (f"<sources>\n{sources_prompt(hits)}\n</sources>\n\n"
            f"Question: {question}\n\nAnswer in my voice, citing [n] after every claim.")
    return [{"role": "system", "content": system_prompt(info, instructions)}, {"role": "user", "content": user}]


# -- enforcement (pure) -----------------------------------------------------------------------
def fix_markers(text: str, sources: int) -> tuple[str, list[int]]:
    """Citation groups rewritten as ``[n][m]``; numbers outside 1..``sources`` dropped and returned.

    A group left with no valid number disappears with the whitespace before it.
    """
    dropped: list[int] = []

    def rewrite(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", match.group("body"))]
        keep = [n for n in numbers if 1 <= n <= sources]
        dropped.extend(n for n in numbers if n not in keep)
        return match.group("space") + "".join(f"[{n}]" for n in keep) if keep else ""

    return _GROUP.sub(rewrite, text), dropped


class StreamFixer:
    """:func:`fix_markers` applied to a stream of tokens: emits text as soon as it cannot change.

    Trailing whitespace and an unclosed ``[...`` are held back until they resolve, so the
    concatenated output equals ``fix_markers(whole)[0].strip()``.
    """

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.raw = ""
        self.emitted = ""

    def feed(self, token: str) -> str:
        self.raw += token
        stable = self.raw[:_PENDING.search(self.raw).start()]
        return self._advance(fix_markers(stable, self.sources)[0].lstrip())

    def close(self) -> str:
        return self._advance(self.text())

    def text(self) -> str:
        return fix_markers(self.raw, self.sources)[0].strip()

    def _advance(self, fixed: str) -> str:
        delta = fixed[len(self.emitted):] if fixed.startswith(self.emitted) else ""
        self.emitted += delta
        return delta


def quote(text: str, limit: int = 160) -> str:
    """A sentence for a warning: whitespace collapsed, cut at ``limit`` characters, in quotes."""
    text = " ".join(text.split())
    return f"“{text if len(text) <= limit else text[:limit - 1] + '…'}”"


@dataclass(frozen=True)
class Checked:
    """A reply after enforcement: its citations, what to warn about, and why it cannot stand (if so)."""

    citations: list[Citation]
    warnings: list[str] = field(default_factory=list)
    failure: str | None = None


def check(text: str, hits: Sequence[Hit], dropped: Sequence[int] = (),
          threshold: float = SUPPORT_THRESHOLD) -> Checked:
    """Score every sentence of a (marker-fixed) reply against the sources it cites."""
    warnings = []
    if dropped:
        warnings.append("removed citation markers that point to no source: "
                        + ", ".join(f"[{n}]" for n in dropped))
    if not text.strip():
        return Checked([], warnings, "the LLM returned an empty answer")
    used: set[int] = set()
    for sentence in cited_sentences(text):
        valid = [n for n in sentence.markers if 1 <= n <= len(hits)]
        if not valid:
            warnings.append(f"sentence without a citation: {quote(sentence.text)}")
            continue
        used.update(valid)
        score = max(support_score(sentence.text, hits[n - 1].text) for n in valid)
        if score < threshold:
            cited = ", ".join(f"[{n}]" for n in valid)
            warnings.append(f"sentence not supported by its source {cited} (support {score:.2f}): "
                            f"{quote(sentence.text)}")
    if not used:
        removed = f" (removed {', '.join(f'[{n}]' for n in dropped)}: no such source)" if dropped else ""
        return Checked([], warnings, "no valid citation in the answer" + removed)
    citations = [Citation.of(n, hits[n - 1]) for n in sorted(used)]
    return Checked(citations, warnings)


# -- the LLM call -----------------------------------------------------------------------------
def require_config(settings: Settings) -> None:
    if not settings.llm_base_url or not settings.llm_model:
        raise GeneratorUnavailable("the openai generator needs PERSONA_LLM_BASE_URL and PERSONA_LLM_MODEL")


def llm_client(settings: Settings) -> openai.OpenAI:
    """An ``openai`` client for the configured server; raises when the generator is not configured."""
    require_config(settings)
    import openai

    return openai.OpenAI(base_url=settings.llm_base_url, api_key=settings.llm_api_key or "not-needed",
                         timeout=settings.llm_timeout, max_retries=0)


def llm_tokens(settings: Settings, messages: list[dict]) -> Iterator[str]:
    """The LLM's reply, token by token. Raises ``TimeoutError`` past ``llm_timeout`` in total,
    ``openai.APIError`` subclasses for upstream failures."""
    client = llm_client(settings)
    deadline = time.monotonic() + settings.llm_timeout
    extra = dict(settings.llm_extra_body) if settings.llm_extra_body else None
    with client.chat.completions.create(model=settings.llm_model, messages=messages, stream=True,
                                        max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature,
                                        extra_body=extra) as stream:
        for chunk in stream:
            if time.monotonic() > deadline:
                raise TimeoutError
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content


def failure_reason(exc: Exception, settings: Settings) -> str:
    """A short, user-readable reason for an upstream failure."""
    import openai

    if isinstance(exc, TimeoutError | openai.APITimeoutError):
        return f"the LLM did not answer within {settings.llm_timeout:g}s (PERSONA_LLM_TIMEOUT)"
    if isinstance(exc, openai.APIStatusError):
        return f"the LLM server answered {exc.status_code}: {exc.message}"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the LLM server at {settings.llm_base_url}"
    return f"upstream error: {exc}"


# -- the generator ----------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenAIChat:
    """Any OpenAI-compatible chat server, its reply checked; streams the LLM's tokens as they come."""

    name: str = GENERATOR

    def answer(self, context: Context) -> Answer:
        """The whole checked answer (the stream, consumed)."""
        return _last(self.stream(context))

    def stream(self, context: Context) -> Iterator[AnswerEvent]:
        """The LLM's tokens as they come (invalid markers removed), then the checked answer."""
        settings = context.settings
        require_config(settings)
        info, question, hits = context.info, context.question, list(context.hits)
        if not context.covered:
            yield from _whole(not_covered(info, question, hits, self.name))
            return
        import openai

        messages = prompt_messages(info, question, hits, context.instructions)
        fixer = StreamFixer(len(hits))
        failure = None
        try:
            for token in llm_tokens(settings, messages):
                delta = fixer.feed(token)
                if delta:
                    yield AnswerEvent("delta", delta)
        except (TimeoutError, openai.APIError) as exc:
            failure = failure_reason(exc, settings)
        tail = fixer.close()
        if tail and failure is None:
            yield AnswerEvent("delta", tail)
        answer = finish(context, fixer.text(), fix_markers(fixer.raw, len(hits))[1], failure)
        yield AnswerEvent("answer", answer.text, answer)


def finish(context: Context, text: str, dropped: Sequence[int], failure: str | None) -> Answer:
    """The checked LLM answer, or the extractive one with the reason it fell back."""
    info, question, hits = context.info, context.question, list(context.hits)
    checked = check(text, hits, dropped) if failure is None else Checked([], [], failure)
    if checked.failure is None:
        return Answer(info.slug, question, text, checked.citations, True, GENERATOR, hits=hits,
                      warnings=checked.warnings, confidence=context.confidence)
    fallback = extractive_answer(info, question, hits, context.similarity, context.settings.min_score,
                                 context.confidence)
    return dataclasses.replace(fallback, warnings=[FALLBACK + checked.failure])


def _whole(answer: Answer) -> Iterator[AnswerEvent]:
    if answer.text:
        yield AnswerEvent("delta", answer.text)
    yield AnswerEvent("answer", answer.text, answer)


def _last(events: Iterator[AnswerEvent]) -> Answer:
    answer = None
    for event in events:
        answer = event.answer or answer
    assert answer is not None
    return answer
