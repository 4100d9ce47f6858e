"""Segment on a MedSAM server: the same requests as the local worker, the same masks, the model elsewhere.

:class:`RemoteSegmentation` is the blocking client (the command line's ``segment --server``): it normalises the
volume here, exactly as a local run does, names it by its manifest, sends only the slices the server asks for,
starts the run, follows its progress, and reads back the mask of the segmented slices. It recovers by itself from
an expired session or a restarted server (new session, slices sent again); a server it cannot reach is one
:class:`~server_connection.ServerUnreachable` line.

:class:`ServerWorkerClient` puts that client behind :class:`~worker_client.WorkerClient`'s interface (requests in,
replies polled, never blocking the caller), so that Slicer's :class:`~background_run.BackgroundSegmentation`
drives a server exactly as it drives its local worker process.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .. import intensity, pipeline
from ..engine import CancelCheck, Cancelled, ProgressCallback
from ..geometry import KeyBoxSet
from ..service import (
    KEPT_VOLUMES,
    ModelSpec,
    ServiceResult,
    corrected_to_wire,
    key_boxes_from_wire,
    key_boxes_to_wire,
    result_from_wire,
    settings_from_wire,
    settings_to_wire,
)
from ..settings import SegmentationSettings
from .remote_protocol import Manifest, Message, pack, slices_read, slices_stack
from .server_connection import (
    MissingSlices,
    ServerConnection,
    ServerError,
    ServerInputError,
    SessionGone,
    UnknownVolume,
)
from .worker_client import drained

#: Seconds one status request waits on the server for the run to change.
STATUS_WAIT_S = 2.0
#: A server with several replicas may route the first requests of a run to a replica that does not hold it
#: until its router learns where the volume is: so many tries, this many seconds apart.
ROUTING_TRIES, ROUTING_PAUSE_S = 40, 0.25
#: Attempts at starting a run (each may first open a session, declare the volume or send slices).
START_ATTEMPTS = 6


class RemoteSegmentation:
    """Runs on the server at ``url``; keeps the last few volumes given (raw, by token) and their manifests, like
    the local service keeps them, so that a second run sends only boxes. Not thread-safe."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: Optional[float] = None) -> None:
        self.connection = ServerConnection(url, token) if timeout is None else ServerConnection(url, token, timeout)
        self._volumes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._prepared: Dict[Tuple[str, tuple], Tuple[np.ndarray, Manifest]] = {}
        self.last_run_id: Optional[str] = None
        self.last_replica = ""  # the replica that ran the last run (servers with several)

    @property
    def url(self) -> str:
        return self.connection.url

    def has_volume(self, token: str) -> bool:
        return token in self._volumes

    def put_volume(self, token: str, array: np.ndarray) -> None:
        """Keep ``array`` (``[k, j, i]``, any intensities; never modified) as the voxels of ``token``."""
        self._volumes[token] = array
        self._volumes.move_to_end(token)
        self._prepared = {key: value for key, value in self._prepared.items() if key[0] != token}
        while len(self._volumes) > KEPT_VOLUMES:
            old, _ = self._volumes.popitem(last=False)
            self._prepared = {key: value for key, value in self._prepared.items() if key[0] != old}

    def forget(self) -> None:
        self._volumes.clear()
        self._prepared.clear()

    def close(self) -> None:
        self.connection.close_session()

    def prepared(self, token: str, settings: SegmentationSettings, slice_axis: int) -> Tuple[np.ndarray, Manifest]:
        """The uint8 volume the model sees for ``token`` under ``settings``' intensity fields, normalised here as a
        local run normalises it, and its manifest along ``slice_axis`` (both computed once and kept)."""
        key = (token, (settings.modality, settings.window, settings.mr_rule, slice_axis))
        if key not in self._prepared:
            volume_u8 = pipeline.normalised_volume(self._volumes[token], settings)
            self._prepared[key] = (volume_u8, Manifest.of(volume_u8, slice_axis))
        return self._prepared[key]

    def run(self, op: str, token: str, keys: KeyBoxSet, spec: ModelSpec, settings: SegmentationSettings,
            progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
            extra: Optional[dict] = None, arrays: Optional[Dict[str, np.ndarray]] = None) -> Message:
        """Run ``op`` (``segment``, ``encode`` or ``refine``) on the voxels of ``token`` and return the server's
        result frame; raises ``engine.Cancelled`` when ``cancel()`` turned true, :class:`ServerError` otherwise."""
        if token not in self._volumes:
            raise KeyError(f"no voxels were given for volume {token!r}")
        volume_u8, manifest = self.prepared(token, settings, keys.slice_axis)
        header = {"op": op, "volume": manifest.volume_id, "keys": key_boxes_to_wire(keys),
                  "settings": settings_to_wire(settings), "model": asdict(spec), **(extra or {})}
        self.connection.volume_hint = manifest.volume_id
        run_id = self.last_run_id = self._start(header, arrays, volume_u8, manifest, keys, settings, op)
        return self._follow(run_id, progress, cancel)

    def segment(self, token: str, keys: KeyBoxSet, spec: ModelSpec, settings: SegmentationSettings,
                progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                corrected: Optional[Dict[int, np.ndarray]] = None) -> ServiceResult:
        """The service's ``segment`` (or, with ``corrected``, ``refine``) run on the server."""
        extra, arrays = None, None
        if corrected is not None:
            indices, stack = corrected_to_wire(corrected)
            extra, arrays = {"corrected_slices": indices}, {"corrected": stack}
        header, slabs = self.run("refine" if corrected is not None else "segment", token, keys, spec, settings,
                                 progress, cancel, extra, arrays)
        return result_from_wire(self.told(header, token, settings), slabs)

    def told(self, header: dict, token: str, settings: SegmentationSettings) -> dict:
        """A result header as the user is told it: how the voxels of ``token`` were normalised (said here: the
        server never sees the raw intensities), and the device named with the server it is on."""
        return {**header, "intensity": intensity.describe(settings.modality, settings.window, self._volumes[token]),
                "device": f"{header.get('device') or 'its device'} on the server {self.url}"}

    def _start(self, header: dict, arrays: Optional[Dict[str, np.ndarray]], volume_u8: np.ndarray,
               manifest: Manifest, keys: KeyBoxSet, settings: SegmentationSettings, op: str) -> str:
        """Start the run; when the server lacks the volume or some of its slices, ask again with the manifest and
        those slices in the same request (so that a server with several replicas gets them where the run is)."""
        connection, attached = self.connection, None
        for _ in range(START_ATTEMPTS):
            body = dict(arrays or {})
            sent = dict(header)
            if attached is not None:
                sent.update(manifest=manifest.to_wire(), slice_indices=attached)
                body["slices"] = slices_stack(volume_u8, manifest, attached)
            try:
                if connection.session_id is None:
                    connection.open_session()
                return str(connection.start_run(pack(sent, body))["run"])
            except SessionGone:
                connection.session_id = None
            except UnknownVolume:
                attached = slices_read([k.slice_index for k in keys.boxes], settings.strategy,
                                       len(manifest.digests), ahead=op == "encode")
            except MissingSlices as missing:
                attached = missing.missing
        raise ServerError(f"the MedSAM server at {self.url} did not accept the run after {START_ATTEMPTS} "
                          "attempts (it may be dropping volumes under load); try again")

    def _follow(self, run_id: str, progress: Optional[ProgressCallback], cancel: Optional[CancelCheck]) -> Message:
        connection, version, cancelled = self.connection, -1, False
        while True:
            if cancel is not None and cancel() and not cancelled:
                connection.cancel(run_id)
                cancelled = True
            wait = 0.2 if cancelled else STATUS_WAIT_S
            status = self._routed(lambda since=version, wait=wait: connection.status(run_id, since, wait))
            if status["version"] != version and progress is not None and status["total"]:
                progress(int(status["done"]), int(status["total"]), str(status["message"]))
            version, self.last_replica = status["version"], str(status.get("replica", ""))
            if status["state"] == "done":
                return self._routed(lambda: connection.result(run_id))
            if status["state"] == "cancelled":
                raise Cancelled()
            if status["state"] == "failed":
                error = ServerInputError if status["kind"] == "input" else ServerError
                raise error(str(status["message"]) or "the run failed on the server")


    @staticmethod
    def _routed(call: Callable[[], object]):
        """``call()``, tried again while the server answers that it has no such run (see :data:`ROUTING_TRIES`)."""
        for attempt in range(ROUTING_TRIES):
            try:
                return call()
            except ServerError as error:
                if error.status != 404 or "no run" not in str(error) or attempt == ROUTING_TRIES - 1:
                    raise
                time.sleep(ROUTING_PAUSE_S)
        raise AssertionError("unreachable")


class ServerWorkerClient:
    """:class:`~worker_client.WorkerClient`'s interface on a server: ``request`` queues, a thread of its own talks
    to the server, ``poll`` returns the replies in the worker's own form. A ``segment`` or ``refine`` request
    cancels the ``encode`` requests still waiting or running, as the worker does."""

    process = None  # no local process: BackgroundSegmentation never restarts it

    def __init__(self, url: str, token: Optional[str] = None,
                 remote_factory: Callable[[str, Optional[str]], RemoteSegmentation] = RemoteSegmentation) -> None:
        self.remote = remote_factory(url, token)
        self._ids = itertools.count(1)
        self._outgoing: queue.Queue[Optional[tuple]] = queue.Queue()
        self._incoming: queue.Queue[Message] = queue.Queue()
        self._cancelled: set = set()
        self._encodes: set = set()
        self._thread: Optional[threading.Thread] = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="medsam-server-client", daemon=True)
            self._thread.start()

    def request(self, header: dict, arrays: Optional[Dict[str, np.ndarray]] = None) -> int:
        self.start()
        request_id = next(self._ids)
        if header.get("op") == "encode":
            self._encodes.add(request_id)
        elif header.get("op") in ("segment", "refine"):
            self._cancelled.update(self._encodes)
        self._outgoing.put(({**header, "id": request_id}, dict(arrays or {})))
        return request_id

    def cancel(self, request_id: int) -> None:
        self._cancelled.add(request_id)

    def poll(self) -> List[Message]:
        """Every reply that has arrived, oldest first; never waits."""
        return drained(self._incoming)

    def close(self, timeout: float = 5.0) -> None:
        self._outgoing.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self.remote.close()

    def _reply(self, header: dict, arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
        self._incoming.put((header, arrays or {}))

    def _loop(self) -> None:
        while True:
            item = self._outgoing.get()
            if item is None:
                return
            header, arrays = item
            request_id = header["id"]
            try:
                self._handle(header, arrays)
            except Cancelled:
                self._reply({"op": "cancelled", "id": request_id})
            except Exception as exc:  # noqa: BLE001 - every failure is answered; the client goes on
                kind = "input" if isinstance(exc, (ServerInputError, ValueError)) else "runtime"
                self._reply({"op": "error", "id": request_id, "kind": kind,
                             "message": " ".join(str(exc).split()) or type(exc).__name__})
            finally:
                self._cancelled.discard(request_id)
                self._encodes.discard(request_id)

    def _handle(self, header: dict, arrays: Dict[str, np.ndarray]) -> None:
        op, request_id = header.get("op"), header["id"]
        if op == "load":
            health = self.remote.connection.health()
            self._reply({"op": "loaded", "id": request_id,
                         "device": f"{health.get('device') or 'its device'} on the server {self.remote.url}",
                         "acceleration": health.get("acceleration", "")})
        elif op == "forget":
            self.remote.forget()
        elif op in ("segment", "encode", "refine"):
            token = str(header["token"])
            if "volume" in arrays:
                self.remote.put_volume(token, arrays.pop("volume"))
            elif not self.remote.has_volume(token):
                self._reply({"op": "need_volume", "id": request_id})
                return
            keys, settings = key_boxes_from_wire(header["keys"]), settings_from_wire(header["settings"])
            spec = ModelSpec(**header["model"])
            extra = {name: header[name] for name in ("newest", "beyond", "preview", "corrected_slices")
                     if name in header}

            def progress(done: int, total: int, text: str) -> None:
                self._reply({"op": "progress", "id": request_id, "done": done, "total": total, "message": text})

            reply, slabs = self.remote.run(op, token, keys, spec, settings, progress,
                                           lambda: request_id in self._cancelled, extra, arrays)
            if op == "encode":
                if reply.get("preview") is not None:
                    reply["preview"] = self.remote.told(reply["preview"], token, settings)
                self._reply({**reply, "op": "encoded", "id": request_id}, slabs)
            else:
                self._reply({**self.remote.told(reply, token, settings), "op": "result", "id": request_id}, slabs)
        else:
            raise ValueError(f"unknown request {op!r}")
