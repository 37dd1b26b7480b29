"""The vector store: the only module that imports chromadb.

Layout inside Chroma:

* ``persona_registry``: one record per persona (id = slug) whose metadata points at the persona's
  live collection and carries its :class:`PersonaInfo` as JSON.
* ``p-<slug>-<version>``: one collection per published version of a persona's chunks.

Publishing builds a complete new collection, then switches the registry pointer with one upsert,
then drops the old collection: a reader sees the old index or the new one, never a mix or an
empty one. Collections no pointer refers to (an ingest killed midway) are swept on the next
publish. On the embedded index each version also has a serving copy, a file the chunks are read from
(:mod:`retrieval.snapshot`: Chroma keeps memory for every collection a process reads).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from retrieval import snapshot
from retrieval.errors import IndexUnavailable, UnknownPersona
from retrieval.settings import Settings
from retrieval.types import PASSAGE_KINDS, Chunk, PersonaInfo

log = logging.getLogger(__name__)

REGISTRY = "persona_registry"
WRITE_BATCH = 500
POINTER_TTL = 1.0  # seconds a registry read is reused by the query path (ingest always reads afresh)
_UNIT = [1.0]  # registry records carry a placeholder vector; they are looked up by id only


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as the index holds it: id, metadata and (when asked for) its embedding."""

    id: str
    metadata: dict[str, Any]
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class Match:
    """One nearest neighbour: the stored chunk's id and metadata, and the cosine distance."""

    id: str
    metadata: dict[str, Any]
    distance: float


def _chroma_settings():
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def _collection_name(slug: str) -> str:
    return f"p-{slug}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"[:500]


class Store:
    """Chroma behind the few operations the service needs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = None
        self._lock = threading.Lock()
        self._collections: dict[str, Any] = {}
        self._counts: dict[str, int] = {}  # published collections never change, nor do their sizes
        self._recent: tuple[float, dict[str, dict[str, Any]]] | None = None

    # -- connection ---------------------------------------------------------------------------
    @property
    def location(self) -> str:
        return self.settings.chroma_url or str(self.settings.data_dir / "chroma")

    def _connect(self):
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        import chromadb

        url = self.settings.chroma_url
        try:
            if url:
                parsed = urlparse(url if "://" in url else f"http://{url}")
                client = chromadb.HttpClient(
                    host=parsed.hostname or "localhost",
                    port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                    ssl=parsed.scheme == "https",
                    settings=_chroma_settings(),
                )
                client.heartbeat()
            else:
                path = self.settings.data_dir / "chroma"
                path.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=str(path), settings=_chroma_settings())
        except Exception as exc:
            raise IndexUnavailable(f"cannot open the index at {self.location}: {exc}") from exc
        return client

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def ping(self) -> None:
        """Raise :class:`IndexUnavailable` when the index cannot be reached."""
        try:
            self.client.heartbeat()
            self._registry()
        except IndexUnavailable:
            raise
        except Exception as exc:
            raise IndexUnavailable(f"the index at {self.location} does not answer: {exc}") from exc

    def _registry(self):
        return self.client.get_or_create_collection(REGISTRY, embedding_function=None)

    def _collection(self, name: str):
        cached = self._collections.get(name)
        if cached is None:
            cached = self.client.get_collection(name, embedding_function=None)
            self._collections[name] = cached
        return cached

    # -- registry -----------------------------------------------------------------------------
    def _pointers(self, slugs: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        try:
            got = self._registry().get(ids=list(slugs) if slugs is not None else None, include=["metadatas"])
        except Exception as exc:
            raise IndexUnavailable(f"cannot read the index at {self.location}: {exc}") from exc
        return {pid: dict(meta or {}) for pid, meta in zip(got["ids"], got["metadatas"] or [], strict=False)}

    def _live_pointers(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """The registry for the query path: one read serves the queries of the next ``POINTER_TTL`` s.

        This store's own writes clear it; another process's publish is seen within the TTL, and a
        query that meets a collection dropped meanwhile retries with a fresh read.
        """
        recent = self._recent
        if fresh or recent is None or time.monotonic() - recent[0] > POINTER_TTL:
            recent = (time.monotonic(), self._pointers())
            self._recent = recent
        return recent[1]

    def personas(self) -> list[PersonaInfo]:
        """Every published persona, sorted by slug."""
        pointers = self._live_pointers()
        return [PersonaInfo.from_dict(json.loads(p["info"])) for _, p in sorted(pointers.items())]

    def persona(self, slug: str) -> PersonaInfo | None:
        pointer = self._live_pointers().get(slug)
        return PersonaInfo.from_dict(json.loads(pointer["info"])) if pointer else None

    def pointer(self, slug: str) -> dict[str, Any] | None:
        """The registry record of a persona: live collection name, model, info JSON."""
        return self._pointers([slug]).get(slug)

    # -- reading ------------------------------------------------------------------------------
    def chunks(self, slug: str, with_embeddings: bool = False) -> list[StoredChunk]:
        """All stored chunks of a persona (empty when it is not published): from its version's serving copy
        (:mod:`retrieval.snapshot`) when there is one, else from Chroma. A version switched and dropped between the
        pointer's read and the chunks' is read again at the new pointer."""
        for attempt in (1, 2):
            pointer = self.pointer(slug)
            if not pointer:
                return []
            try:
                return self._read_version(pointer["collection"], with_embeddings)
            except Exception as exc:
                if attempt == 2 or self.pointer(slug) == pointer:
                    raise IndexUnavailable(f"cannot read persona {slug!r} from {self.location}: {exc}") from exc
        return []  # not reached

    def _read_version(self, name: str, with_embeddings: bool) -> list[StoredChunk]:
        copy = self._snapshot_path(name)
        if copy is not None and copy.is_file():
            try:
                found = snapshot.read(copy, with_embeddings)
                vectors = found.vectors
                return _by_position([StoredChunk(cid, meta, vectors[i] if vectors is not None else None)
                                     for i, (cid, meta) in enumerate(zip(found.ids, found.metadatas, strict=True))])
            except (OSError, ValueError, KeyError) as exc:  # dropped meanwhile, or damaged: Chroma has it
                log.warning("serving copy %s unreadable (%s); reading the collection", copy, exc)
        include = ["metadatas", "embeddings"] if with_embeddings else ["metadatas"]
        got = self._collection(name).get(include=include)
        embeddings = got.get("embeddings") if with_embeddings else None
        out = []
        for index, (cid, meta) in enumerate(zip(got["ids"], got["metadatas"] or [], strict=False)):
            vector = np.asarray(embeddings[index], dtype=np.float32) if embeddings is not None else None
            out.append(StoredChunk(cid, dict(meta or {}), vector))
        return _by_position(out)

    def _snapshot_path(self, name: str) -> Path | None:
        """Where the serving copy of version ``name`` lives; ``None`` on a Chroma server, which other hosts write to."""
        return None if self.settings.chroma_url else snapshot.path_of(self.settings.data_dir, name)

    def query(self, slug: str, vector: np.ndarray, k: int, sections: Sequence[str] | None = None) -> list[Match]:
        """The ``k`` nearest passages of a persona (the card's own text, not its sidecar's questions),
        optionally only from some sections.

        Raises :class:`UnknownPersona` when the persona is not (or no longer) published.
        """
        where: dict[str, Any] = {"kind": {"$in": sorted(PASSAGE_KINDS)}}
        if sections:
            where = {"$and": [where, {"section": {"$in": list(sections)}}]}
        for attempt in (1, 2):
            pointers = self._live_pointers(fresh=attempt == 2)
            pointer = pointers.get(slug)
            if not pointer:
                raise UnknownPersona(slug, sorted(pointers))
            name = pointer["collection"]
            try:
                collection = self._collection(name)
                if name not in self._counts:
                    self._counts[name] = collection.count()
                got = collection.query(query_embeddings=[np.asarray(vector, dtype=np.float32).tolist()],
                                       n_results=max(1, min(k, self._counts[name])), where=where,
                                       include=["metadatas", "distances"])
                break
            except Exception as exc:  # the collection was swapped between pointer read and query
                self._collections.pop(name, None)
                self._counts.pop(name, None)
                if attempt == 2:
                    raise IndexUnavailable(f"cannot query the index at {self.location}: {exc}") from exc
        ids, metas, dists = got["ids"][0], got["metadatas"][0], got["distances"][0]
        return [Match(i, dict(m or {}), float(d)) for i, m, d in zip(ids, metas, dists, strict=False)]

    # -- writing ------------------------------------------------------------------------------
    def publish(self, info: PersonaInfo, chunks: Sequence[Chunk], vectors: np.ndarray, model: str,
                on_batch: Any = None) -> str:
        """Write a complete new version of a persona, then switch the pointer to it atomically."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk expected")
        old = self.pointer(info.slug)
        name = _collection_name(info.slug)
        try:
            collection = self.client.create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
                metadata={"persona": info.slug, "model": model},
            )
            for start in range(0, len(chunks), WRITE_BATCH):
                batch = chunks[start:start + WRITE_BATCH]
                collection.add(
                    ids=[c.id for c in batch],
                    embeddings=vectors[start:start + WRITE_BATCH].astype(np.float32).tolist(),
                    documents=[c.embed_text for c in batch],
                    metadatas=[c.metadata() for c in batch],
                )
                if on_batch:
                    on_batch(len(batch))
            copy = self._snapshot_path(name)
            if copy is not None:
                snapshot.write(copy, [c.id for c in chunks], [c.metadata() for c in chunks], vectors)
            self._registry().upsert(
                ids=[info.slug], embeddings=[_UNIT], documents=[info.slug],
                metadatas=[{"collection": name, "model": model, "info": json.dumps(info.to_dict())}],
            )
            self._recent = None
        except Exception as exc:
            self._drop(name)
            raise IndexUnavailable(f"cannot write persona {info.slug!r} to {self.location}: {exc}") from exc
        if old and old.get("collection") != name:
            self._drop(old["collection"])
        return name

    def remove(self, slug: str) -> bool:
        """Unpublish a persona: its registry record goes (readers stop finding it), then its collection. ``False``
        when it was not published."""
        pointer = self.pointer(slug)
        if not pointer:
            return False
        try:
            self._registry().delete(ids=[slug])
        except Exception as exc:
            raise IndexUnavailable(f"cannot remove persona {slug!r} from {self.location}: {exc}") from exc
        self._recent = None
        self._drop(pointer["collection"])
        return True

    def slugs(self) -> list[str]:
        """Every published persona's slug, read afresh (not through the query path's reuse)."""
        return sorted(self._pointers())

    def sweep(self) -> list[str]:
        """Drop persona collections that no pointer refers to (left by an interrupted ingest), and their serving
        copies."""
        live = {p["collection"] for p in self._pointers().values()}
        dropped = []
        for name in self._collection_names():
            if name.startswith("p-") and name not in live:
                self._drop(name)
                dropped.append(name)
        if not self.settings.chroma_url:
            for path in snapshot.stray(self.settings.data_dir, live):
                path.unlink(missing_ok=True)
        return dropped

    def _collection_names(self) -> Iterable[str]:
        for item in self.client.list_collections():
            yield item if isinstance(item, str) else item.name

    def _drop(self, name: str) -> None:
        self._recent = None
        self._collections.pop(name, None)
        self._counts.pop(name, None)
        copy = self._snapshot_path(name)
        if copy is not None:
            copy.unlink(missing_ok=True)
        try:
            self.client.delete_collection(name)
        except Exception as exc:  # already gone, or the server is down: the sweep retries later
            log.debug("could not drop collection %s: %s", name, exc)


def _by_position(chunks: list[StoredChunk]) -> list[StoredChunk]:
    return sorted(chunks, key=lambda c: int(c.metadata.get("position", 0)))


_LOCKS: dict[str, Any] = {}
SERVER_FILE = "index.server.json"
"""Beside the lock: the address of the server that holds the index, for ``persona mcp`` to go through."""


def exclusive(settings: Settings, serving_at: str | None = None):
    """Hold the embedded index for this process: one process per PersistentClient directory.

    Several processes on one embedded Chroma directory corrupt it (Chroma issues 421, 961, 3769),
    so the server and ``persona ingest`` take this lock. With ``PERSONA_CHROMA_URL`` the Chroma
    server arbitrates and no lock is needed. Raises :class:`IndexUnavailable` when it is taken.

    ``serving_at``: the base URL of the HTTP server taking the lock, written beside it while it is held
    (:func:`holder`), so that another process can read the index through that server.
    """
    import contextlib

    from filelock import FileLock, Timeout

    if settings.chroma_url:
        return contextlib.nullcontext()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = str((settings.data_dir / "index.lock").resolve())
    lock = _LOCKS.setdefault(path, FileLock(path, timeout=0, thread_local=False))  # per process, not thread
    advert = settings.data_dir / SERVER_FILE

    @contextlib.contextmanager
    def held():
        try:
            lock.acquire()
        except Timeout:
            raise IndexUnavailable(
                f"the index at {settings.data_dir} is in use by another process (another `persona ingest`, or a "
                "server that did not note its address). Wait for it or stop it, name the server (`persona ingest "
                "--server URL`), or share one index through a Chroma server with PERSONA_CHROMA_URL."
            ) from None
        wrote = False
        try:
            if lock.lock_counter == 1:  # the process's first hold: an address left here is a killed holder's
                advert.unlink(missing_ok=True)
            if serving_at and not advert.exists():
                advert.write_text(json.dumps({"url": serving_at, "pid": os.getpid()}), encoding="utf-8")
                wrote = True
            yield
        finally:
            if wrote:
                advert.unlink(missing_ok=True)
            lock.release()

    return held()


def holder(settings: Settings) -> str | None:
    """The base URL of the server holding the embedded index, when the holder is one (see :func:`exclusive`)."""
    try:
        return str(json.loads((settings.data_dir / SERVER_FILE).read_text(encoding="utf-8"))["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
