"""The one request dispatch that the worker process and the server's model runner both call."""

from __future__ import annotations

import numpy as np
import pytest
from MedSAMSegmentLib.engine import Cancelled
from MedSAMSegmentLib.geometry import GeometryError, KeyBox, KeyBoxSet
from MedSAMSegmentLib.remote import request_dispatch
from MedSAMSegmentLib.remote.request_dispatch import failure_reply, run_request, throttled
from MedSAMSegmentLib.service import ModelSpec, SegmentationService, key_boxes_to_wire, settings_to_wire
from MedSAMSegmentLib.settings import SegmentationSettings
from stand_in_model import StandInModel


def _volume():
    volume = np.zeros((6, 32, 32), np.uint8)
    volume[1:5, 10:20, 8:18] = 200
    return volume


def _header(**extra):
    keys = KeyBoxSet(0, [KeyBox(1, (6.0, 8.0, 21.0, 23.0)), KeyBox(4, (6.0, 8.0, 21.0, 23.0))])
    return {"keys": key_boxes_to_wire(keys), "settings": settings_to_wire(SegmentationSettings(modality="none")),
            **extra}


def _service(model):
    service = SegmentationService(model_loader=lambda *unused: model)
    service.put_volume("v", _volume(), normalised=True)
    return service


def test_throttled_emits_the_first_step_the_last_and_at_most_one_in_each_interval():
    emitted = []
    progress = throttled(lambda *step: emitted.append(step), interval_s=3600.0)
    for done in range(5):
        progress(done, 5, f"slice {done}")
    progress(5, 5, "done")
    assert emitted == [(0, 5, "slice 0"), (5, 5, "done")]


def test_failure_reply_says_whose_fault_in_one_line():
    assert failure_reply(GeometryError("the box\n lies outside")) == ("input", "the box lies outside")
    assert failure_reply(RuntimeError()) == ("runtime", "RuntimeError")


def test_segment_gives_the_result_header_and_its_slab():
    model = StandInModel("bright")
    steps = []
    reply, arrays = run_request(_service(model), "segment", "v", np.eye(4), _header(), {}, ModelSpec(device="cpu"),
                                lambda *step: steps.append(step), lambda: False)
    assert reply["op"] == "result" and "id" not in reply
    assert set(arrays) == {"slab"} and arrays["slab"].any()
    assert steps and steps[-1][0] == steps[-1][1]


def test_encode_ahead_replies_with_the_count_and_a_preview_only_when_asked():
    model = StandInModel("bright")
    service = _service(model)
    reply, arrays = run_request(service, "encode", "v", np.eye(4), _header(newest=4, beyond=None), {},
                                ModelSpec(device="cpu"), lambda *step: None, lambda: False)
    assert reply == {"op": "encoded", "count": reply["count"]} and reply["count"] > 0 and arrays == {}
    reply, arrays = run_request(service, "encode", "v", np.eye(4), _header(newest=4, beyond=None, preview=True), {},
                                ModelSpec(device="cpu"), lambda *step: None, lambda: False)
    assert "preview" in reply and "slab" in arrays


def test_a_cancelled_run_raises_cancelled_and_an_unknown_op_is_refused():
    with pytest.raises(Cancelled):
        run_request(_service(StandInModel("bright")), "segment", "v", np.eye(4), _header(), {},
                    ModelSpec(device="cpu"), lambda *step: None, lambda: True)
    with pytest.raises(ValueError, match="unknown request 'paint'"):
        run_request(_service(StandInModel("bright")), "paint", "v", np.eye(4), _header(), {},
                    ModelSpec(device="cpu"), lambda *step: None, lambda: False)
    assert request_dispatch.MODEL_OPS == ("encode", "segment", "refine")
