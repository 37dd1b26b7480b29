"""How the API runs a question: on the event loop, its embedding awaited from the batcher.

A question's own Python work (the search and the extractive answer, about a millisecond) runs on the event loop,
where no other thread runs the same kind of work and takes the GIL from it; the embedding (onnxruntime, which
releases the GIL) runs in the batcher's threads and is awaited as a future. So a new question crosses threads once
(to the batcher and back) and a question whose embedding is cached not at all, where the thread pool made four
crossings of each (event loop, worker thread, batcher, worker thread, event loop).

:func:`run` does it with the service's synchronous methods as they are: inside
:func:`retrieval.nonblocking.no_blocking` what would wait raises ``WouldBlock`` (before any result is made), the
embedding is awaited and the call made again, now finding the vectors in the cache. What cannot be awaited (a
persona's indexes still to load, an embedder without a batcher) runs in a worker thread as before, and so does a
call that may wait on the network: an LLM generator, or an LLM condensing a follow-up (:func:`answers_inline`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool
from starlette.concurrency import iterate_in_threadpool

from generation import condense
from generation.service import PersonaService
from retrieval.conversation import History
from retrieval.errors import PersonaError
from retrieval.nonblocking import WouldBlock, no_blocking

T = TypeVar("T")
MAX_WAITS = 3
"""Embeddings a call may await before it goes to a worker thread (a question waits once, a follow-up once for its
two searches, an answer whose card sentences are not embedded yet once more)."""


async def run(call: Callable[[], T], inline: bool = True) -> T:
    """``call()`` on the event loop, each embedding it waits for awaited (then it is called again); in a worker
    thread when it would wait for anything else, when ``inline`` is false, or after :data:`MAX_WAITS` waits."""
    if inline:
        for _ in range(MAX_WAITS):
            try:
                with no_blocking():
                    return call()
            except WouldBlock as wait:
                if wait.future is None:
                    break
                future = wait.future
            # shielded: a client that goes away cancels its request, never the batch others wait for
            await asyncio.shield(asyncio.wrap_future(future))
    return await run_in_threadpool(call)


def answers_inline(service: PersonaService, generator: str | None, history: History | None = None) -> bool:
    """Whether an answer may be made on the event loop: its generator waits on nothing (``cpu_only``, the
    extractive one), and no LLM is asked to condense a follow-up. An unknown generator is refused there at once."""
    try:
        made = service.generators.resolve(generator)
    except PersonaError:
        return True
    return bool(getattr(made, "cpu_only", False)) and not (history and condense.enabled(service.settings))


async def started(make: Callable[[], Iterator[T]], inline: bool) -> AsyncIterator[T]:
    """The items of ``make()`` as an async iterator whose first item is already made, so that an error before it
    raises here, before any response starts. ``inline``: every item made by :func:`run` at once (an answer that
    waits on nothing is streamed word by word from memory); otherwise one worker-thread step per item."""
    if inline:
        return _from(await run(lambda: list(make())))
    produced = make()
    first = await run_in_threadpool(next, produced, None)
    return iterate_in_threadpool(itertools.chain([first] if first is not None else [], produced))


async def _from(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item
