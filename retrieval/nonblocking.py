"""The request path run on an event loop: what would block there raises :class:`WouldBlock` instead.

The server runs a question's synchronous path (search and answer, pure Python and numpy) on its event loop
inside :func:`no_blocking`: that path is the only CPU-bound Python of a request, and one thread running it never
hands the GIL to another to do the same work. Where the path would wait (an embedding not in the cache, a
persona's indexes not loaded yet) it raises :class:`WouldBlock` instead: the caller awaits ``future`` (the
embedding, from the batcher's thread) and runs the path again, which then finds what it waited for; or, when
there is nothing to await, runs the path once more in a worker thread, where blocking is fine.

Outside :func:`no_blocking` (the CLI, eval, tests, worker threads) nothing changes: the path blocks as it
always did.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from concurrent.futures import Future

_ON_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("persona_no_blocking", default=False)


class WouldBlock(BaseException):
    """The path would have to wait here. ``future`` completes when what it waits for is ready (``None``: nothing
    to await; run the path where it may block).

    A ``BaseException``, as :class:`GeneratorExit` is: the path's ``except Exception`` clauses (which turn a
    store's failure into a domain error, for one) must let it through untouched.
    """

    def __init__(self, reason: str, future: Future | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.future = future


@contextlib.contextmanager
def no_blocking() -> Iterator[None]:
    """Within the block (on this thread and context), what would block raises :class:`WouldBlock`."""
    token = _ON_LOOP.set(True)
    try:
        yield
    finally:
        _ON_LOOP.reset(token)


def blocking_allowed() -> bool:
    """Whether the code running now may wait (everywhere but inside :func:`no_blocking`)."""
    return not _ON_LOOP.get()
