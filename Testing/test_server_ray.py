"""``medsam-segment serve --replicas 2``: the server on Ray Serve (a private Ray on 127.0.0.1, started by the
test), each volume's requests sent to the replica holding its embeddings, every mask the local one (issue 17)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess

import numpy as np
import pytest
from MedSAMSegmentLib import demo, pipeline
from MedSAMSegmentLib import io as image_io
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.remote.remote_client import RemoteSegmentation
from MedSAMSegmentLib.service import ModelSpec, SegmentationService
from server_fixtures import free_port, start_server_process

# Ray itself is never imported here (the server process imports it): a Ray imported during collection would
# ignore the loopback setting other tests make before their own import (test_batch's cluster).
if importlib.util.find_spec("ray") is None or importlib.util.find_spec("grpc") is None:
    pytest.skip("Ray Serve is not installed (pip install 'medsam-segment[serve-ray]')", allow_module_level=True)

SPEC = ModelSpec("lite", None, "cpu")
SETTINGS = pipeline.SegmentationSettings()


@pytest.mark.slow
@pytest.mark.ray
def test_two_replicas_route_each_volume_to_one_replica_and_give_the_local_masks(lite_model, embedding_cache,
                                                                                tmp_path, monkeypatch):
    image = image_io.read_image(demo.DEMO_IMAGE)
    volumes = [np.roll(image.array, 3 * v, axis=2) for v in range(4)]
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's nodes on 127.0.0.1 (see ray_executor)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    port = free_port()
    process = start_server_process(port, "--replicas", "2", log_path=str(tmp_path / "serve.log"),
                                   new_session=True)
    local = SegmentationService(model_loader=lambda *args: lite_model, cache=embedding_cache, kept_volumes=4)
    replicas = {}
    try:
        for v, array in enumerate(volumes):
            remote = RemoteSegmentation(f"http://127.0.0.1:{port}")
            remote.put_volume("scan", array)
            local.put_volume(f"v{v}", array)
            for dx in (0, 2):
                keys = KeyBoxSet(0, [KeyBox(6, (266.0 + dx, 229.0, 322.0, 280.0)),
                                     KeyBox(10, (262.0, 228.0, 329.0, 286.0))])
                got = remote.segment("scan", keys, SPEC, SETTINGS).result.mask
                expected = local.segment(f"v{v}", np.eye(4), keys, SPEC, SETTINGS).result.mask
                np.testing.assert_array_equal(got, expected, err_msg=f"volume {v}, box moved by {dx}")
                replicas.setdefault(v, set()).add(remote.last_replica)
            remote.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server stops Serve and its private Ray
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert all(len(names) == 1 and "" not in names for names in replicas.values()), replicas
    assert len(set().union(*replicas.values())) == 2, replicas  # both replicas served volumes
