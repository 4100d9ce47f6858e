"""Runs on the worker process, driven by polling from a GUI timer: the GUI thread only queues and reads messages.

:class:`BackgroundSegmentation` keeps one worker for the Slicer session (so the model and the embeddings stay
loaded between runs), starts at most one run at a time, and turns the worker's replies into :class:`RunEvent`
values for the GUI. Each request has an owner (the effect, the module page): :meth:`~BackgroundSegmentation.poll`
gives an owner only the events of its own requests, so two users of one worker never read each other's results.
Writing the result into the scene is the caller's job, on its own (main) thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from ..geometry import KeyBoxSet
from ..pipeline import SegmentationSettings
from ..service import (
    KEPT_VOLUMES,
    ModelSpec,
    ServiceResult,
    corrected_to_wire,
    key_boxes_to_wire,
    result_from_wire,
    settings_to_wire,
)
from .worker_client import WorkerClient


@dataclass
class RunEvent:
    """What happened since the last poll: ``progress``, ``finished``, ``cancelled``, ``failed``, ``status``, or
    ``encoded`` (slices encoded ahead, in ``done``; the preview of the boxes so far in ``result`` when asked)."""

    kind: str
    message: str = ""
    done: int = 0
    total: int = 0
    result: Optional[ServiceResult] = None
    input_error: bool = False  # a failure caused by what the user gave (boxes, image, settings)


@dataclass
class _Run:
    request_id: int
    header: dict
    volume: Callable[[], np.ndarray]
    owner: object = None
    cancel_requested: bool = False
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)  # sent with every copy of the request

    def send(self, client: WorkerClient, with_volume: bool) -> None:
        """Send (again) on ``client``; ``request_id`` becomes the new request's."""
        arrays = dict(self.arrays, volume=self.volume()) if with_volume else (self.arrays or None)
        self.request_id = client.request(self.header, arrays)


class BackgroundSegmentation:
    """The session's worker and its one active run. Every method returns at once."""

    def __init__(self, client_factory: Callable[[], WorkerClient] = WorkerClient) -> None:
        self._client_factory = client_factory
        self._client: Optional[WorkerClient] = None
        self._sent_tokens: List[str] = []
        self._run: Optional[_Run] = None
        self._prepare_ids: Dict[int, object] = {}  # model-load request id -> owner
        self._encodes: Dict[int, _Run] = {}  # encode-ahead requests by id
        self._last_encode: Dict[object, dict] = {}  # owner -> its last encode-ahead request, while it stands
        self._inbox: Dict[object, List[RunEvent]] = {}  # owner -> events not polled yet

    @property
    def running(self) -> bool:
        return self._run is not None

    def _worker(self) -> WorkerClient:
        if self._client is None or (self._client.process is not None and not self._client.running):
            self._client = self._client_factory()
            self._sent_tokens = []
        return self._client

    def prepare(self, spec: ModelSpec, owner: object = None) -> None:
        """Start the worker and load the model now, so that the first run does not wait for it."""
        self._prepare_ids[self._worker().request({"op": "load", "model": asdict(spec)})] = owner

    def start(self, token: str, volume: Callable[[], np.ndarray], ijk_to_world: np.ndarray, keys: KeyBoxSet,
              spec: ModelSpec, settings: SegmentationSettings, owner: object = None,
              corrected: Optional[Dict[int, np.ndarray]] = None) -> None:
        """Start a run for ``owner``; with ``corrected`` ({slice index: the expert's bool mask of that slice}),
        Refine from my edits on the run of ``keys`` (:meth:`service.SegmentationService.refine`). ``volume()``
        returns the voxels (a copy the caller will not change); it is called only when the worker does not hold
        ``token``'s voxels yet. Raises RuntimeError while another run is active, unless that run was cancelled
        (its late replies are then ignored)."""
        if self._run is not None and not self._run.cancel_requested:
            raise RuntimeError("a MedSAM run is already in progress; wait for it or cancel it")
        header = {"op": "segment", "token": token, "ijk_to_world": np.asarray(ijk_to_world, float).tolist(),
                  "keys": key_boxes_to_wire(keys), "model": asdict(spec), "settings": settings_to_wire(settings)}
        extra: Dict[str, np.ndarray] = {}
        if corrected is not None:
            header["op"] = "refine"
            header["corrected_slices"], extra["corrected"] = corrected_to_wire(corrected)
        client = self._worker()
        run = _Run(-1, header, volume, owner, arrays=extra)
        run.send(client, with_volume=token not in self._sent_tokens)
        self._remember_token(token)
        self._run = run

    def encode_ahead(self, token: str, volume: Callable[[], np.ndarray], ijk_to_world: np.ndarray, keys: KeyBoxSet,
                     spec: ModelSpec, settings: SegmentationSettings, newest: Optional[int] = None,
                     beyond: Optional[int] = None, owner: object = None, preview: bool = False,
                     again: bool = False) -> bool:
        """Encode, before Segment is pressed, the views a run from ``keys`` will read, and ``beyond`` slices past
        the ``newest`` key slice (default: the user's spacing, :func:`engine.lookahead.speculation_depth`); their
        embeddings are then cached. With ``preview``, the ``encoded`` event carries the result of the boxes so far
        (decoded after the views between them). It replaces ``owner``'s earlier
        encode-ahead still under way (cancelled: the boxes changed); a run started later takes priority and cancels
        what is still to encode. An ``encoded`` event follows.

        Returns False, sending nothing, when the request is ``owner``'s last one again (same voxels token, key boxes,
        newest slice, model and settings) and that one is under way or answered ``encoded`` by the worker still
        running; ``again`` sends it all the same (a preview is wanted and none is shown)."""
        client = self._worker()
        header = {"op": "encode", "token": token, "ijk_to_world": np.asarray(ijk_to_world, float).tolist(),
                  "keys": key_boxes_to_wire(keys), "newest": None if newest is None else int(newest),
                  "beyond": None if beyond is None else int(beyond), "preview": bool(preview), "model": asdict(spec),
                  "settings": settings_to_wire(settings)}
        if not again and self._last_encode.get(owner) == header:
            return False
        for request_id, earlier in list(self._encodes.items()):
            if earlier.owner is owner and not earlier.cancel_requested:
                earlier.cancel_requested = True
                client.cancel(request_id)
        encode = _Run(-1, header, volume, owner)
        encode.send(client, with_volume=token not in self._sent_tokens)
        self._remember_token(token)
        self._encodes[encode.request_id] = encode
        self._last_encode[owner] = header
        return True

    def _remember_token(self, token: str) -> None:
        if token in self._sent_tokens:
            self._sent_tokens.remove(token)
        self._sent_tokens.append(token)
        del self._sent_tokens[:-KEPT_VOLUMES]

    def cancel(self, owner: object = None) -> None:
        """Ask the active run to stop (only ``owner``'s run, when an owner is given); a ``cancelled`` event
        follows, also when the run's result arrives first (it is dropped)."""
        if owner is not None and (self._run is None or self._run.owner is not owner):
            return
        if self._run is not None and not self._run.cancel_requested:
            self._run.cancel_requested = True
            self._client.cancel(self._run.request_id)

    def forget(self) -> None:
        """Drop the worker's volumes and embeddings (the scene was closed); the model stays loaded."""
        self.cancel()
        if self._client is not None and self._client.running:
            self._client.request({"op": "forget"})
        self._sent_tokens = []
        self._last_encode.clear()

    def close(self) -> None:
        """Stop the worker process."""
        if self._client is not None:
            self._client.close()
        self._client = None
        self._run = None
        self._sent_tokens = []
        self._last_encode.clear()

    def poll(self, owner: object = None) -> List[RunEvent]:
        """``owner``'s events since its last call, oldest first."""
        self._inbox.setdefault(owner, [])
        if self._client is not None:
            for header, arrays in self._client.poll():
                for recipient, event in self._events(header, arrays):
                    self._inbox.setdefault(recipient, []).append(event)
        events, self._inbox[owner] = self._inbox[owner], []  # the owner stays known, for broadcasts
        return events

    def _events(self, header: dict, arrays: dict) -> List[tuple]:
        """``(owner, event)`` pairs for one reply of the worker."""
        if header.get("op") == "exited" and self._run is None:  # nobody's run: every owner is told
            event = self._event(header, arrays)
            return [(owner, event) for owner in list(self._inbox)]
        owner = self._owner_of(header.get("id"))
        event = self._event(header, arrays)
        return [] if event is None else [(owner, event)]

    def _owner_of(self, request_id) -> object:
        if request_id in self._encodes:
            return self._encodes[request_id].owner
        if request_id in self._prepare_ids:
            return self._prepare_ids[request_id]
        return self._run.owner if self._run is not None else None

    def _encode_event(self, op: str, header: dict, arrays: dict) -> Optional[RunEvent]:
        encode = self._encodes.pop(header["id"])
        if op == "need_volume":
            self._remember_token(encode.header["token"])
            encode.send(self._client, with_volume=True)
            self._encodes[encode.request_id] = encode
            return None
        if op == "encoded":
            preview = header.get("preview")
            return RunEvent("encoded", done=int(header.get("count", 0)),
                            result=None if preview is None else result_from_wire(preview, arrays))
        if self._last_encode.get(encode.owner) == encode.header:
            del self._last_encode[encode.owner]  # not done: the same request may be sent again
        if op == "error":
            return RunEvent("status", f"encoding ahead failed: {header.get('message')}")
        return None  # cancelled: a run took priority

    def _event(self, header: dict, arrays: dict) -> Optional[RunEvent]:
        op = header.get("op")
        run = self._run
        if op == "exited":
            self._sent_tokens = []
            self._run = None
            self._encodes.clear()
            self._last_encode.clear()
            text = (f"the MedSAM worker process stopped (exit code {header.get('returncode')}): "
                    f"{header.get('message') or 'no message'}; press Segment to start it again")
            return RunEvent("failed" if run else "status", text)
        if header.get("id") in self._encodes:
            return self._encode_event(op, header, arrays)
        if header.get("id") in self._prepare_ids:
            del self._prepare_ids[header["id"]]
            if op == "error":
                return RunEvent("status", f"the model could not be loaded: {header.get('message')}")
            using = f"; using {header['acceleration']}" if header.get("acceleration") else ""
            return RunEvent("status", f"model ready on {header.get('device') or 'the CPU'}{using}")
        if run is None or header.get("id") != run.request_id:
            return None  # a reply to a request that is no longer active
        if op == "progress":
            return RunEvent("progress", str(header.get("message", "")), int(header["done"]), int(header["total"]))
        if op == "need_volume":
            run.send(self._client, with_volume=True)
            self._remember_token(run.header["token"])
            if run.cancel_requested:
                self._client.cancel(run.request_id)
            return None
        self._run = None
        if op == "result" and run.cancel_requested:
            op = "cancelled"  # the result beat the cancel: a cancelled run's result is never delivered
        if op == "result":
            return RunEvent("finished", result=result_from_wire(header, arrays))
        if op == "cancelled":
            return RunEvent("cancelled", "Cancelled; the segment was not changed.")
        return RunEvent("failed", str(header.get("message", "the run failed")),
                        input_error=header.get("kind") == "input")
