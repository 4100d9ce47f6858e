"""Image embeddings by content key, kept in memory (LRU, bounded by bytes) and optionally on disk.

With ``spill``, an embedding dropped from memory goes to a private temporary folder of this process (made on the
first drop, removed when the cache is collected or the process ends) and is read back from there instead of being
encoded again: an interactive session keeps every embedding of a large volume within a small memory bound.

A key is a SHA-256 of the model's fingerprint and the exact pixels of the slice view, so a different image, slice
axis, intensity setting, crop or model never reuses an embedding.

Disk format: ``<directory>/<key[:2]>/<key>.emb`` holds 64 bytes of hex SHA-256 of the rest, a 64-byte header
``repr((shape, 'float32'))`` padded with spaces, then the float32 payload in C order. Entries are written to a
temporary file and renamed into place, so two runs can share a directory; an entry whose checksum or header does
not verify is deleted and reported as missing (its embedding is computed again).
"""

from __future__ import annotations

import ast
import hashlib
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from typing import Optional, Tuple

import numpy as np

#: Memory an editing cache (:func:`editing_cache`) keeps embeddings in, at least: 32 slice views.
EDITING_MEMORY_BYTES = 128 << 20


class CacheDirectoryError(ValueError):
    """The cache folder cannot be made or used; the message names it and says what to give instead."""


class EmbeddingCache:
    """Image embeddings by content key, in memory (least recently used dropped beyond ``max_memory_bytes``, but
    never the last one) and, with a ``directory``, on disk in the module's format; with ``spill``, what memory
    drops is kept in a temporary folder (see the module).

    Thread-safe: sessions on several threads may share one. Raises :class:`CacheDirectoryError` at construction
    when ``directory`` cannot be made. A disk entry that cannot be written later (disk full, folder made
    read-only) warns once (``ResourceWarning``) and the cache goes on in memory only: the run never fails for its
    cache.
    """

    def __init__(self, directory: Optional[str] = None, max_memory_bytes: int = 1 << 30, spill: bool = False) -> None:
        self.directory = directory
        self.max_memory_bytes = max_memory_bytes
        self.spill = spill
        self._spill_folder: Optional[tempfile.TemporaryDirectory] = None
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_bytes = 0
        self.hits = 0
        self.misses = 0
        self.disk_writes_failed = False
        self._lock = threading.RLock()
        if directory:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise CacheDirectoryError(f"--cache-dir {directory}: cannot make the folder ({exc.strerror or exc}); "
                                          "give a folder you can write to") from exc

    @staticmethod
    def key(fingerprint: str, slice_2d: np.ndarray) -> str:
        """The key of the embedding of ``slice_2d`` (its shape, dtype and pixels) by the model ``fingerprint``."""
        digest = hashlib.sha256()
        digest.update(fingerprint.encode())
        digest.update(repr((slice_2d.shape, str(slice_2d.dtype))).encode())
        digest.update(np.ascontiguousarray(slice_2d).tobytes())
        return digest.hexdigest()[:40]

    def contains(self, key: str) -> bool:
        """Whether an embedding is stored under ``key`` (in memory or on disk); counts nothing."""
        with self._lock:
            if key in self._memory or (self._spill_folder and os.path.exists(self._spill_path(key))):
                return True
        return bool(self.directory) and os.path.exists(self._path(key))

    def get(self, key: str) -> Optional[np.ndarray]:
        """The embedding stored under ``key`` (memory, then disk), or None; counts a hit or a miss."""
        with self._lock:
            return self._get(key)

    def _get(self, key: str) -> Optional[np.ndarray]:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        value = self._read_spilled(key)
        if value is None:
            value = self._read_disk(key)
        if value is not None:
            self.hits += 1
            self._remember(key, value)
            return value
        self.misses += 1
        return None

    def put(self, key: str, value: np.ndarray) -> None:
        """Store ``value`` as float32 under ``key``, in memory and, with a directory, on disk."""
        value = np.ascontiguousarray(value, dtype=np.float32)
        with self._lock:
            self._remember(key, value)
        if self.directory and not self.disk_writes_failed:
            try:
                self._write_disk(key, value)
            except OSError as exc:
                self.disk_writes_failed = True
                warnings.warn(f"the embedding cache folder {self.directory} takes no more entries "
                              f"({exc.strerror or exc}); this run goes on with embeddings in memory only",
                              ResourceWarning, stacklevel=2)

    def clear_memory(self) -> None:
        """Forget the in-memory embeddings (the disk entries stay)."""
        with self._lock:
            self._memory.clear()
            self._memory_bytes = 0

    def _remember(self, key: str, value: np.ndarray) -> None:
        if key in self._memory:
            return
        self._memory[key] = value
        self._memory_bytes += value.nbytes
        while self._memory_bytes > self.max_memory_bytes and len(self._memory) > 1:
            old_key, old = self._memory.popitem(last=False)
            self._memory_bytes -= old.nbytes
            if self.spill and not self.directory:  # with a directory the disk has it already
                self._write_spilled(old_key, old)

    def _spill_path(self, key: str) -> str:
        return os.path.join(self._spill_folder.name, key + ".npy") if self._spill_folder else ""

    def _write_spilled(self, key: str, value: np.ndarray) -> None:
        try:
            if self._spill_folder is None:
                self._spill_folder = tempfile.TemporaryDirectory(prefix="medsam-embeddings-")
            path = self._spill_path(key)
            if not os.path.exists(path):
                np.save(path + ".partial.npy", value)
                os.replace(path + ".partial.npy", path)
        except OSError:  # a full disk: the embedding is encoded again when needed
            pass

    def _read_spilled(self, key: str) -> Optional[np.ndarray]:
        if self._spill_folder is None:
            return None
        try:
            return np.load(self._spill_path(key))
        except (OSError, ValueError):
            return None

    def _path(self, key: str) -> str:
        return os.path.join(self.directory or "", key[:2], key + ".emb")

    def _write_disk(self, key: str, value: np.ndarray) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        header = repr((value.shape, str(value.dtype))).encode().ljust(64)
        payload = value.tobytes()
        checksum = hashlib.sha256(header + payload).hexdigest().encode()
        handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".emb")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(checksum + header + payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _read_disk(self, key: str) -> Optional[np.ndarray]:
        if not self.directory:
            return None
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        checksum, header, payload = data[:64], data[64:128], data[128:]
        try:
            if hashlib.sha256(header + payload).hexdigest().encode() != checksum:
                raise ValueError("checksum mismatch")
            shape, dtype = parse_header(header)
            value = np.frombuffer(payload, dtype=dtype).reshape(shape).copy()
        except (ValueError, SyntaxError, TypeError):
            try:  # a corrupt entry is removed and recomputed
                os.unlink(path)
            except OSError:
                pass
            return None
        return value


def parse_header(header: bytes) -> Tuple[Tuple[int, ...], str]:
    """Parse the ``((shape), 'dtype')`` header of a disk cache entry without ``eval``; ValueError if it is not a
    float32 shape of positive sizes."""
    shape, dtype = ast.literal_eval(header.decode().strip())
    if dtype != "float32" or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError("bad header")
    return tuple(shape), dtype


def editing_cache(working_bytes: int = 0) -> EmbeddingCache:
    """The cache of a segmenter given none (a session, a predictor, Slicer's worker): every embedding kept for later
    box edits, :data:`EDITING_MEMORY_BYTES` of them (or a run's ``working_bytes``, when more) in memory and the
    rest spilled to a temporary folder, so a 100-slice target on a 512x512 CT stays within the 2 GB the annotator's
    machine is asked for."""
    return EmbeddingCache(max_memory_bytes=max(EDITING_MEMORY_BYTES, int(working_bytes)), spill=True)
