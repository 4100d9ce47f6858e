"""Reading images of every supported kind with their geometry, box files, and writing masks safely."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_data_path
from MedSAMSegmentLib import io
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.io import atomic_files


def oblique_image(shape=(6, 20, 30), dtype=np.int16):
    array = (np.arange(np.prod(shape)) % 500 - 200).reshape(shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 35.0))
    theta = np.radians(20)
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    image.SetDirection(tuple(direction.ravel()))
    return image, array


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd", ".mha"])
def test_volume_files_keep_geometry(tmp_path, extension):
    image, array = oblique_image()
    path = str(tmp_path / f"image{extension}")
    sitk.WriteImage(image, path)
    volume = io.read_image(path)
    assert np.array_equal(volume.array, array)
    assert volume.spacing == pytest.approx(image.GetSpacing())
    assert volume.origin == pytest.approx(image.GetOrigin())
    assert volume.direction == pytest.approx(image.GetDirection(), abs=1e-6)
    # ijk_to_ras maps voxel (i, j, k) where SimpleITK puts it, with L and P negated.
    point_lps = image.TransformIndexToPhysicalPoint((3, 5, 2))
    ras = volume.ijk_to_ras() @ np.array([3, 5, 2, 1.0])
    assert ras[:3] == pytest.approx((-point_lps[0], -point_lps[1], point_lps[2]))


def test_dicom_series_folder(tmp_path):
    image, array = oblique_image(shape=(4, 16, 18))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    for k in range(array.shape[0]):
        piece = image[:, :, k]
        piece.SetMetaData("0008|0060", "CT")
        piece.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.1")
        piece.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.2")
        piece.SetMetaData("0020|0013", str(k + 1))
        piece.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        piece.SetMetaData("0020|0037", "\\".join(map(str, direction[0:7:3] + direction[1:8:3])))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)
    volume = io.read_image(str(folder))
    assert np.array_equal(volume.array, array)
    assert volume.spacing[:2] == pytest.approx(image.GetSpacing()[:2])
    assert volume.spacing[2] == pytest.approx(2.5, abs=1e-3)


def test_npz_with_geometry_and_without():
    volume = io.read_image(shared_data_path("ct_lesion", "CT_Lesion_000001_02_01_008-023.npz"))
    assert volume.shape == (16, 512, 512) and volume.array.dtype == np.uint8
    assert volume.spacing == pytest.approx((0.31445301, 0.31445301, 5.0))
    mask, _ = io.read_mask(shared_data_path("ct_lesion", "CT_Lesion_000001_02_01_008-023.npz"))
    assert mask.shape == volume.shape and mask.any()


def test_npz_mask_output_is_medsam_format_with_the_image_geometry(tmp_path):
    volume = io.read_image(shared_data_path("ct_lesion", "CT_Lesion_000001_02_01_008-023.npz"))
    mask = np.zeros(volume.shape, dtype=bool)
    mask[3:9, 200:260, 240:300] = True
    out = str(tmp_path / "mask.npz")
    io.write_mask(out, mask, volume)
    with np.load(out, allow_pickle=False) as data:
        assert data["segs"].dtype == np.uint8 and np.array_equal(data["segs"] > 0, mask)
        assert tuple(data["spacing"]) == pytest.approx(volume.spacing)
        assert tuple(data["origin"]) == pytest.approx(volume.origin)
        assert tuple(np.ravel(data["direction"])) == pytest.approx(volume.direction)
    assert os.listdir(tmp_path) == ["mask.npz"]  # no temporary file left beside it
    with pytest.raises(ValueError, match="differs"):
        io.write_mask(out, mask[:-1], volume)


def test_npz_without_imgs_is_refused(tmp_path):
    path = str(tmp_path / "bad.npz")
    np.savez(path, image=np.zeros((3, 4, 4)))
    with pytest.raises(io.InputError, match="no 'imgs'"):
        io.read_image(path)


def test_2d_grey_and_rgb_images_are_one_slice_volumes(tmp_path):
    grey = shared_data_path("2d", "sam_med2d", "images")
    name = sorted(os.listdir(grey))[0]
    volume = io.read_image(os.path.join(grey, name))
    assert volume.array.ndim == 3 and volume.shape[0] == 1
    kvasir = shared_data_path("2d", "kvasir", "images")
    colour = io.read_image(os.path.join(kvasir, sorted(os.listdir(kvasir))[0]))
    assert colour.is_colour and colour.array.shape[0] == 1 and colour.array.shape[-1] == 3


def test_missing_and_corrupt_images_are_explained(tmp_path):
    with pytest.raises(io.InputError, match="does not exist"):
        io.read_image(str(tmp_path / "nothing.nii.gz"))
    image, _ = oblique_image()
    good = tmp_path / "image.nii.gz"
    sitk.WriteImage(image, str(good))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(io.InputError, match="could not be read"):
        io.read_image(str(truncated))


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd", ".seg.nrrd"])
def test_masks_are_written_on_the_input_grid(tmp_path, extension):
    image, array = oblique_image()
    source = str(tmp_path / "image.nrrd")
    sitk.WriteImage(image, source)
    volume = io.read_image(source)
    mask = np.zeros(volume.shape, dtype=bool)
    mask[2, 5:9, 10:20] = True
    out = str(tmp_path / f"mask{extension}")
    io.write_mask(out, mask, volume, segment_name="tumour")
    written = sitk.ReadImage(out)
    assert np.array_equal(sitk.GetArrayFromImage(written) > 0, mask)
    assert written.GetSpacing() == pytest.approx(image.GetSpacing())
    assert written.GetOrigin() == pytest.approx(image.GetOrigin())
    assert written.GetDirection() == pytest.approx(image.GetDirection())
    if extension == ".seg.nrrd":
        assert written.GetMetaData("Segment0_Name") == "tumour"
        assert written.GetMetaData("Segment0_Extent") == "10 19 5 8 2 2"
    assert [n for n in os.listdir(tmp_path) if n.startswith(".partial")] == []


def test_failed_write_keeps_the_existing_file(tmp_path):
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"precious earlier result")
    with pytest.raises(RuntimeError):
        with atomic_files.atomic_output(str(target)) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"precious earlier result"
    assert os.listdir(tmp_path) == ["out.nii.gz"]


def test_box_json_round_trip_and_errors(tmp_path):
    keys = KeyBoxSet(1, [KeyBox(4, (1, 2, 10, 12)), KeyBox(9, (3, 4, 15, 16))])
    path = str(tmp_path / "boxes.json")
    io.write_box_json(path, keys)
    back = io.read_box_json(path, (20, 20, 20))
    assert back.slice_axis == 1
    assert [(k.slice_index, k.box) for k in back.boxes] == [(4, (1, 2, 10, 12)), (9, (3, 4, 15, 16))]
    with_margin = io.read_box_json(path, (20, 20, 20), margin=2)
    assert with_margin.boxes[0].box == (-1, 0, 12, 14)
    cases = {
        "not json": ("{oops", "not valid JSON"),
        "no boxes": ({"slice_axis": 0}, "expected"),
        "bad axis": ({"slice_axis": 3, "boxes": []}, "slice_axis must be 0, 1 or 2"),
        "bad box": ({"slice_axis": 0, "boxes": [{"slice": 1, "box": [1, 2, 3]}]}, "4 numbers"),
        "bad slice": ({"slice_axis": 0, "boxes": [{"slice": 1.5, "box": [1, 2, 3, 4]}]}, "whole number"),
        "empty": ({"slice_axis": 0, "boxes": []}, "holds no boxes"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.json"
        bad.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(io.InputError, match=message):
            io.read_box_json(str(bad), (20, 20, 20))


def test_markups_and_json_boxes_merge_on_one_axis(tmp_path):
    from MedSAMSegmentLib.io import markups_file

    volume = io.ImageVolume(np.zeros((10, 40, 40), np.int16))
    ijk_to_ras = volume.ijk_to_ras()
    centre = (ijk_to_ras @ np.array([20, 20, 7, 1.0]))[:3]
    path = str(tmp_path / "roi.mrk.json")
    markups_file.write_markups_file(path, rois=[markups_file.MarkupsROI(centre, np.array([10.0, 8.0, 0.5]), name="R1")])
    json_path = str(tmp_path / "boxes.json")
    io.write_box_json(json_path, KeyBoxSet(0, [KeyBox(2, (5, 5, 20, 20))]))
    keys = io.read_key_boxes([path, json_path], volume)
    assert keys.slice_axis == 0
    assert sorted(k.slice_index for k in keys.boxes) == [2, 7]
    other_axis = str(tmp_path / "axis2.json")
    io.write_box_json(other_axis, KeyBoxSet(2, [KeyBox(2, (5, 5, 8, 8))]))
    with pytest.raises(io.InputError, match="different slice axes"):
        io.read_key_boxes([path, other_axis], volume)


def test_next_write_removes_partials_of_killed_writers(tmp_path):
    """A writer killed with SIGKILL leaves its ``.partial-<pid>-*`` file; the next write of that output removes
    it, but keeps the files of live writers and of other outputs."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        orphan = tmp_path / f".partial-{dead.pid}-x1-mask.nii.gz"
        live = tmp_path / f".partial-{alive.pid}-x2-mask.nii.gz"
        other = tmp_path / f".partial-{dead.pid}-x3-other.nii.gz"
        for path in (orphan, live, other):
            path.write_bytes(b"half a file")
        volume = io.read_image(str(_write_small_image(tmp_path)))
        io.write_mask(str(tmp_path / "mask.nii.gz"), np.ones(volume.shape, dtype=bool), volume)
        assert not orphan.exists() and live.exists() and other.exists()
        assert (tmp_path / "mask.nii.gz").exists()
    finally:
        alive.kill()
        alive.wait()


def _write_small_image(folder):
    path = folder / "small.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 5), dtype=np.int16)), str(path))
    return path
