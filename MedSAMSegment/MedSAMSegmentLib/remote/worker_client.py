"""Start the segmentation worker process and talk to it without ever blocking the caller (Slicer's GUI thread).

A sender thread writes requests to the worker's input and a reader thread reads its replies into a queue; the
caller only enqueues (:meth:`WorkerClient.request`) and drains (:meth:`WorkerClient.poll`), both in microseconds.
When the worker exits, :meth:`poll` returns one ``{"op": "exited"}`` message with the exit code and the last line
the worker wrote to its log: the process's exit ends its runs, whatever its pipes do.

On POSIX the worker leads a process group of its own, and that group is ended with it (on :meth:`close`,
:meth:`kill`, and when the worker dies): nothing a library in the worker started (``ctypes.util.find_library``
runs ``ldconfig``; a forked helper inherits every descriptor) outlives it holding a pipe open. A hung worker's
threads can be dumped into its log (:meth:`dump_stacks`).
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Dict, List, Optional

import numpy as np

from .worker_protocol import Message, ProtocolError, read_message, write_message

#: After the worker exits, how long its replies still in the pipe may take to be read before "exited" is reported
#: (the pipe may never reach end-of-file when a process the worker forked still holds it open).
EXIT_DRAIN_S = 2.0

#: The folder that holds the ``MedSAMSegmentLib`` package (put on the worker's ``PYTHONPATH``).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_python(executable: Optional[str] = None) -> str:
    """The interpreter the worker runs with: ``sys.executable``, except inside Slicer.

    There ``sys.executable`` is the ``PythonSlicer`` launcher, which sets up Slicer's environment and starts
    ``python-real`` beside it. The Slicer process already has that environment (the launcher started it too), so
    the worker runs ``python-real`` directly and its binary pipes are not relayed through the launcher; when
    ``python-real`` is not found, the launcher is used.
    """
    executable = executable or sys.executable
    folder, name = os.path.split(executable)
    if name.lower().startswith("pythonslicer"):
        for candidate in ("python-real.exe", "python-real") if os.name == "nt" else ("python-real",):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return path
    return executable


def drained(replies: queue.Queue[Message]) -> List[Message]:
    """Everything in ``replies``, oldest first, without waiting."""
    found = []
    while True:
        try:
            found.append(replies.get_nowait())
        except queue.Empty:
            return found


class WorkerClient:
    """One worker process. ``python`` runs it (default: :func:`default_python`)."""

    def __init__(self, python: Optional[str] = None, environment: Optional[Dict[str, str]] = None) -> None:
        self.python = python or default_python()
        self.environment = environment
        self.process: Optional[subprocess.Popen] = None
        self.log_path = ""
        self._ids = itertools.count(1)
        self._outgoing: queue.Queue[Optional[tuple]] = queue.Queue()
        self._incoming: queue.Queue[Message] = queue.Queue()
        self._read_problem = ""
        self._read_done = threading.Event()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process (once); returns at once, the process loads in the background."""
        if self.process is not None:
            return
        env = dict(os.environ if self.environment is None else self.environment)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = tempfile.NamedTemporaryFile(prefix="medsam-worker-", suffix=".log", delete=False)
        self.log_path = log.name
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        try:
            self.process = subprocess.Popen(
                [self.python, "-m", "MedSAMSegmentLib.remote.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, env=env, creationflags=flags, start_new_session=os.name != "nt",
            )
        finally:
            log.close()
        threading.Thread(target=self._send_loop, name="medsam-client-sender", daemon=True).start()
        threading.Thread(target=self._read_loop, name="medsam-client-reader", daemon=True).start()
        threading.Thread(target=self._wait_loop, name="medsam-client-waiter", daemon=True).start()

    def request(self, header: dict, arrays: Optional[Dict[str, np.ndarray]] = None) -> int:
        """Queue a request (``header["op"]`` names it); returns its id. Starts the process if needed."""
        self.start()
        request_id = next(self._ids)
        self._outgoing.put(({**header, "id": request_id}, arrays))
        return request_id

    def cancel(self, request_id: int) -> None:
        self._outgoing.put(({"op": "cancel", "id": request_id}, None))

    def poll(self) -> List[Message]:
        """Every reply that has arrived, oldest first; never waits."""
        return drained(self._incoming)

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to stop; kill it (and its process group) if it has not stopped after ``timeout``
        seconds."""
        if self.process is None:
            return
        self._outgoing.put(({"op": "shutdown"}, None))
        self._outgoing.put(None)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._end_group()

    def kill(self) -> None:
        """End the worker and everything in its process group now; :meth:`poll` then reports ``exited``."""
        if self.process is None:
            return
        self._end_group()
        self.process.kill()
        try:
            self.process.wait(10.0)
        except subprocess.TimeoutExpired:
            pass  # stuck in the kernel (a device driver): the waiter reports it when it goes

    def dump_stacks(self) -> None:
        """Have a running worker write every thread's stack to its log (POSIX: ``SIGUSR1``, see
        :func:`worker.main`); for diagnosing a worker that stopped answering."""
        if self.running and hasattr(signal, "SIGUSR1"):
            try:
                os.kill(self.process.pid, signal.SIGUSR1)
            except OSError:
                pass

    def _end_group(self) -> None:
        """Kill what is left of the worker's process group (POSIX; the worker leads it)."""
        if self.process is None or os.name == "nt":
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except OSError:
            pass  # ProcessLookupError: nothing is left of it

    def last_log_line(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                lines = [line.strip() for line in handle if line.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def _send_loop(self) -> None:
        stream = self.process.stdin
        while True:
            item = self._outgoing.get()
            if item is None:
                break
            try:
                write_message(stream, *item)
            except (OSError, ValueError):
                break  # the worker is gone; the reader reports it
        try:
            stream.close()
        except OSError:
            pass

    def _read_loop(self) -> None:
        try:
            while True:
                message = read_message(self.process.stdout)
                if message is None:
                    break
                self._incoming.put(message)
        except (ProtocolError, OSError, ValueError) as exc:
            self._read_problem = str(exc)
        self._read_done.set()

    def _wait_loop(self) -> None:
        """When the worker exits: end its process group, then report the exit once its replies are read, or
        :data:`EXIT_DRAIN_S` after it exited."""
        if hasattr(os, "waitid") and os.name != "nt":
            try:  # wait without reaping, so that the group's id cannot be reused before the group is ended
                os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                pass  # already reaped (Popen.poll on another thread)
        self._end_group()
        code = self.process.wait()
        self._read_done.wait(EXIT_DRAIN_S)
        self._incoming.put(({"op": "exited", "returncode": code,
                             "message": self._read_problem or self.last_log_line()}, {}))
