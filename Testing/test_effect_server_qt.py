"""The Segment Editor effect with Device "MedSAM server", on the Slicer stand-in and a real server on 127.0.0.1:
address and token kept in Slicer's settings, never in the scene; the mask an in-process run writes (issue 17)."""

from __future__ import annotations

import numpy as np
from medsam_server import ServerConfig
from server_fixtures import free_port, server_in_thread
from slicer_scene import mrml_scene_fixture  # noqa: F401
from standin_fixtures import standin_fixture, worker_logic_fixture  # noqa: F401
from test_effect_qt import DEMO_BOXES, add_key_boxes, assert_quiet, demo_volume, open_effect

TOKEN = "effect-test-token-0123456789"


def test_device_server_runs_on_the_server_and_keeps_the_token_out_of_the_scene(standin, mrml_scene, worker_logic,
                                                                              lite_model, embedding_cache, capsys,
                                                                              tmp_path):
    from MedSAMSegmentLib.remote.server_address import SERVER_TOKEN_KEY, SERVER_URL_KEY
    from MedSAMSegmentLib.scene import effect

    config, handles = ServerConfig(port=free_port(), device="cpu", token=TOKEN), {}
    with server_in_thread(config, lite_model, embedding_cache, handles) as url:
        volume, _ = demo_volume(mrml_scene)
        opened = open_effect(standin, mrml_scene, volume, ("lesion",))
        widget = opened.effect
        assert not widget.serverFrame.visible  # local devices: no server fields
        widget.deviceCombo.setCurrentIndex(widget.deviceCombo.findData("server"))
        assert widget.serverFrame.visible and widget.serverTokenEdit.echoMode == widget.serverTokenEdit.Password

        # No address yet: Segment says what to give, nothing runs.
        rois = add_key_boxes(mrml_scene.scene, volume, opened.target(0), DEMO_BOXES)
        widget.segmentButton.click()
        assert standin.app.dialogs and "give the server's address" in standin.app.dialogs[-1].text
        standin.app.dialogs.clear()

        widget.serverUrlEdit.type_text(url)
        widget.serverTokenEdit.type_text(TOKEN)
        widget.serverTokenEdit.finish_editing()
        assert standin.app.settings_values[SERVER_URL_KEY] == url
        assert standin.app.settings_values[SERVER_TOKEN_KEY] == TOKEN
        assert worker_logic.server is not None and worker_logic.server.url == url

        widget.segmentButton.click()
        assert standin.loop.run_until(lambda: widget.segmentButton.enabled, 300), "the run did not end"
        assert widget.statusLabel.text.startswith("Segmented slices 6-8"), widget.statusLabel.text
        assert "on the server" in widget.statusLabel.text

        in_process = effect.MedSAMEffectLogic(model_loader=lambda *unused: lite_model, cache=embedding_cache)
        local_settings = effect.EffectSettings(**{**widget.settings().__dict__, "device": "cpu"})
        outcome = in_process.compute(volume, rois, local_settings)
        np.testing.assert_array_equal(opened.mask(0), outcome.result.mask)
        assert opened.logic.CanUndo()

        # The scene, saved, holds neither the token nor the address.
        saved = tmp_path / "scene.mrml"
        mrml_scene.scene.SetURL(str(saved))
        mrml_scene.scene.Commit()
        text = saved.read_text(errors="replace")
        assert TOKEN not in text and url not in text
        assert_quiet(standin, capsys)

        # The server stops during a run: one dialog naming the server, the segment as it was.
        written = opened.mask(0).copy()
        rois[0].SetSize(*[v * 1.2 for v in rois[0].GetSize()])
        widget.segmentButton.click()
        assert standin.loop.run_until(lambda: widget.progressBar.value > 0 or widget.segmentButton.enabled, 120)
        handles["stop"]()
        assert standin.loop.run_until(lambda: widget.segmentButton.enabled, 120), "the failed run did not end"
        assert len(standin.app.dialogs) == 1 and f"the MedSAM server at {url} did not answer" in \
            standin.app.dialogs[0].text
        np.testing.assert_array_equal(opened.mask(0), written)
        standin.app.dialogs.clear()

        # Back to a local device: runs go to the local worker again.
        widget.deviceCombo.setCurrentIndex(widget.deviceCombo.findData("cpu"))
        assert worker_logic.server is None and not widget.serverFrame.visible
