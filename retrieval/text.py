"""Small pure text helpers shared by answering and evaluation."""

from __future__ import annotations

import re

_EMPHASIS = re.compile(r"(\*\*|__|\*|`)(?P<inner>.+?)\1")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s+(?=[\"“(*]?[A-Z0-9])")
_BOLD_LEAD = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])?\s*\*\*(?P<title>.+?)\*\*\s*[—–:-]?\s*", re.DOTALL)
_ABBREVIATIONS = ("vs.", "e.g.", "i.e.", "etc.", "Mr.", "Ms.", "Dr.", "approx.", "incl.")
MARKER = re.compile(r"\[(\d{1,3})\]")
# A character that is not blank in Python (str.isspace) nor in JSON Schema / ECMAScript (\s): the
# OpenAPI ``pattern`` of text fields and the core's own check agree on what "blank" means.
VISIBLE = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"


def is_blank(text: str) -> bool:
    """True when the text has no visible character (by both Python's and JSON Schema's idea of space)."""
    return re.search(VISIBLE, text) is None


def strip_markdown(text: str) -> str:
    """Emphasis and list markers removed, whitespace collapsed to single spaces."""
    text = _LIST_MARKER.sub("", text)
    text = _EMPHASIS.sub(lambda m: m.group("inner"), text)
    return re.sub(r"\s+", " ", text).strip()


def split_bold_lead(text: str) -> tuple[str | None, str]:
    """``**Title.** Body`` -> ("Title", "Body"); text without a bold lead -> (None, text)."""
    match = _BOLD_LEAD.match(text)
    if not match:
        return None, text
    return match.group("title").strip().rstrip(".:").strip(), text[match.end():]


def sentences(text: str) -> list[str]:
    """Split plain text into sentences; abbreviations such as "vs." do not end a sentence."""
    text = strip_markdown(text)
    if not text:
        return []
    parts = _SENTENCE_END.split(text)
    merged: list[str] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if merged and merged[-1].endswith(_ABBREVIATIONS):
            merged[-1] = f"{merged[-1]} {part}"
        else:
            merged.append(part)
    return merged


def question_of(text: str, limit: int) -> str:
    """A chat message as a query: all of it (whitespace collapsed) within ``limit`` characters; a longer
    one by its last question (the last sentence ending in "?"), else by its last sentences that fit,
    else by the end of its last sentence, cut at a word."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    parts = _SENTENCE_END.split(text)
    asked = [p for p in parts if p.rstrip("\"'”’)").endswith("?") and len(p) <= limit]
    if asked:
        return asked[-1]
    kept: list[str] = []
    for sentence in reversed(parts):
        if len(" ".join([sentence, *kept])) > limit:
            break
        kept.insert(0, sentence)
    if kept:
        return " ".join(kept)
    tail = text[-limit:]
    return tail.split(" ", 1)[1] if " " in tail else tail


def markers(text: str) -> list[int]:
    """The ``[n]`` citation markers in a text, in order of appearance (repeats kept)."""
    return [int(m) for m in MARKER.findall(text)]


def passage_sentences(text: str) -> list[str]:
    """A passage's sentences as the extractive composer scores them: line by line, a bold lead set aside,
    markdown stripped."""
    return [strip_markdown(s) for block in text.splitlines() for s in sentences(split_bold_lead(block)[1])]


def normalise_sentence(text: str) -> str:
    """A key for spotting repeated sentences: lower case letters and digits only."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
