"""The ``medsam-segment`` command end to end in real processes, and the bundled demo."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_data_path
from MedSAMSegmentLib.metrics import dice

CORD_IMAGE = shared_data_path("spinal_cord", "t2s_uncropped.nii.gz")
CORD_LABEL = shared_data_path("spinal_cord", "t2s_uncropped_gmseg_manual.nii.gz")


def run_cli(*args, timeout=600):
    """The command in its own process; its output read as UTF-8 whatever the locale (the progress bar's blocks)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "MedSAMSegmentLib.cli", *args], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=timeout, env=env)


def cord_boxes(tmp_path, step=5):
    label = sitk.GetArrayFromImage(sitk.ReadImage(CORD_LABEL)) > 0
    slices = np.flatnonzero(label.any(axis=(1, 2)))
    chosen = sorted(set(slices[::step].tolist()) | {int(slices[-1])})
    boxes = []
    for s in chosen:
        rows, cols = np.flatnonzero(label[s].any(1)), np.flatnonzero(label[s].any(0))
        boxes.append({"slice": s, "box": [int(cols[0]) - 3, int(rows[0]) - 3, int(cols[-1]) + 3, int(rows[-1]) + 3]})
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"slice_axis": 0, "boxes": boxes}))
    return str(path), label


@pytest.mark.slow
def test_segment_writes_mask_and_segmentation_on_the_input_grid(tmp_path):
    boxes, label = cord_boxes(tmp_path)
    out = str(tmp_path / "cord.seg.nrrd")
    cache = str(tmp_path / "cache")
    done = run_cli("segment", CORD_IMAGE, "--boxes", boxes, "-o", out, "--cache-dir", cache, "--device", "cpu",
                   "--name", "grey matter")
    assert done.returncode == 0, done.stderr
    assert "model lite on CPU" in done.stdout and "predicted IoU per slice" in done.stdout
    written, source = sitk.ReadImage(out), sitk.ReadImage(CORD_IMAGE)
    assert written.GetSize() == source.GetSize()
    assert written.GetSpacing() == pytest.approx(source.GetSpacing())
    assert written.GetOrigin() == pytest.approx(source.GetOrigin())
    assert written.GetDirection() == pytest.approx(source.GetDirection())
    assert written.GetMetaData("Segment0_Name") == "grey matter"
    mask = sitk.GetArrayFromImage(written) > 0
    assert dice(mask, label) > 0.25  # grey matter inside the cord: measured 0.284 with the defaults

    # A second run with the cache encodes nothing and gives the same mask.
    again = str(tmp_path / "again.nii.gz")
    second = run_cli("segment", CORD_IMAGE, "--boxes", boxes, "-o", again, "--cache-dir", cache, "--device", "cpu",
                     "--quiet")
    assert second.returncode == 0, second.stderr
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(again)) > 0, mask)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["missing.nii.gz", "--boxes", "BOXES", "-o", "OUT.nii.gz"], "does not exist"),
        ([CORD_IMAGE, "--boxes", "missing.json", "-o", "OUT.nii.gz"], "box file missing.json does not exist"),
        ([CORD_IMAGE, "--boxes", "BOXES", "-o", "OUT.txt"], "use one of"),
        ([CORD_IMAGE, "--boxes", "BOXES", "-o", "OUT.nii.gz", "--model", "vit_b"], "needs --checkpoint"),
        ([CORD_IMAGE, "--boxes", "FAR", "-o", "OUT.nii.gz"], "wholly outside"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, arguments, message):
    boxes, _ = cord_boxes(tmp_path)
    far = tmp_path / "far.json"
    far.write_text(json.dumps({"slice_axis": 0, "boxes": [{"slice": 3, "box": [900, 900, 950, 950]}]}))
    replace = {"BOXES": boxes, "FAR": str(far), "OUT.nii.gz": str(tmp_path / "out.nii.gz"),
               "OUT.txt": str(tmp_path / "out.txt")}
    done = run_cli("segment", *[replace.get(a, a) for a in arguments], "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not os.path.exists(tmp_path / "out.nii.gz")


@pytest.mark.slow
def test_demo_prints_dice_and_writes_its_files(tmp_path):
    from MedSAMSegmentLib.demo import run_demo

    outcome = run_demo(str(tmp_path / "demo"), device="cpu", verbose=False)
    assert outcome.dice > 0.88  # measured 0.929
    for path in outcome.files.values():
        assert os.path.getsize(path) > 0
    montage = sitk.ReadImage(outcome.files["montage"])
    assert montage.GetSize()[0] >= 512


def test_out_of_memory_warnings_reach_the_user(capsys):
    from MedSAMSegmentLib import cli

    cli._show_warning("out of memory on cpu; retrying with batches of 2 slices", ResourceWarning, "engine.py", 1)
    cli._show_warning("internal detail", DeprecationWarning, "engine.py", 1)
    err = capsys.readouterr().err
    assert err == "medsam-segment: warning: out of memory on cpu; retrying with batches of 2 slices\n"


@pytest.mark.slow
def test_segment_refines_from_a_corrected_result(tmp_path):
    """``--corrected``: the expert's slices of an earlier result are written as given, the others refined or kept,
    and bad use gets one line and exit 2."""
    from MedSAMSegmentLib import demo
    from MedSAMSegmentLib import io as image_io

    volume = image_io.read_image(demo.DEMO_IMAGE)
    reference, _ = image_io.read_mask(demo.DEMO_IMAGE)
    first = str(tmp_path / "first.nii.gz")
    common = ["--boxes", demo.DEMO_BOXES, "--modality", "none", "--device", "cpu", "--quiet"]
    assert run_cli("segment", demo.DEMO_IMAGE, *common, "-o", first).returncode == 0
    result, _ = image_io.read_mask(first)
    edited = result.copy()
    edited[[6, 10]] = reference[[6, 10]]  # the expert redraws two slices
    corrected = str(tmp_path / "corrected.nii.gz")
    image_io.write_mask(corrected, edited, volume)

    out = str(tmp_path / "refined.nii.gz")
    done = run_cli("segment", demo.DEMO_IMAGE, *common[:-1], "-o", out, "--corrected", corrected)
    assert done.returncode == 0, done.stderr
    assert f"corrected slices in {corrected}: 6 10" in done.stdout
    assert "refined" in done.stdout or "kept the original masks" in done.stdout
    refined, _ = image_io.read_mask(out)
    np.testing.assert_array_equal(refined[[6, 10]], reference[[6, 10]].astype(bool))

    one = run_cli("segment", demo.DEMO_IMAGE, *common, "-o", out, "--corrected", corrected, "--corrected-slices", "6")
    assert one.returncode == 2 and "correct at least 2 slices" in one.stderr and one.stderr.count("\n") == 1
    lonely = run_cli("segment", demo.DEMO_IMAGE, *common, "-o", out, "--corrected-slices", "6", "10")
    assert lonely.returncode == 2 and "--corrected-slices needs --corrected" in lonely.stderr
    small = str(tmp_path / "small.npz")
    np.savez(small, imgs=np.zeros((3, 8, 8), np.uint8), gts=np.zeros((3, 8, 8), np.uint8))
    misfit = run_cli("segment", demo.DEMO_IMAGE, *common, "-o", out, "--corrected", small)
    assert misfit.returncode == 2 and "differs from the image's" in misfit.stderr
