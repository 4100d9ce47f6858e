"""What a run reports: ``engine.flag_slices`` (slices worth a second look) and the summary the command line prints
(``segmented slices a-b ... voxels``, ``predicted IoU per slice``, ``review slice N: reason``) on the bundled demo,
checked against the written mask and an in-process run; the run writes nothing under the user's home."""

from __future__ import annotations

import contextlib
import io as text_io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO
from MedSAMSegmentLib import cli, io, pipeline
from MedSAMSegmentLib.engine import SegmentationResult, flag_slices
from MedSAMSegmentLib.session import run_segmentation

DEMO = os.path.join(REPO, "MedSAMSegment", "MedSAMSegmentLib", "data")


def result_with(areas, iou):
    """A result on 8 x 40 x 40 whose slice ``s`` holds a square of about ``areas[s]`` pixels."""
    mask = np.zeros((8, 40, 40), dtype=bool)
    for s, area in areas.items():
        side = int(round(area**0.5))
        mask[s, :side, :side] = True
    boxes = {s: (0.0, 0.0, 10.0, 10.0) for s in areas}
    return SegmentationResult(mask=mask, slice_axis=0, slice_range=(min(areas), max(areas)), boxes=boxes, iou=iou)


def test_flag_slices_names_low_iou_empty_masks_and_area_jumps():
    areas = {1: 100, 2: 100, 3: 441, 4: 100, 5: 100, 6: 0, 7: 16}
    iou = {1: 0.9, 2: 0.59, 3: 0.9, 4: 0.6, 5: 0.9, 6: 0.9, 7: 0.9}
    assert flag_slices(result_with(areas, iou)) == [
        (2, "low predicted IoU 0.59"),
        (3, "area differs from both neighbours by more than x2"),
        (6, "empty mask"),
    ]
    # a drop on both sides is flagged too; one neighbour (the ends) or a jump on one side only is not
    assert flag_slices(result_with({1: 400, 2: 81, 3: 400, 4: 900}, dict.fromkeys(range(1, 5), 0.9))) == [
        (2, "area differs from both neighbours by more than x2")]
    assert flag_slices(result_with({1: 400, 2: 100, 3: 100}, dict.fromkeys(range(1, 4), 0.9))) == []
    both = flag_slices(result_with({1: 100, 2: 441, 3: 100}, {1: 0.9, 2: 0.2, 3: 0.9}))
    assert both == [(2, "low predicted IoU 0.20; area differs from both neighbours by more than x2")]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``medsam-segment segment`` on the demo with one extra key box, a thin strip across slice 14 (low predicted
    IoU: a slice to review), run in-process with HOME pointing at an empty folder: stdout, the output path, the
    fake home and the boxes."""
    folder = tmp_path_factory.mktemp("summary")
    home = folder / "home"
    home.mkdir()
    boxes = folder / "boxes.json"
    boxes.write_text('{"slice_axis": 0, "boxes": [{"slice": 5, "box": [274, 233, 314, 262]}, '
                     '{"slice": 8, "box": [262, 228, 329, 286]}, {"slice": 11, "box": [271, 245, 318, 278]}, '
                     '{"slice": 14, "box": [250, 0, 260, 511]}]}')
    out = folder / "mask.nii.gz"
    stdout = text_io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setenv("HOME", str(home))
        patch.delenv("XDG_CACHE_HOME", raising=False)
        code = cli.main(["segment", os.path.join(DEMO, "demo_ct_lesion.npz"), "--boxes", str(boxes), "-o", str(out),
                         "--device", "cpu"])
    assert code == 0, stdout.getvalue()
    return stdout.getvalue(), out, home, str(boxes)


@pytest.mark.slow
def test_the_summary_matches_the_written_mask_and_the_run(cli_run, lite_model, embedding_cache):
    stdout, out, _home, boxes = cli_run
    lines = stdout.splitlines()
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0

    summary = [line for line in lines if line.startswith("segmented slices ")]
    assert len(summary) == 1, lines
    match = re.fullmatch(r"segmented slices (\d+)-(\d+) along axis 0 from 4 key box\(es\): (\d+) voxels, "
                         r"(\d+) slices encoded, [\d.]+ s", summary[0])
    assert match, summary[0]
    first, last, voxels, encoded = (int(v) for v in match.groups())
    assert (first, last) == (5, 14)
    assert voxels == int(written.sum()) > 0

    # The same run in-process: the printed IoUs and reviews are its numbers and flags, in slice order.
    image = io.read_image(os.path.join(DEMO, "demo_ct_lesion.npz"))
    keys = io.read_key_boxes([boxes], image)
    result = run_segmentation(lite_model, image.array, keys, pipeline.SegmentationSettings(),
                                       cache=embedding_cache)
    assert np.array_equal(result.mask, written)
    assert not result.filled and encoded == last - first + 1  # the default reads all 10 slices
    ious = [line for line in lines if line.startswith("predicted IoU per slice: ")]
    read = [s for s in range(5, 15) if s not in result.filled]
    assert ious == ["predicted IoU per slice: " + " ".join(f"{s}:{result.iou[s]:.2f}" for s in read)]
    reviews = [line for line in lines if line.startswith("review slice ")]
    assert reviews == [f"review slice {s}: {reason}" for s, reason in result.flagged]
    assert any(s == 14 and "low predicted IoU" in reason for s, reason in result.flagged), result.flagged
    assert lines[-1] == f"wrote {out}"


@pytest.mark.slow
def test_a_run_writes_nothing_under_the_home_folder(cli_run, private_cache_dir):
    """The converted OpenVINO models go to the session's cache folder (MEDSAM_CACHE_DIR), never to ~/.cache."""
    _stdout, _out, home, _boxes = cli_run
    assert [str(p) for p in home.rglob("*")] == []
    # Each converted model is complete there (other tests of the session may have converted other weights too,
    # e.g. a fine-tuned decoder).
    converted = {}
    for path in Path(private_cache_dir, "openvino").glob("litemedsam_*"):
        converted.setdefault(path.stem, []).append(path.suffix)
    assert converted and all(sorted(kinds) == [".bin", ".sha256", ".xml"] for kinds in converted.values())
