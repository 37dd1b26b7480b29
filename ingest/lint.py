"""Lint: card text that is valid but suspicious. A card is data; text in it that reads like
instructions to a model ("ignore your previous instructions ...") or like live HTML/script is
indexed as plain text, quoted only as a citation, and reported as a warning by ``persona ingest``
so that a person can look at it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ingest.cards import Card

_INSTRUCTION_PATTERNS = (
    (r"\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}?\b(?:instructions?|prompts?|rules|guidelines"
     r"|directives?|guardrails)\b"),
    r"\bsystem\s+prompt\b",
    r"\byou\s+are\s+(?:now|no\s+longer)\b",
    r"\bfrom\s+now\s+on\b[^.\n]{0,40}?\b(?:you|respond|answer|act)\b",
    r"\b(?:new|updated|real)\s+instructions?\s*:",
    r"\b(?:jailbreak|developer\s+mode|DAN\s+mode)\b",
    r"<\|?(?:im_start|im_end|system|endoftext)\|?>",
    r"^\s*(?:system|assistant)\s*:",
)
INSTRUCTION_LIKE = re.compile("|".join(_INSTRUCTION_PATTERNS), re.IGNORECASE | re.MULTILINE)
MARKUP = re.compile(
    r"<\s*/?\s*(?:script|iframe|object|embed|style|img|svg|form|input|link|meta|base|a)\b[^>]*>"
    r"|\bon[a-z]+\s*=\s*[\"']?|\bjavascript\s*:",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LintWarning:
    """One suspicious passage: the file, the field it is in, and what it looks like."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: field '{self.field}': {self.message}"


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}.{index}")


def _excerpt(text: str, match: re.Match[str]) -> str:
    start, end = max(0, match.start() - 10), min(len(text), match.end() + 10)
    return " ".join(text[start:end].split())


def lint_card(card: Card, source: str) -> list[LintWarning]:
    """Warnings for instruction-like text and HTML/script markup anywhere in the card."""
    warnings = []
    for field, text in _strings(card.model_dump(mode="json"), ""):
        found = INSTRUCTION_LIKE.search(text)
        if found:
            warnings.append(LintWarning(source, field, "text reads like instructions to a model "
                                        f"({_excerpt(text, found)!r}); it is indexed and quoted as data only"))
        found = MARKUP.search(text)
        if found:
            warnings.append(LintWarning(source, field, f"HTML/script markup ({_excerpt(text, found)!r}); "
                                        "it is stored and returned as plain text, never rendered by the API"))
    return warnings
