"""Load occupation cards from YAML and validate them with pydantic.

A card that fails is rejected with :class:`retrieval.errors.InvalidCard`, naming the file, the
field and what was expected.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrieval.errors import InvalidCard

MAX_CARD_BYTES = 2 * 1024 * 1024
MAX_SECTIONS = 200
SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


class Related(BaseModel):
    slug: str
    type: str | None = None
    note: str | None = None


class Source(BaseModel):
    title: str
    kind: str | None = None


class Section(BaseModel):
    model_config = ConfigDict(extra="ignore")

    heading: str = Field(min_length=1, max_length=200)
    markdown: str = Field(min_length=1, max_length=100_000)

    @field_validator("heading", "markdown")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class Card(BaseModel):
    """An occupation card. Unknown top-level keys are kept out; known ones are type-checked."""

    model_config = ConfigDict(extra="ignore")

    title: str = Field(min_length=1, max_length=200)
    slug: str = Field(pattern=SLUG_PATTERN, max_length=100)
    aliases: list[str] = Field(default_factory=list)
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    difficulty: str | None = None
    summary: str = ""
    contributors: list[str] = Field(default_factory=list)
    last_reviewed: dt.date | str | None = None
    provenance: str | None = None
    created: dt.date | str | None = None
    updated: dt.date | str | None = None
    related: list[Related] = Field(default_factory=list)
    specializations: list[str] = Field(default_factory=list)
    country_variants: list[Any] = Field(default_factory=list)
    sources: list[Source] = Field(default_factory=list)
    status: str | None = None
    reviewers: list[str] = Field(default_factory=list)
    sections: list[Section] = Field(min_length=1, max_length=MAX_SECTIONS)

    @model_validator(mode="after")
    def unique_headings(self) -> Card:
        seen: set[str] = set()
        for index, section in enumerate(self.sections):
            key = section.heading.strip().lower()
            if key in seen:
                raise ValueError(f"sections.{index}.heading: duplicate heading {section.heading!r}")
            seen.add(key)
        return self

    def section(self, heading: str) -> Section | None:
        for section in self.sections:
            if section.heading.strip().lower() == heading.lower():
                return section
        return None


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(card)"


def _describe(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "missing":
        return "is required but missing"
    return message[0].lower() + message[1:] if message else "invalid value"


def parse_card(data: Any, source: str) -> Card:
    """Validate already-parsed YAML data as a card; ``source`` names the file in errors."""
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "an empty document"
        raise InvalidCard(source, "(card)", f"expected a mapping of card fields, got {kind}")
    try:
        return Card.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        message = _describe(first)
        if not loc and ":" in message:  # model-level validator: "field: message"
            field, _, rest = message.partition(":")
            raise InvalidCard(source, field.strip(), rest.strip()) from None
        raise InvalidCard(source, _field_path(loc), message) from None


MAX_YAML_DEPTH = 50


class _CardLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` made strict for untrusted cards: no aliases (no "billion laughs"),
    no duplicate keys (the last one would silently win), no nesting deeper than
    :data:`MAX_YAML_DEPTH` (no recursion blow-up)."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in cards", mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: PyYAML reports it below
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: Exception) -> str:
    """What was wrong with the YAML, and where, in one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"expected YAML text, {exc.reason} (character #x{exc.character:04x} at offset {exc.position})"
    problem = getattr(exc, "problem", None) or str(exc)  # a constructor's ValueError: a bad date
    return f"expected YAML, {problem}{where}"


def read_card_text(path: Path) -> str:
    """The text of a card file: at most :data:`MAX_CARD_BYTES` of UTF-8, else :class:`InvalidCard`."""
    source = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidCard(source, "(file)", f"cannot be read: {exc.strerror}") from None
    _check_size(size, source)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCard(source, "(file)", f"expected UTF-8 text, got a bad byte at offset {exc.start}") from None
    except OSError as exc:
        raise InvalidCard(source, "(file)", f"cannot be read: {exc.strerror}") from None


def _check_size(size: int, source: str) -> None:
    if size > MAX_CARD_BYTES:
        raise InvalidCard(source, "(file)", f"expected at most {MAX_CARD_BYTES} bytes, got {size}")


def card_of(text: str, source: str) -> Card:
    """Validate a card's text (a file's, or one sent to a server); ``source`` names the file in errors."""
    _check_size(len(text.encode("utf-8", "surrogatepass")), source)
    try:
        data = yaml.load(text, Loader=_CardLoader)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise InvalidCard(source, "(file)", _yaml_problem(exc)) from None
    return parse_card(data, source)


def load_card(path: Path) -> Card:
    """Read and validate one card file."""
    return card_of(read_card_text(path), str(path))


EXAMPLES_SUFFIX = ".examples"
"""``<slug>.examples.yaml`` beside a card holds its example questions (a sidecar, not a card)."""


def is_sidecar(path: Path) -> bool:
    return path.stem.endswith(EXAMPLES_SUFFIX)


BUILTIN_CARDS = Path(__file__).resolve().parent / "builtin"
"""The built-in example, shipped inside the package: the Sales Manager card and its sidecar. In a checkout the
files are links to ``seeds/`` (the one copy in git); a wheel carries the files themselves."""
SEEDS = Path("seeds")
"""The cards folder of the current directory, used when ``PERSONA_SEEDS_DIR`` is not set."""


def default_cards(seeds_dir: Path | None) -> Path:
    """The cards to ingest when none are named: ``seeds_dir`` when set, else ``./seeds`` when it exists,
    else the built-in example (:data:`BUILTIN_CARDS`), so that the installed package serves a persona anywhere."""
    if seeds_dir is not None:
        return seeds_dir
    return SEEDS if SEEDS.is_dir() else BUILTIN_CARDS


def find_cards(paths: list[Path]) -> list[Path]:
    """Expand files and directories into the sorted list of card files (*.yaml, *.yml, sidecars left out)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir()
                                if p.suffix in {".yaml", ".yml"} and p.is_file() and not is_sidecar(p)))
        elif path.exists():
            found.append(path)
        else:
            raise InvalidCard(str(path), "(file)", "does not exist")
    return found
