"""The one rendering of an answer's "Sources" list, shared by chat replies, MCP and the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from retrieval.types import Answer, Citation


def sources_block(citations: Sequence[Citation], with_ids: bool = False) -> str:
    """``\\n\\nSources:\\n- [1] Vocabulary › OTE`` (with ``(chunk id)`` after each when ``with_ids``);
    empty when nothing is cited."""
    if not citations:
        return ""
    lines = [f"- [{c.n}] {c.path}" + (f" ({c.id})" if with_ids else "") for c in citations]
    return "\n\nSources:\n" + "\n".join(lines)


def with_sources(answer: Answer, with_ids: bool = False) -> str:
    """The answer's text, then its Sources list."""
    return answer.text + sources_block(answer.citations, with_ids)
