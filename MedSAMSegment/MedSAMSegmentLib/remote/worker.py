"""The segmentation worker process, ``python -m MedSAMSegmentLib.remote.worker``, driven by ``WorkerClient``.

It reads requests from standard input and writes replies to the standard output it was started with, both in the
:mod:`worker_protocol` framing (anything a library prints goes to standard error instead). Requests run one at a
time, in order; ``cancel`` is read while a request runs. It exits when its input closes (the GUI process ended).

Requests (``op``): ``load`` (model spec: load the model now), ``segment`` (volume token, geometry, key boxes,
model spec, settings, and the voxels as the array ``volume`` when the worker does not hold them yet),
``encode`` (the same, plus ``newest``, the key slice placed last, and ``beyond``, how many slices past it to
guess, null for the user's spacing, and ``preview``: decode them too: encode the views such a run will read
before Segment is pressed; a ``segment`` request arriving cancels every ``encode`` still running or queued),
``refine`` (a ``segment`` request's fields plus ``corrected_slices``, the indices of the slices the expert
corrected, and the array ``corrected``, their masks stacked: Refine from my edits on that run; replied to as a
``segment``, the result header adding ``refined`` and ``note``), ``cancel`` (id),
``forget`` (drop volumes and embeddings), ``shutdown``.
Replies: ``loaded``, ``progress``, ``result`` (with the array ``slab``), ``encoded`` (``count``, and with a preview
its result header as ``preview`` and the array ``slab``), ``cancelled``, ``need_volume``,
``error`` (``kind``: ``input`` for a problem with what the user gave, ``runtime`` otherwise; one-line
``message``, the traceback in ``detail``).
"""

from __future__ import annotations

import faulthandler
import os
import queue
import signal
import sys
import threading
import traceback
from typing import BinaryIO, Dict, Optional, Set

import numpy as np

from ..engine import Cancelled
from ..service import ModelSpec, SegmentationService
from .request_dispatch import MODEL_OPS, failure_reply, run_request, throttled
from .worker_protocol import ProtocolError, read_message, write_message

#: Least time between two progress replies, seconds.
PROGRESS_INTERVAL = 0.05


class Worker:
    """Runs requests from ``source`` on a :class:`SegmentationService`, replying on ``sink``."""

    def __init__(self, source: BinaryIO, sink: BinaryIO, service: Optional[SegmentationService] = None) -> None:
        self.source = source
        self.sink = sink
        self.service = service or SegmentationService()
        self._send_lock = threading.Lock()
        self._requests: queue.Queue[Optional[tuple]] = queue.Queue()
        self._cancelled: Set[int] = set()
        self._encodes: Set[int] = set()  # ids of encode requests not finished yet

    def send(self, header: dict, arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
        with self._send_lock:
            write_message(self.sink, header, arrays)

    def _read_requests(self) -> None:
        try:
            while True:
                message = read_message(self.source)
                if message is None:
                    break
                header, _ = message
                if header.get("op") == "cancel":
                    self._cancelled.add(int(header.get("id", -1)))
                    continue
                if header.get("op") == "encode":
                    self._encodes.add(int(header.get("id", -1)))
                elif header.get("op") in ("segment", "refine"):
                    self._cancelled.update(self._encodes)  # the user is waiting now: speculation yields
                self._requests.put(message)
        except (ProtocolError, OSError, ValueError) as exc:
            print(f"MedSAM worker: unreadable request stream: {exc}", file=sys.stderr)
        self._requests.put(None)

    def serve(self) -> None:
        """Answer requests until the input closes or ``shutdown`` arrives."""
        threading.Thread(target=self._read_requests, name="medsam-worker-reader", daemon=True).start()
        while True:
            message = self._requests.get()
            if message is None:
                return
            header, arrays = message
            op = header.get("op")
            if op == "shutdown":
                return
            request_id = int(header.get("id", -1))
            try:
                self._handle(op, request_id, header, arrays)
            except Cancelled:
                self.send({"op": "cancelled", "id": request_id})
            except Exception as exc:  # noqa: BLE001 - every failure is answered, the worker keeps serving
                kind, line = failure_reply(exc)
                self.send({"op": "error", "id": request_id, "kind": kind, "message": line,
                           "detail": traceback.format_exc()})
            finally:
                self._cancelled.discard(request_id)
                self._encodes.discard(request_id)

    def _handle(self, op: str, request_id: int, header: dict, arrays: Dict[str, np.ndarray]) -> None:
        if op == "load":
            model = self.service.model(ModelSpec(**header["model"]))
            self.send({"op": "loaded", "id": request_id, "device": model.device_description,
                       "acceleration": model.acceleration})
        elif op == "forget":
            self.service.forget()
        elif op in MODEL_OPS:
            self._segment(request_id, header, arrays)
        else:
            raise ValueError(f"unknown request {op!r}")

    def _segment(self, request_id: int, header: dict, arrays: Dict[str, np.ndarray]) -> None:
        token = str(header["token"])
        if "volume" in arrays:
            self.service.put_volume(token, arrays["volume"])
        elif not self.service.has_volume(token):
            self.send({"op": "need_volume", "id": request_id})
            return
        ijk_to_world = np.asarray(header["ijk_to_world"], dtype=float)

        def send_progress(done: int, total: int, text: str) -> None:
            self.send({"op": "progress", "id": request_id, "done": done, "total": total, "message": text})

        reply, reply_arrays = run_request(self.service, header["op"], token, ijk_to_world, header, arrays,
                                          ModelSpec(**header["model"]), throttled(send_progress, PROGRESS_INTERVAL),
                                          lambda: request_id in self._cancelled)
        self.send({**reply, "id": request_id}, reply_arrays)


def main() -> int:
    """Serve on the process's standard input and output. On POSIX, ``SIGUSR1`` writes every thread's stack to
    standard error (the worker's log; :meth:`WorkerClient.dump_stacks`)."""
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must never corrupt the protocol stream
    sys.stdout = sys.stderr
    try:
        Worker(sys.stdin.buffer, protocol_out).serve()
    finally:
        _end_own_group()
    return 0


def _end_own_group() -> None:
    """When this process leads its process group (POSIX; :class:`WorkerClient` starts it so), send the rest of
    the group ``SIGTERM`` on the way out, so nothing a library forked outlives the worker, also when the client
    itself died (the worker then exits at the end of its input)."""
    if os.name == "nt" or os.getpgrp() != os.getpid():
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(0, signal.SIGTERM)
    except OSError:
        pass


if __name__ == "__main__":  # pragma: no cover - run as a process by WorkerClient
    sys.exit(main())
