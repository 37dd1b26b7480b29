"""A named set of interchangeable parts (generators, retrieval presets), the first one the default."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from retrieval.errors import PersonaError

T = TypeVar("T")


@dataclass(frozen=True)
class Registry(Mapping[str, T], Generic[T]):
    """Name -> part, in registration order; :meth:`resolve` names the missing one and lists the others."""

    kind: str  # what the parts are, for error messages: "generator", "retrieval preset"
    parts: Mapping[str, T]
    error: Callable[[str], PersonaError]  # the domain error an unknown name raises

    def __getitem__(self, name: str) -> T:
        return self.parts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def default(self) -> str:
        """The first registered name: used when none is asked for."""
        return next(iter(self.parts))

    def name(self, name: str | None) -> str:
        """``name`` when registered (the default when empty); raises the registry's error otherwise."""
        name = name or self.default
        if name not in self.parts:
            raise self.error(f"unknown {self.kind} {name!r}; available: {', '.join(self.parts)}")
        return name

    def resolve(self, name: str | None) -> T:
        return self.parts[self.name(name)]
