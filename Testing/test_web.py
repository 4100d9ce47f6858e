"""The browser annotator without a browser: the MedSAM effect in trame-slicer's app (offscreen rendering), on real
MRML, with the real LiteMedSAM; the ``web`` command's options."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("trame_slicer")
from medsam_web.cli import exposure_warning, is_loopback, prepare_rendering  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(sys.executable), "medsam-segment")


@pytest.fixture(scope="module")
def cli_demo_mask(tmp_path_factory):
    """The command line's mask of the bundled sample from its key boxes."""
    from MedSAMSegmentLib import demo, io

    out = str(tmp_path_factory.mktemp("cli") / "mask.nii.gz")
    subprocess.run([SCRIPT, "segment", demo.DEMO_IMAGE, "--boxes", demo.DEMO_BOXES, "-o", out], check=True,
                   capture_output=True, timeout=300)
    return io.read_mask(out)[0]


@pytest.fixture
def web_app(lite_model):
    """The app on an unstarted trame server, with the sample loaded and the session's model for its runs."""
    prepare_rendering()
    from medsam_web.app import MedSAMWebApp
    from MedSAMSegmentLib.scene.effect import MedSAMEffectLogic
    from trame.app import get_server

    app = MedSAMWebApp(get_server(f"medsam_web_test_{id(object())}", client_type="vue3"))
    app.effect.logic = MedSAMEffectLogic(model_loader=lambda *args: lite_model)  # the session's model
    app.load_sample()
    return app


def segment_mask(app):
    from MedSAMSegmentLib.scene.mrml_segments import segment_mask

    editor = app.editor
    return segment_mask(editor.active_segmentation_node, editor.active_segment_id, editor.active_volume_node)


@pytest.mark.needs_time(300, "the real model on the sample, and the command line once")
def test_segment_on_the_sample_writes_the_command_lines_mask_in_one_undo_step(web_app, cli_demo_mask):
    assert [box["where"] for box in web_app.state.medsam_boxes] == ["slice 5", "slice 8", "slice 11"]
    asyncio.run(web_app.segment())
    assert web_app.state.medsam_status.startswith("Segmented slices 5-11"), web_app.state.medsam_status
    mask = segment_mask(web_app)
    assert np.array_equal(mask, cli_demo_mask)
    assert web_app.state.medsam_voxels == int(cli_demo_mask.sum())
    web_app.undo()
    assert web_app.state.medsam_voxels == 0
    web_app.redo()
    assert np.array_equal(segment_mask(web_app), cli_demo_mask)
    # Saved from the page: the key boxes as the command line's box file, the segmentation as NIfTI and .seg.nrrd.
    assert b'"slice_axis": 0' in web_app.key_boxes_file()
    assert web_app.segmentation_file("nifti")[:2] == b"\x1f\x8b"  # gzip
    assert b"Segment0_Name" in web_app.segmentation_file("seg")[:20000]


def test_a_cancelled_run_leaves_the_segment_as_it_was(web_app):
    def progress(fraction, message):  # the first progress report cancels the run
        web_app.effect.cancel()

    with pytest.raises(Exception, match="cancel"):
        asyncio.run(web_app.effect.segment(progress))
    assert segment_mask(web_app).sum() == 0 and not web_app.effect.running


def test_without_a_segment_or_boxes_the_page_says_what_to_do(web_app):
    for box in list(web_app.state.medsam_boxes):
        web_app.delete_box(box["id"])
    assert web_app.state.medsam_boxes == []
    asyncio.run(web_app.segment())
    assert web_app.state.medsam_error and "No key boxes for this segment" in web_app.state.medsam_status
    web_app.editor.set_active_segment_id("")
    web_app.place_box()
    assert web_app.state.medsam_error and "no segment is selected" in web_app.state.medsam_status.lower()


def test_place_key_boxes_puts_the_views_in_place_mode_for_a_box_of_the_selected_segment(web_app):
    from MedSAMSegmentLib.scene import key_box_nodes

    interaction = web_app.slicer_app.app_logic.GetInteractionNode()
    web_app.place_box()
    assert web_app.state.medsam_placing and interaction.GetCurrentInteractionMode() == interaction.Place
    pending = web_app.effect._placement.pending
    assert pending is not None and key_box_nodes._belongs_to(pending, web_app.effect.target())
    web_app.place_box()  # again: stop; the unfinished box is removed
    assert not web_app.state.medsam_placing and pending.GetScene() is None
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform


def test_loading_another_volume_drops_the_boxes_and_the_last_run(web_app, tmp_path, demo_lesion):
    import SimpleITK as sitk

    image, _ = demo_lesion
    path = str(tmp_path / "other.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(image.array[:, ::2, ::2].copy()), path)
    web_app.load_image(path)
    assert web_app.state.medsam_boxes == [] and web_app.state.medsam_segment
    assert web_app.editor.active_volume_node.GetImageData().GetDimensions() == (256, 256, 16)
    (tmp_path / "notes.nii.gz").write_text("not an image")
    for bad in ("missing.nii.gz", "notes.nii.gz"):
        with pytest.raises(ValueError, match="could not be read as a volume"):
            web_app.load_image(str(tmp_path / bad))
    assert web_app.editor.active_volume_node.GetImageData().GetDimensions() == (256, 256, 16)  # still there


def test_the_page_binds_to_this_machine_unless_told_and_then_says_how_to_protect_it():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("gpu-box")
    warning = exposure_warning("0.0.0.0", 8080)
    assert "no login" in warning and "ssh -L 8080:127.0.0.1:8080" in warning


@pytest.mark.parametrize("args, line", [
    (["web", "/no/such/scan.nii.gz"], "/no/such/scan.nii.gz: no such file"),
    (["web", "--port", "70000"], "--port 70000: give a port from 0 to 65535"),
])
def test_bad_web_input_exits_2_with_one_line(args, line):
    run = subprocess.run([SCRIPT, *args], capture_output=True, encoding="utf-8", timeout=120, check=False)
    assert run.returncode == 2 and line in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
