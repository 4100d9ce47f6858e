"""Outputs written whole or not at all: a temporary file beside the target, renamed into place on success, and the
clean-up of temporary files that a killed writer left."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator, List

PARTIAL_PREFIX = ".partial-"


def remove_orphaned_partials(folder: str, base: str) -> List[str]:
    """Delete ``.partial-<pid>-*-<base>`` files beside an output whose writing process no longer exists.

    A writer killed with SIGKILL cannot clean up its temporary file; the next write of the same output does.
    Files of live processes (another run writing the same output now) and names without a process id are kept.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(PARTIAL_PREFIX) and name.endswith("-" + base)):
            continue
        pid_text = name[len(PARTIAL_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or _process_exists(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(name)
        except OSError:
            pass  # another writer removed it first, or it is not ours to remove
    return removed


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or cannot tell: keep the file
    return True


@contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension); rename it into place only on success."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    remove_orphaned_partials(folder, base)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f"{PARTIAL_PREFIX}{os.getpid()}-", suffix="-" + base)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
