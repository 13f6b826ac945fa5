"""The catalog's text vectors kept on disk by content, so a restart encodes only what changed.

Every worker reads the whole ``items`` topic at start and would encode every item's text again
(~10 s of a restart for ml-100k on 2 cores). :class:`VectorCache` maps the SHA-256 of the exact
text encoded (its first 16 bytes) to the vector, in a folder of its own per encoder: the
folder's name and every file's ``namespace`` say the encoder's ``model_version``, ``max_length``
and ``dim``, so one model never reads another's vectors (a changed title is a new key, so it is
encoded; an unchanged one is found).

On disk (``<home>/cache/vectors/<model>-<hash>/``; derived from the catalog text and the model
only, so it outlives the worker's state folder, which a fresh embedded broker wipes):

- ``base.npz``: ``keys`` (n x 16 uint8), ``vectors`` (n x dim float32), ``stamps`` (n int64,
  the run that last used each entry), ``namespace``;
- ``seg-<run>-<pid>-<n>.npz``: what one catalog batch added (``keys``, ``vectors``) and the
  keys it found (``touched``), appended by :meth:`VectorCache.flush`: at most one small write
  per batch, proportional to the batch, never to the catalog.

The first lookup loads the base and every segment; the first flush after that rewrites them as
one base, dropping entries no run used in the last :data:`KEEP_RUNS` (texts gone from the
catalog). Every file is written to a temporary name and renamed into place, so a reader sees a
whole file or none; a file that does not load (truncated, corrupt, another namespace, a
non-finite vector) is logged, removed and rebuilt by the encoder; the temporary file of a writer
killed mid-write is removed by the next load. No cache error stops a worker:
the cache then behaves as empty (or unwritable), and items are encoded as without it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["KEEP_RUNS", "VectorCache", "text_key"]

log = logging.getLogger(__name__)

KEEP_RUNS = 3
"""Entries not used by any of the last this-many runs are dropped when the base is rewritten."""

KEY_BYTES = 16
_BASE = "base.npz"


class _Encoder(Protocol):
    model_version: str
    max_length: int
    dim: int


def text_key(text: str) -> bytes:
    """The cache key of ``text``: the first 16 bytes of the SHA-256 of its UTF-8 (a lone
    surrogate is hashed as it is, never an error)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES]


class VectorCache:
    """Text vectors of one encoder, by content; thread-safe (the catalog feed's executor)."""

    def __init__(self, folder: Path, namespace: str, dim: int) -> None:
        self.folder = Path(folder)
        self.namespace = namespace
        self.dim = dim
        self._lock = threading.Lock()
        self._vectors: dict[bytes, np.ndarray] = {}
        self._stamps: dict[bytes, int] = {}
        self._loaded = False
        self._run = 0
        self._read: list[Path] = []  # files loaded at start: folded into the base at the 1st flush
        self._new: dict[bytes, np.ndarray] = {}
        self._touched: set[bytes] = set()
        self._seq = itertools.count()
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_encoder(cls, root: Path, encoder: _Encoder) -> VectorCache:
        """The cache of ``encoder``'s vectors under ``root`` (one folder per encoder)."""
        namespace = f"{encoder.model_version} max_length={encoder.max_length} dim={encoder.dim}"
        digest = hashlib.sha256(namespace.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        readable = re.sub(r"[^A-Za-z0-9._-]", "_", encoder.model_version)[:60]
        return cls(Path(root) / f"{readable}-{digest}", namespace, encoder.dim)

    def entries(self) -> int:
        """How many vectors the cache holds (loading it first)."""
        with self._lock:
            self._load()
            return len(self._vectors)

    def lookup(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Each text's cached vector, or ``None`` (to be encoded and :meth:`put`)."""
        with self._lock:
            self._load()
            found: list[np.ndarray | None] = []
            for text in texts:
                key = text_key(text)
                vector = self._vectors.get(key)
                if vector is not None and self._stamps.get(key) != self._run:
                    self._touched.add(key)
                    self._stamps[key] = self._run
                found.append(vector)
            hits = sum(v is not None for v in found)
            self.hits += hits
            self.misses += len(found) - hits
            return found

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Remember the vectors of ``texts`` (one row each; non-finite rows are not kept)."""
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
        with self._lock:
            self._load()
            for text, row in zip(texts, np.asarray(vectors, dtype=np.float32), strict=True):
                if row.shape != (self.dim,) or not np.isfinite(row).all():
                    continue
                key = text_key(text)
                self._vectors[key] = self._new[key] = row.copy()
                self._stamps[key] = self._run

    def flush(self) -> None:
        """Write what changed since the last flush: the first time one base (the files read at
        start folded in, stale entries dropped), then one segment per call. Never raises: a
        cache that cannot be written is logged and the worker goes on."""
        with self._lock:
            if not self._loaded or (not self._read and not self._new and not self._touched):
                return
            try:
                if self._read:
                    self._rewrite_base()
                else:
                    self._append_segment()
            except Exception as exc:  # a full disk, a read-only home: a cache, not a failure
                log.warning("vector cache %s not written: %s: %s", self.folder,
                            type(exc).__name__, exc)  # fmt: skip
                self._read = []  # not retried each batch: the next start folds them in
            self._new.clear()
            self._touched.clear()

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        started = time.perf_counter()
        try:
            paths = sorted(self.folder.glob("*.npz"))
        except OSError as exc:
            log.warning("vector cache %s not readable: %s", self.folder, exc)
            paths = []
        _remove_orphans(self.folder)
        base = self.folder / _BASE
        ordered = ([base] if base in paths else []) + [p for p in paths if p.name != _BASE]
        for path in ordered:
            if self._load_file(path):
                self._read.append(path)
        self._run = max(self._stamps.values(), default=0) + 1
        if self._read:
            log.info("vector cache %s: %d vectors from %d files in %.2fs", self.folder,
                     len(self._vectors), len(self._read),
                     time.perf_counter() - started)  # fmt: skip

    def _load_file(self, path: Path) -> bool:
        """Merge one file in; ``False`` (and the file removed) when it does not load."""
        try:
            with np.load(path, allow_pickle=False) as data:
                keys, vectors, touched, stamps = self._checked(path, data)
        except FileNotFoundError:  # another worker folded it into its base meanwhile
            return False
        except Exception as exc:  # truncated, corrupt, foreign: rebuilt by the encoder
            log.warning("vector cache file %s ignored (%s: %s); its vectors will be encoded "
                        "again", path, type(exc).__name__, exc)  # fmt: skip
            path.unlink(missing_ok=True)
            return False
        for key, row, stamp in zip(keys, vectors, stamps, strict=True):
            self._vectors[key] = row
            self._stamps[key] = max(stamp, self._stamps.get(key, 0))
        run = int(stamps.max(initial=0))
        for key in touched:
            if key in self._vectors:
                self._stamps[key] = max(run, self._stamps[key])
        return True

    def _checked(
        self, path: Path, data: np.lib.npyio.NpzFile
    ) -> tuple[list[bytes], np.ndarray, list[bytes], np.ndarray]:
        if str(data["namespace"]) != self.namespace:
            raise ValueError(f"written for {str(data['namespace'])!r}, not {self.namespace!r}")
        raw_keys, vectors = data["keys"], data["vectors"]
        n = len(raw_keys)
        if raw_keys.dtype != np.uint8 or raw_keys.shape != (n, KEY_BYTES):
            raise ValueError(f"keys of shape {raw_keys.shape} and type {raw_keys.dtype}")
        if vectors.dtype != np.float32 or vectors.shape != (n, self.dim):
            raise ValueError(f"vectors of shape {vectors.shape} and type {vectors.dtype}")
        if not np.isfinite(vectors).all():
            raise ValueError("non-finite vectors")
        if path.name == _BASE:
            stamps = data["stamps"].astype(np.int64)
            touched: list[bytes] = []
            if stamps.shape != (n,):
                raise ValueError(f"stamps of shape {stamps.shape}")
        else:
            stamps = np.full(n, _segment_run(path), dtype=np.int64)
            raw_touched = data["touched"]
            if raw_touched.dtype != np.uint8 or raw_touched.ndim != 2 or \
                    raw_touched.shape[1] != KEY_BYTES:  # fmt: skip
                raise ValueError(f"touched keys of shape {raw_touched.shape}")
            touched = [row.tobytes() for row in raw_touched]
        return [row.tobytes() for row in raw_keys], vectors, touched, stamps

    # ------------------------------------------------------------------ writing

    def _rewrite_base(self) -> None:
        oldest = self._run - KEEP_RUNS + 1
        keys = [k for k, stamp in self._stamps.items() if stamp >= oldest]
        dropped = len(self._vectors) - len(keys)
        for key in set(self._vectors).difference(keys):
            del self._vectors[key], self._stamps[key]
        self._write(self.folder / _BASE, keys, [self._vectors[k] for k in keys],
                    stamps=np.array([self._stamps[k] for k in keys], dtype=np.int64))  # fmt: skip
        for path in self._read:
            if path.name != _BASE:
                path.unlink(missing_ok=True)
        self._read = []
        log.info("vector cache %s rewritten: %d vectors (%d unused ones dropped)", self.folder,
                 len(keys), dropped)  # fmt: skip

    def _append_segment(self) -> None:
        name = f"seg-{self._run:08d}-{os.getpid()}-{time.time_ns()}-{next(self._seq)}.npz"
        keys = list(self._new)
        self._write(self.folder / name, keys, [self._new[k] for k in keys],
                    touched=_key_array(sorted(self._touched)))  # fmt: skip

    def _write(self, path: Path, keys: list[bytes], rows: list[np.ndarray],
               **extra: np.ndarray) -> None:  # fmt: skip
        vectors = np.stack(rows) if rows else np.empty((0, self.dim), dtype=np.float32)
        arrays = {"keys": _key_array(keys), "vectors": vectors,
                  "namespace": np.array(self.namespace), **extra}  # fmt: skip
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as out:
                np.savez(out, allow_pickle=False, **arrays)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _remove_orphans(folder: Path) -> None:
    """Remove the temporary files of writers that died mid-write (``kill -9``): named
    ``.<file>.<pid>.tmp``, their process gone. A live writer's are left alone."""
    for tmp in folder.glob(".*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            tmp.unlink(missing_ok=True)
            log.info("vector cache: removed %s, left by a writer that died", tmp.name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but is another user's
        return True
    return True


def _key_array(keys: Sequence[bytes]) -> np.ndarray:
    if not keys:
        return np.empty((0, KEY_BYTES), dtype=np.uint8)
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)


def _segment_run(path: Path) -> int:
    """The run that wrote a segment, from its name (``seg-<run>-...``)."""
    return int(path.name.split("-")[1])
