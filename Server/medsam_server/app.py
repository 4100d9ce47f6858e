"""The HTTP API of a MedSAM server (FastAPI; its OpenAPI description is served at ``/openapi.json``, pages at
``/docs``). See docs/server.md for the exchange a client makes.

Every ``/v1`` request carries ``Authorization: Bearer <token>`` when the server has a token; every run, status
and result request on a session also carries ``X-MedSAM-Session-Key``. Errors answer ``{"detail": one line}``
with 401 (token), 403 (session key), 404 (unknown session, run or volume), 409 (slices to upload first:
``missing``), 410 (session expired), 413 (body too large: answered before the rest is read, and the connection
closed), 422 (a body or value that is not valid), 503 (full).
No body is ever unpickled: arrays travel only in :mod:`MedSAMSegmentLib.remote.remote_protocol` frames.
"""

from __future__ import annotations

import hmac
import queue
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from MedSAMSegmentLib.geometry import GeometryError
from MedSAMSegmentLib.remote.remote_protocol import (
    API_PREFIX,
    FRAME_MEDIA_TYPE,
    FrameError,
    Manifest,
    VolumeError,
    checked_slices,
    slices_read,
    unpack,
)
from MedSAMSegmentLib.service import key_boxes_from_wire, settings_from_wire
from MedSAMSegmentLib.settings import SettingsError

from . import __version__
from .config import ServerConfig
from .model_runner import ModelRunner
from .sessions import ClientSession, Run, SessionProblem, SessionRegistry

#: Longest a status request waits for a run to change, seconds.
MAX_WAIT_S = 10.0
SESSION_KEY_HEADER = "X-MedSAM-Session-Key"
OPS = ("segment", "encode", "refine")


class ApiError(Exception):
    """An answer other than success: ``status`` and one line, plus any extra JSON fields."""

    def __init__(self, status: int, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


@dataclass
class ServerState:
    """What the routes serve from: the model ``runner`` (started by its owner), the ``sessions``, this replica's
    name, and (Ray Serve) ``touch_volume(name)``, awaited with the name of each volume a request works on, so
    that the router sends the volume's later requests to this replica. Filled before the first request: by
    :func:`server.build_server`, or in each replica (:mod:`ray_deployment`)."""

    runner: Optional[ModelRunner] = None
    sessions: Optional[SessionRegistry] = None
    replica: str = ""
    touch_volume: Optional[Callable[[str], Awaitable[object]]] = None

    async def touch(self, volume_id: str) -> None:
        if self.touch_volume is not None:
            await self.touch_volume(volume_id)


def create_app(config: ServerConfig, state: ServerState) -> FastAPI:
    """The application serving ``state`` under ``config``."""
    app = FastAPI(title="MedSAM Segment server", version=__version__,
                  description="Key boxes to 3D masks with MedSAM; volumes sent once, by content, as compressed "
                              "slices. See docs/server.md.")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:  # noqa: ARG001
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 413:  # the rest of the body is not read: end the connection rather than drain it
            headers = {"Connection": "close"}
        return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status, headers=headers)

    @app.exception_handler(SessionProblem)
    async def session_problem(request: Request, exc: SessionProblem) -> JSONResponse:  # noqa: ARG001
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    def authorised(request: Request) -> None:
        if config.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), config.token.encode()):
            raise ApiError(401, "a valid bearer token is required (Authorization: Bearer <token>)")

    def session_of(request: Request, session_id: str) -> ClientSession:
        return state.sessions.get(session_id, request.headers.get(SESSION_KEY_HEADER))

    async def body_of(request: Request) -> bytes:
        """The body, refused with 413 before the rest is read: at once when its declared ``Content-Length`` is
        over the limit, else as soon as what arrived passes it (a chunked body)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise ApiError(413, f"the body of {int(declared)} bytes is larger than the server's limit of "
                                f"{config.max_body_bytes} bytes (--max-upload-mb)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise ApiError(413, f"the body is larger than the server's limit of {config.max_body_bytes} bytes "
                                    "(--max-upload-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def frame_of(request: Request):
        body = await body_of(request)
        try:
            return await run_in_threadpool(unpack, body, 4 * config.max_body_bytes)
        except FrameError as exc:
            status = 413 if "more than" in str(exc) else 422
            raise ApiError(status, str(exc)) from None

    api = [Depends(authorised)]

    @app.get(f"{API_PREFIX}/health", dependencies=api)
    def health() -> dict:
        """The model this server runs, where, and how busy it is."""
        model = state.runner.model()
        return {"api": 1, "version": __version__, "model": state.runner.spec.name,
                "device": getattr(model, "device_description", ""),
                "acceleration": getattr(model, "acceleration", ""), "sessions": len(state.sessions),
                "queued": state.runner.queued(), **state.runner.volumes.summary()}

    @app.post(f"{API_PREFIX}/sessions", status_code=201, dependencies=api)
    def open_session() -> dict:
        """A new session: its id and the key that reads its runs."""
        session = state.sessions.open()
        return {"session": session.session_id, "key": session.key, "timeout_s": state.sessions.timeout_s}

    @app.delete(f"{API_PREFIX}/sessions/{{session_id}}", status_code=204, dependencies=api)
    def close_session(session_id: str, request: Request) -> Response:
        state.sessions.close(session_id, request.headers.get(SESSION_KEY_HEADER))
        return Response(status_code=204)

    @app.put(f"{API_PREFIX}/volumes/{{volume_id}}", dependencies=api)
    async def declare_volume(volume_id: str, request: Request) -> dict:
        """Declare a volume by its manifest (JSON: shape, slice_axis, digests); its name must be the manifest's."""
        try:
            manifest = Manifest.from_wire(await request.json())
        except VolumeError as exc:
            raise ApiError(422, str(exc)) from None
        except ValueError:
            raise ApiError(422, "the volume manifest is not JSON") from None
        if manifest.volume_id != volume_id:
            raise ApiError(422, f"volume {volume_id} is not the name of this manifest ({manifest.volume_id})")
        await state.touch(volume_id)
        stored = state.runner.volumes.declare(manifest)
        return {"volume": volume_id, "present": int(stored.present.sum()), "slices": len(manifest.digests)}

    @app.post(f"{API_PREFIX}/volumes/{{volume_id}}/slices", dependencies=api)
    async def upload_slices(volume_id: str, request: Request) -> dict:
        """Add slices of a declared volume (a frame: ``indices`` and the uint8 array ``slices``), each checked
        against its digest."""
        stored = state.runner.volumes.get(volume_id)
        if stored is None:
            raise ApiError(404, f"no volume {volume_id} on this server; declare it first (PUT its manifest)")
        header, arrays = await frame_of(request)
        try:
            slices = checked_slices(stored.manifest, header, arrays)
        except VolumeError as exc:
            raise ApiError(422, str(exc)) from None
        added = stored.fill(slices)
        return {"volume": volume_id, "added": added, "present": int(stored.present.sum())}

    @app.post(f"{API_PREFIX}/sessions/{{session_id}}/runs", status_code=202, dependencies=api)
    async def start_run(session_id: str, request: Request) -> dict:
        """Start a run (a frame: ``op`` segment, encode or refine, ``volume``, ``keys``, ``settings``, ``model``
        and the op's fields; optionally the volume's ``manifest`` with ``slice_indices`` and the array ``slices``,
        declared and added first); 404 asks for the volume, 409 lists the slices still missing."""
        session = session_of(request, session_id)
        header, arrays = await frame_of(request)
        if "manifest" in header:
            add_attached(header, arrays)
        run = checked_run(session_id, header, arrays)
        await state.touch(str(header["volume"]))
        try:
            state.runner.submit(run)
        except queue.Full:
            raise ApiError(503, "the server's queue is full; try again shortly") from None
        session.add(run)
        return {**run.status(), "replica": state.replica}

    def add_attached(header: dict, arrays: dict) -> None:
        try:
            manifest = Manifest.from_wire(header.pop("manifest"))
            if manifest.volume_id != str(header.get("volume")):
                raise VolumeError(f"volume {header.get('volume')} is not the name of the manifest sent with it")
            stored = state.runner.volumes.declare(manifest)
            indices = header.pop("slice_indices", [])
            stored.fill(checked_slices(manifest, {"indices": indices}, {"slices": arrays.pop("slices", None)}))
        except VolumeError as exc:
            raise ApiError(422, str(exc)) from None

    def checked_run(session_id: str, header: dict, arrays: dict) -> Run:
        op = header.get("op")
        if op not in OPS:
            raise ApiError(422, f"op {op!r}: give one of {', '.join(OPS)}")
        name = str(header.get("volume", ""))
        stored = state.runner.volumes.get(name)
        if stored is None:
            raise ApiError(404, f"no volume {name} on this server; declare it (PUT its manifest) and send its "
                                "slices", need="volume")
        model = (header.get("model") or {}).get("name", state.runner.spec.name)
        if model != state.runner.spec.name:
            raise ApiError(422, f"this server runs the model {state.runner.spec.name!r}, not {model!r}; choose "
                                f"{state.runner.spec.name} or another server")
        try:
            keys = key_boxes_from_wire(header.get("keys") or {})
            settings = settings_from_wire(header.get("settings") or {})
        except (GeometryError, SettingsError, TypeError, ValueError) as exc:
            raise ApiError(422, " ".join(str(exc).split())) from None
        if keys.slice_axis != stored.manifest.slice_axis:
            raise ApiError(422, f"the key boxes are along axis {keys.slice_axis} but volume {name} was sent along "
                                f"axis {stored.manifest.slice_axis}")
        n_slices = len(stored.manifest.digests)
        key_slices = [k.slice_index for k in keys.boxes]
        if any(not 0 <= s < n_slices for s in key_slices):
            raise ApiError(422, f"a key box lies outside the volume's {n_slices} slices: {key_slices}")
        missing = stored.missing(slices_read(key_slices, settings.strategy, n_slices, ahead=op == "encode"))
        if missing:
            raise ApiError(409, f"{len(missing)} slice(s) of volume {name} must be sent first", missing=missing)
        return Run(op, session_id, header, arrays)

    def run_of(request: Request, session_id: str, run_id: str) -> Run:
        session = session_of(request, session_id)
        run = session.runs.get(run_id)
        if run is None:
            raise ApiError(404, f"no run {run_id} in session {session_id}")
        return run

    @app.get(f"{API_PREFIX}/sessions/{{session_id}}/runs/{{run_id}}", dependencies=api)
    def run_status(session_id: str, run_id: str, request: Request, since: int = -1, wait: float = 0.0) -> dict:
        """The run's state and progress; with ``wait``, after it changes from version ``since`` (at most
        :data:`MAX_WAIT_S` seconds)."""
        run = run_of(request, session_id, run_id)
        if wait > 0 and run.version == since and not run.finished:
            run.wait_change(since, min(float(wait), MAX_WAIT_S))
        return {**run.status(), "replica": state.replica}

    @app.get(f"{API_PREFIX}/sessions/{{session_id}}/runs/{{run_id}}/result", dependencies=api,
             response_class=Response, responses={200: {"content": {FRAME_MEDIA_TYPE: {}}}})
    def run_result(session_id: str, run_id: str, request: Request) -> Response:
        """A finished run's compressed result frame (the mask of the segmented slices and its account)."""
        run = run_of(request, session_id, run_id)
        if run.state != "done":
            raise ApiError(409, f"run {run_id} is {run.state}" + (f": {run.message}" if run.message else ""),
                           state=run.state, kind=run.kind)
        return Response(run.body, media_type=FRAME_MEDIA_TYPE)

    @app.delete(f"{API_PREFIX}/sessions/{{session_id}}/runs/{{run_id}}", status_code=202, dependencies=api)
    def cancel_run(session_id: str, run_id: str, request: Request) -> dict:
        """Ask a run to stop; its state becomes ``cancelled`` unless it finished first."""
        run = run_of(request, session_id, run_id)
        run.cancel_requested = True
        return run.status()

    return app
