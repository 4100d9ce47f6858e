"""The server's one model, run by one thread: runs are taken in order and executed on a
:class:`~MedSAMSegmentLib.service.SegmentationService`, the same code a local run uses (hence the same masks).

A volume is given to the service by its manifest name, already normalised by the client; when slices were
added since the service last saw it, it is given again, so that the service checks it by content. A ``segment``
or ``refine`` run cancels the encodes still waiting or running for the same session: a user is waiting now.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from typing import Callable, Dict, Optional

import numpy as np
from MedSAMSegmentLib.engine import Cancelled
from MedSAMSegmentLib.remote.remote_protocol import pack
from MedSAMSegmentLib.remote.request_dispatch import failure_reply, run_request, throttled
from MedSAMSegmentLib.service import ModelSpec, SegmentationService

from .sessions import Run
from .volumes import VolumeStore

#: Least time between two progress updates of a run, seconds.
PROGRESS_INTERVAL = 0.1
#: The geometry given to the service: the server never sees the image's position (it needs none).
NO_GEOMETRY = np.eye(4)


class ModelRunner:
    """Executes :class:`~sessions.Run` objects one at a time on ``service`` with the model ``spec``."""

    def __init__(self, service: SegmentationService, spec: ModelSpec, volumes: VolumeStore,
                 max_queued: int = 64, on_run: Optional[Callable[[Run], None]] = None) -> None:
        self.service = service
        self.spec = spec
        self.volumes = volumes
        self._queue: queue.Queue[Optional[Run]] = queue.Queue(max_queued)
        self._given: Dict[str, int] = {}  # volume name -> generation last given to the service
        self._pending: Dict[str, Run] = {}  # run id -> queued or running run
        self._lock = threading.Lock()
        self._on_run = on_run
        self._thread = threading.Thread(target=self._loop, name="medsam-model-runner", daemon=True)
        self.started = time.time()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    def model(self):
        return self.service.model(self.spec)

    def submit(self, run: Run) -> None:
        """Queue ``run``; raises ``queue.Full`` when the queue is full."""
        with self._lock:
            if run.op in ("segment", "refine"):
                for other in self._pending.values():
                    if other.session_id == run.session_id and other.op == "encode":
                        other.cancel_requested = True
            self._pending[run.run_id] = run
        try:
            self._queue.put_nowait(run)
        except queue.Full:
            with self._lock:
                self._pending.pop(run.run_id, None)
            raise

    def queued(self) -> int:
        return self._queue.qsize()

    def _loop(self) -> None:
        while True:
            run = self._queue.get()
            if run is None:
                return
            try:
                self._execute(run)
            finally:
                with self._lock:
                    self._pending.pop(run.run_id, None)
                if self._on_run is not None:
                    self._on_run(run)

    def _execute(self, run: Run) -> None:
        if run.cancel_requested:
            run.update(state="cancelled", message="cancelled before it started")
            return
        run.update(state="running")
        try:
            body = self._outcome(run)
        except Cancelled:
            run.update(state="cancelled", message="cancelled")
        except Exception as exc:  # noqa: BLE001 - every failure is reported on the run; the server goes on
            kind, line = failure_reply(exc)
            if kind == "runtime":
                traceback.print_exc()
            run.update(state="failed", kind=kind, message=line)
        else:
            run.update(state="done", body=body, message="")

    def _outcome(self, run: Run) -> bytes:
        header = run.header
        name = str(header["volume"])
        stored = self.volumes.get(name)
        if stored is None:
            raise RuntimeError(f"volume {name} was dropped from the server before its run started; send it again")
        if self._given.get(name) != stored.generation or not self.service.has_volume(name):
            self.service.put_volume(name, stored.array, normalised=True)
            self._given[name] = stored.generation

        def progress(done: int, total: int, text: str) -> None:
            run.update(done=done, total=total, message=text)

        reply, arrays = run_request(self.service, run.op, name, NO_GEOMETRY, header, run.arrays, self.spec,
                                    throttled(progress, PROGRESS_INTERVAL), lambda: run.cancel_requested)
        return pack(reply, arrays)
