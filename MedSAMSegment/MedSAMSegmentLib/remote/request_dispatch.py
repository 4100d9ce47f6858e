"""One dispatch of a model request for both remote runners: the worker process (:mod:`worker`) and the team
server's model runner (``Server/medsam_server/model_runner.py``).

A request is an ``op`` (``encode``, ``segment`` or ``refine``) with its wire header (key boxes, settings, and for
``encode`` ``newest``, ``beyond`` and ``preview``; for ``refine`` ``corrected_slices``) and arrays (``corrected``).
:func:`run_request` runs it on a :class:`~service.SegmentationService` and gives the reply's header (``op``
``encoded`` or ``result``, without the request id) and arrays; :func:`failure_reply` turns what it raised into the
one-line reason and its kind. The transports (pipes, HTTP) stay with their callers.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Tuple

import numpy as np

from ..engine import CancelCheck
from ..service import (
    ModelSpec,
    SegmentationService,
    corrected_from_wire,
    key_boxes_from_wire,
    result_header,
    settings_from_wire,
)

#: The requests :func:`run_request` runs.
MODEL_OPS = ("encode", "segment", "refine")

#: ``progress(done, total, text)``.
Progress = Callable[[int, int, str], None]


def input_error_types() -> tuple:
    """Exceptions that mean the user's input is wrong (answered with ``kind: input``)."""
    from ..geometry import GeometryError
    from ..intensity import IntensityError
    from ..io import InputError
    from ..models import CheckpointError

    return (GeometryError, IntensityError, InputError, CheckpointError, ValueError)


def failure_reply(exc: BaseException) -> Tuple[str, str]:
    """``(kind, line)`` for a failed request: ``input`` when the user's input is wrong, ``runtime`` otherwise, and
    the exception's text on one line (its type's name when it has none)."""
    kind = "input" if isinstance(exc, input_error_types()) else "runtime"
    return kind, " ".join(str(exc).split()) or type(exc).__name__


def throttled(emit: Progress, interval_s: float) -> Progress:
    """``emit`` called at most once every ``interval_s`` seconds, and always for the last step (done >= total)."""
    last = [float("-inf")]

    def progress(done: int, total: int, text: str) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= interval_s:
            last[0] = now
            emit(int(done), int(total), str(text))

    return progress


def run_request(service: SegmentationService, op: str, token: str, ijk_to_world: np.ndarray, header: dict,
                arrays: Dict[str, np.ndarray], spec: ModelSpec, progress: Progress,
                cancel: CancelCheck) -> Tuple[dict, Dict[str, np.ndarray]]:
    """Run the request ``op`` on the volume the service holds as ``token``; the reply's header and arrays.

    Raises :class:`~engine.Cancelled` when ``cancel()`` turns true, ``ValueError`` for an ``op`` outside
    :data:`MODEL_OPS`, and whatever the run raises (see :func:`failure_reply`).
    """
    if op not in MODEL_OPS:
        raise ValueError(f"unknown request {op!r}")
    keys = key_boxes_from_wire(header["keys"])
    settings = settings_from_wire(header["settings"])
    if op == "encode":
        newest, beyond = header.get("newest"), header.get("beyond")
        done = service.encode_ahead(token, ijk_to_world, keys, spec, settings,
                                    None if newest is None else int(newest),
                                    None if beyond is None else int(beyond), cancel,
                                    preview=bool(header.get("preview", False)))
        if done.preview is None:
            return {"op": "encoded", "count": done.count}, {}
        preview, preview_arrays = result_header(done.preview)
        return {"op": "encoded", "count": done.count, "preview": preview}, preview_arrays
    if op == "refine":
        corrected = corrected_from_wire(header.get("corrected_slices", []),
                                        arrays.get("corrected", np.zeros((0, 0, 0), np.uint8)))
        outcome = service.refine(token, ijk_to_world, keys, spec, settings, corrected, progress, cancel)
    else:
        outcome = service.segment(token, ijk_to_world, keys, spec, settings, progress=progress, cancel=cancel)
    reply, reply_arrays = result_header(outcome)
    return {"op": "result", **reply}, reply_arrays
