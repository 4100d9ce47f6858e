"""markups_file.py checked against Slicer's own markups JSON storage nodes (slicer-core)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from medsam_evaluation import baselines
from MedSAMSegmentLib import io
from MedSAMSegmentLib.geometry import in_plane_axes
from MedSAMSegmentLib.io import markups_file
from MedSAMSegmentLib.io.markup_boxes import merge_key_boxes
from MedSAMSegmentLib.scene import mrml_markups
from slicer_scene import (  # noqa: F401
    make_line,
    make_roi,
    make_transform,
    make_volume,
    mrml_scene_fixture,
    numpy_matrix,
    rotation_matrix,
    slicer,
)


def _slicer_write(mrml_scene, node, path, system):
    node.AddDefaultStorageNode()
    storage = node.GetStorageNode()
    storage.SetCoordinateSystem(
        storage.CoordinateSystemLPS if system == "LPS" else storage.CoordinateSystemRAS
    )
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1


def _node_corners(roi):
    matrix = numpy_matrix(roi.GetObjectToWorldMatrix())
    size = np.asarray(roi.GetSize())
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    local = signs * size / 2
    return (matrix @ np.c_[local, np.ones(8)].T).T[:, :3]


def _sorted_rows(points):
    points = np.round(np.asarray(points), 6)
    return points[np.lexsort(points.T[::-1])]


@pytest.mark.parametrize("system", ["LPS", "RAS"])
@pytest.mark.parametrize("angle", [0.0, 30.0, 95.0])
def test_roi_file_written_by_slicer(mrml_scene, tmp_path, system, angle):
    rotation = rotation_matrix([0.3, -0.2, 1.0], angle)
    roi = make_roi(mrml_scene, [10.5, -20.0, 31.0], [6.0, 4.0, 1.0], rotation, name="R1")
    path = tmp_path / "R1.mrk.json"
    _slicer_write(mrml_scene, roi, path, system)
    assert json.loads(path.read_text())["markups"][0]["coordinateSystem"] == system
    (read,) = markups_file.read_markups(path)
    assert isinstance(read, markups_file.MarkupsROI)
    np.testing.assert_allclose(_sorted_rows(read.corners()), _sorted_rows(_node_corners(roi)), atol=1e-5)


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_line_file_written_by_slicer(mrml_scene, tmp_path, system):
    line = make_line(mrml_scene, [1.0, 2.0, 3.0], [4.0, -5.0, 3.0], name="L1")
    path = tmp_path / "L1.mrk.json"
    _slicer_write(mrml_scene, line, path, system)
    (read,) = markups_file.read_markups(path)
    assert isinstance(read, markups_file.MarkupsLine)
    np.testing.assert_allclose(read.point_a, [1, 2, 3])
    np.testing.assert_allclose(read.point_b, [4, -5, 3])


def test_key_boxes_from_files_match_the_mrml_path(mrml_scene, tmp_path):
    """Same ROI/line: file -> key boxes equals node -> key boxes, on an oblique volume."""
    ijk_to_ras = rotation_matrix([1, 1, 0], 12) @ np.diag([0.9, 0.9, 2.0, 1.0])
    ijk_to_ras[:3, 3] = [-5, 3, 7]
    volume = make_volume(mrml_scene, np.zeros((10, 30, 32), np.int16), ijk_to_ras)
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    center = (ijk_to_ras @ [15, 12, 4, 1])[:3]
    roi = make_roi(mrml_scene, center, [8.0, 6.0, 1.0], ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
                   @ rotation_matrix([0, 0, 1], 20)[:3, :3])
    a = (ijk_to_ras @ [10, 20, 6, 1])[:3]
    b = (ijk_to_ras @ [18, 25, 6, 1])[:3]
    line = make_line(mrml_scene, a, b)
    _slicer_write(mrml_scene, roi, tmp_path / "roi.mrk.json", "LPS")
    _slicer_write(mrml_scene, line, tmp_path / "line.mrk.json", "RAS")
    from_nodes = mrml_markups.markups_key_boxes([roi, line], volume)
    from_files = merge_key_boxes(
        markups_file.read_markups_key_boxes(tmp_path / "roi.mrk.json", ras_to_ijk, (10, 30, 32))
        + markups_file.read_markups_key_boxes(tmp_path / "line.mrk.json", ras_to_ijk, (10, 30, 32))
    )
    assert from_files.slice_axis == from_nodes.slice_axis == 0
    assert [k.slice_index for k in from_files.sorted()] == [k.slice_index for k in from_nodes.sorted()] == [4, 6]
    np.testing.assert_allclose([k.box for k in from_files.sorted()], [k.box for k in from_nodes.sorted()], atol=1e-6)


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_roi_file_and_box_json_give_the_same_key_boxes_and_mask(mrml_scene, tmp_path, slice_axis):
    """An ROI drawn around voxels x0..x1, y0..y1 (its edges on the voxel boundaries) and the box JSON entry
    [x0, y0, x1, y1] are one key box: through the ROI node, through Slicer's .mrk.json of it and through the JSON,
    and the same filled mask, which on the key slices is the voxels Slicer puts inside the ROI."""
    ijk_to_ras = rotation_matrix([1, 1, 0], 12) @ np.diag([0.9, 0.8, 2.0, 1.0])
    ijk_to_ras[:3, 3] = [-5, 3, 7]
    shape = (10, 30, 32)
    volume = make_volume(mrml_scene, np.zeros(shape, np.int16), ijk_to_ras)
    row_axis, col_axis = in_plane_axes(slice_axis)
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)[::-1]  # per numpy axis
    axes_world = [ijk_to_ras[:3, :3] @ np.eye(3)[a][::-1] / spacing[a] for a in range(3)]
    if slice_axis == 0:
        entries = [(3, (4, 6, 13, 9)), (7, (5, 5, 15, 8))]
    else:
        entries = [(6, (8, 1, 20, 6)), (25, (10, 2, 22, 7))]
    rois = []
    for n, (s, (x0, y0, x1, y1)) in enumerate(entries):
        centre_kji = np.zeros(3)
        centre_kji[slice_axis], centre_kji[col_axis], centre_kji[row_axis] = s, (x0 + x1) / 2, (y0 + y1) / 2
        size = [(x1 - x0 + 1) * spacing[col_axis], (y1 - y0 + 1) * spacing[row_axis], 0.5 * spacing[slice_axis]]
        rotation = np.c_[axes_world[col_axis], axes_world[row_axis], axes_world[slice_axis]]
        roi = make_roi(mrml_scene, (ijk_to_ras @ np.r_[centre_kji[::-1], 1.0])[:3], size, rotation, name=f"R{n}")
        _slicer_write(mrml_scene, roi, tmp_path / f"R{n}.mrk.json", "LPS")
        rois.append(roi)
    box_json = tmp_path / "boxes.json"
    box_json.write_text(json.dumps({"slice_axis": slice_axis,
                                    "boxes": [{"slice": s, "box": list(box)} for s, box in entries]}))

    from_nodes = mrml_markups.markups_key_boxes(rois, volume)
    from_files = merge_key_boxes(sum((markups_file.read_markups_key_boxes(tmp_path / f"R{n}.mrk.json",
                                                                          np.linalg.inv(ijk_to_ras), shape)
                                      for n in range(len(entries))), []))
    from_json = io.read_box_json(str(box_json), shape)
    expected = [(s, tuple(float(v) for v in box)) for s, box in entries]
    for keys in (from_nodes, from_files, from_json):
        assert keys.slice_axis == slice_axis
        assert [(k.slice_index, k.box) for k in keys.sorted()] == expected
    masks = [baselines.filled_boxes(shape, keys) for keys in (from_nodes, from_files, from_json)]
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[0], masks[2])
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    world = (ijk_to_ras @ np.c_[ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)].T).T[:, :3]
    for (s, _), roi in zip(entries, rois):
        covered = np.array([roi.IsPointInROIWorld(p) for p in world]).reshape(shape)
        assert np.array_equal(np.take(covered, s, axis=slice_axis), np.take(masks[0], s, axis=slice_axis))


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_written_file_loads_in_slicer(mrml_scene, tmp_path, system):
    axes = rotation_matrix([0, 0, 1], 25)[:3, :3]
    roi = markups_file.MarkupsROI(np.array([3.0, -4.0, 12.0]), np.array([10.0, 6.0, 2.0]), axes, "R")
    path = markups_file.write_markups_file(tmp_path / "boxes.mrk.json", [roi], coordinate_system=system)
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    storage = slicer.vtkMRMLMarkupsROIJsonStorageNode()
    mrml_scene.scene.AddNode(storage)
    storage.SetFileName(path)
    assert storage.ReadData(node) == 1
    np.testing.assert_allclose(_sorted_rows(_node_corners(node)), _sorted_rows(roi.corners()), atol=1e-5)
    # And the reader gets back what was written.
    (back,) = markups_file.read_markups(path)
    np.testing.assert_allclose(_sorted_rows(back.corners()), _sorted_rows(roi.corners()), atol=1e-9)


def test_written_lines_load_in_slicer(mrml_scene, tmp_path):
    path = markups_file.write_markups_file(tmp_path / "l.mrk.json", lines=[([1, 2, 3], [5, 6, 3])])
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode")
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    mrml_scene.scene.AddNode(storage)
    storage.SetFileName(path)
    assert storage.ReadData(node) == 1
    p = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(1, p)
    np.testing.assert_allclose(p, [5, 6, 3])


def test_several_markups_in_one_file_and_margin(tmp_path):
    path = markups_file.write_markups_file(
        tmp_path / "many.mrk.json",
        rois=[([10.0, 10.0, 2.0], [6.0, 4.0, 0.5]), ([10.0, 10.0, 6.0], [8.0, 6.0, 0.5])],
        lines=[([8.0, 10.0, 4.0], [12.0, 10.0, 4.0])],  # parallel to an image axis: takes the ROIs' axis
        coordinate_system="RAS",
    )
    pairs = markups_file.read_markups_key_boxes(path, np.eye(4), (10, 20, 20), margin=1)
    keys = merge_key_boxes(pairs)
    assert keys.slice_axis == 0
    boxes = {k.slice_index: k.box for k in keys.boxes}
    assert set(boxes) == {2, 4, 6}
    assert boxes[2] == (6.0, 7.0, 14.0, 13.0)  # (7..13, 8..12) grown by 1
    assert all("'many#" in k.source for k in keys.boxes)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"something": 1}', "no 'markups' list"),
        ('{"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1, 2, 3]}]}]}', "no placed ROI or line"),
        ('{"markups": [{"type": "Line", "controlPoints": [{"position": [1, 2, 3]}]}]}', "no placed ROI or line"),
        ('{"markups": [{"type": "ROI", "coordinateSystem": "XYZ", "center": [0, 0, 0]}]}', "coordinateSystem"),
        ('{"markups": [{"type": "ROI", "center": [0, 0], "size": [1, 1, 1]}]}', "center must be 3"),
        ('{"markups": [{"type": "ROI", "center": [0, 0, 0]}]}', "no 'size'"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.mrk.json"
    path.write_text(content)
    with pytest.raises(markups_file.MarkupsFileError, match=message) as info:
        markups_file.read_markups(path)
    assert "bad.mrk.json" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(markups_file.MarkupsFileError, match="file not found"):
        markups_file.read_markups(tmp_path / "nope.mrk.json")
