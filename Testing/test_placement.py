"""Issue 13: the slice axis of boxes and lines placed with clicks in a slice view, on real slicer-core nodes.

A Box ROI placed with two clicks in a slice view is padded across the view to its shorter side
(``vtkMRMLMarkupsROINode::UpdateBoxROIFromControlPoints``), so its thin side does not tell the view on isotropic or
thin-slice volumes. ``mrml_markups.record_placement_view`` records the view's normal on the node once it is placed;
the key box then lies in that view's slice. Without a recorded view a tie between the two thinnest sides is refused,
on the command line too, with a message that names ``--slice-axis``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from MedSAMSegmentLib import cli, io
from MedSAMSegmentLib.geometry import GeometryError, in_plane_axes
from MedSAMSegmentLib.io import markups_file
from MedSAMSegmentLib.scene import mrml_markups
from slicer_scene import (  # noqa: F401
    make_line,
    make_roi,
    make_slice_view,
    make_volume,
    mrml_scene_fixture,
    place_by_clicks,
    rotation_matrix,
    slice_view_plane,
    slicer,
    vtk,
)

SHAPE = (24, 56, 64)  # k, j, i
#: The slice axis of each view orientation on the volumes below (all within a few degrees of RAS or LPS).
VIEW_AXIS = {"Axial": 0, "Coronal": 1, "Sagittal": 2}
#: The key box drawn in each view: (slice, (x0, y0, x1, y1)) in voxels of that view's slice axis.
DRAWN = {"Axial": (12, (10, 8, 30, 22)), "Coronal": (20, (6, 5, 34, 17)), "Sagittal": (22, (9, 4, 31, 19))}
#: The voxel index, along their own axes, of the planes of the views not drawn in (away from every drawn box).
OTHER_VIEW_INDEX = 2


def _ijk_to_ras(name: str) -> np.ndarray:
    if name == "isotropic":  # 1 mm MR
        matrix = np.diag([1.0, 1.0, 1.0, 1.0])
    elif name == "thin_slice":  # 0.7 x 0.7 x 0.5 mm CT
        matrix = np.diag([0.7, 0.7, 0.5, 1.0])
    elif name == "oblique":  # turned 6 degrees against the (axis-aligned) views
        matrix = rotation_matrix([1.0, 0.5, 0.2], 6.0) @ np.diag([0.8, 0.8, 1.0, 1.0])
    elif name == "flipped":  # LPS-like storage
        matrix = np.diag([-0.9, -0.9, 1.2, 1.0])
    else:
        raise ValueError(name)
    matrix[:3, 3] = (matrix[:3, :3] @ -(np.array(SHAPE[::-1]) / 2.0)) + [2.0, -3.0, 5.0]  # centred near the origin
    return matrix


VOLUMES = ["isotropic", "thin_slice", "oblique", "flipped"]


def _world(ijk_to_ras: np.ndarray, kji) -> np.ndarray:
    return (ijk_to_ras @ np.r_[np.asarray(kji, dtype=float)[::-1], 1.0])[:3]


def _kji(ijk_to_ras: np.ndarray, points) -> np.ndarray:
    points = np.atleast_2d(points)
    return (np.linalg.inv(ijk_to_ras) @ np.c_[points, np.ones(len(points))].T).T[:, 2::-1]


def _slice_point(ijk_to_ras, axis, s, x, y) -> np.ndarray:
    row_axis, col_axis = in_plane_axes(axis)
    kji = np.zeros(3)
    kji[axis], kji[col_axis], kji[row_axis] = s, x, y
    return _world(ijk_to_ras, kji)


def _views(mrml_scene, ijk_to_ras, drawn: str, through):
    """The three standard slice views: ``drawn``'s plane through the world point ``through``, the others through
    voxel :data:`OTHER_VIEW_INDEX` along their axes."""
    views = {}
    for orientation, axis in VIEW_AXIS.items():
        if orientation == drawn:
            point = np.asarray(through, dtype=float)
        else:
            kji = np.array(SHAPE, dtype=float) / 2
            kji[axis] = OTHER_VIEW_INDEX
            point = _world(ijk_to_ras, kji)
        view = make_slice_view(mrml_scene, orientation, 0.0)
        normal, _ = slice_view_plane(view)
        view.SetSliceOffset(float(point @ normal))
        view.UpdateMatrices()
        views[orientation] = view
    return views


def _on_plane(view, point) -> np.ndarray:
    normal, origin = slice_view_plane(view)
    point = np.asarray(point, dtype=float)
    return point - ((point - origin) @ normal) * normal


def _drawn_rectangle_box(ijk_to_ras, axis, a, b):
    """The drawn box as a user sees it: the rectangle with clicks ``a`` and ``b`` as opposite corners (RAS-aligned:
    the views are), its corners in voxels, the voxel centres within their extent in the slice."""
    corners = np.array([[x, y, z] for x in (a[0], b[0]) for y in (a[1], b[1]) for z in (a[2], b[2])])
    kji = _kji(ijk_to_ras, corners)
    row_axis, col_axis = in_plane_axes(axis)
    return (float(np.ceil(kji[:, col_axis].min() - 1e-9)), float(np.ceil(kji[:, row_axis].min() - 1e-9)),
            float(np.floor(kji[:, col_axis].max() + 1e-9)), float(np.floor(kji[:, row_axis].max() + 1e-9)))


def _two_click_roi(mrml_scene, view, a, b, name="R"):
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)  # default type: Box
    place_by_clicks(roi, view, [a, b])
    return roi


@pytest.mark.parametrize("orientation", list(VIEW_AXIS))
@pytest.mark.parametrize("volume_name", VOLUMES)
def test_two_click_roi_gives_the_drawn_slice_and_box(mrml_scene, volume_name, orientation):
    ijk_to_ras = _ijk_to_ras(volume_name)
    volume = make_volume(mrml_scene, np.zeros(SHAPE, np.int16), ijk_to_ras)
    axis = VIEW_AXIS[orientation]
    s, (x0, y0, x1, y1) = DRAWN[orientation]
    # Clicks at the outer corners of voxels x0..x1, y0..y1 of slice s (on the oblique volume: their projections onto
    # the axis-aligned view through the middle of the box on slice s).
    a = _slice_point(ijk_to_ras, axis, s, x0 - 0.5, y0 - 0.5)
    b = _slice_point(ijk_to_ras, axis, s, x1 + 0.5, y1 + 0.5)
    views = _views(mrml_scene, ijk_to_ras, orientation, _slice_point(ijk_to_ras, axis, s, (x0 + x1) / 2,
                                                                        (y0 + y1) / 2))
    a, b = _on_plane(views[orientation], a), _on_plane(views[orientation], b)
    roi = _two_click_roi(mrml_scene, views[orientation], a, b)

    # Slicer padded the ROI across the view to its shorter side and kept one control point.
    normal, _ = slice_view_plane(views[orientation])
    across = int(np.argmax(np.abs(normal)))
    size = np.array(roi.GetSize())
    in_plane = np.abs(b - a)[[n for n in range(3) if n != across]]
    np.testing.assert_allclose(size[across], in_plane.min())
    assert roi.GetNumberOfControlPoints() == 1 and mrml_markups.markups_is_placed(roi)
    with pytest.raises(GeometryError, match="ambiguous.*--slice-axis.*draw the box in a slice view") as info:
        mrml_markups.markups_key_boxes([roi], volume)  # the thin side cannot tell the view
    assert "\n" not in str(info.value)

    recorded = mrml_markups.record_placement_view(roi, mrml_scene.scene)
    np.testing.assert_allclose(recorded, normal)
    assert [float(v) for v in roi.GetAttribute(mrml_markups.SLICE_NORMAL_ATTRIBUTE).split(",")] == list(recorded)
    keys = mrml_markups.markups_key_boxes([roi], volume)
    assert keys.slice_axis == axis
    (key,) = keys.boxes
    assert key.slice_index == s
    expected = _drawn_rectangle_box(ijk_to_ras, axis, a, b)
    assert key.box == expected
    if volume_name != "oblique":
        assert expected == (x0, y0, x1, y1)  # exactly the voxels drawn around
    # The effect's table converts each node with the set's axis given: the same box.
    assert mrml_markups.roi_node_key_box(roi, np.linalg.inv(ijk_to_ras), SHAPE, axis) == (axis, key)


def test_two_clicks_pad_the_box_to_its_shorter_side(mrml_scene):
    # The finding's reproduction: two clicks at (0, 0, 0) and (30, 20, 0) give a 30 x 20 x 20 mm box.
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
    assert roi.GetROIType() == roi.ROITypeBox
    roi.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0))
    roi.AddControlPoint(vtk.vtkVector3d(30.0, 20.0, 0.0))
    assert roi.GetSize() == (30.0, 20.0, 20.0)
    np.testing.assert_allclose(roi.GetCenter(), [15.0, 10.0, 0.0])
    assert roi.GetNumberOfControlPoints() == 1 and roi.GetRequiredNumberOfControlPoints() == 1


def test_roi_mid_placement_is_not_placed(mrml_scene):
    ijk_to_ras = _ijk_to_ras("isotropic")
    volume = make_volume(mrml_scene, np.zeros(SHAPE, np.int16), ijk_to_ras)
    a = _slice_point(ijk_to_ras, 0, 12, 9.5, 7.5)
    b = _slice_point(ijk_to_ras, 0, 12, 30.5, 22.5)
    views = _views(mrml_scene, ijk_to_ras, "Axial", a)
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
    place_by_clicks(roi, views["Axial"], [a])  # one click, the mouse gone
    assert roi.GetNumberOfDefinedControlPoints() == 1 and not mrml_markups.markups_is_placed(roi)
    roi2 = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R2")
    place_by_clicks(roi2, views["Axial"], [a], hover_next=True)  # one click, the mouse moving on in the view
    assert roi2.GetControlPointPlacementComplete()  # Slicer counts the preview point...
    assert not mrml_markups.markups_is_placed(roi2)  # ...we do not
    for node in (roi, roi2):
        assert mrml_markups.record_placement_view(node, mrml_scene.scene) is None
        assert node.GetAttribute(mrml_markups.SLICE_NORMAL_ATTRIBUTE) is None
    with pytest.raises(GeometryError, match="no placed ROI or line"):
        mrml_markups.markups_key_boxes([roi, roi2], volume)
    place_by_clicks(roi2, views["Axial"], [b])  # the second click
    assert mrml_markups.markups_is_placed(roi2)


def test_programmatic_and_loaded_rois_are_placed(mrml_scene, tmp_path):
    made = make_roi(mrml_scene, [1.0, 2.0, 3.0], [10.0, 8.0, 1.0])
    plain = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "plain")
    plain.SetCenter(1.0, 2.0, 3.0)
    plain.SetSize(10.0, 8.0, 1.0)
    path = markups_file.write_markups_file(tmp_path / "r.mrk.json", [([1.0, 2.0, 3.0], [10.0, 8.0, 1.0])])
    loaded = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "loaded")
    storage = slicer.vtkMRMLMarkupsROIJsonStorageNode()
    mrml_scene.scene.AddNode(storage)
    storage.SetFileName(path)
    assert storage.ReadData(loaded) == 1
    for node in (made, plain, loaded):
        assert mrml_markups.markups_is_placed(node), node.GetName()
    unsized = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unsized")
    unsized.SetCenter(1.0, 2.0, 3.0)  # no size: no control point, nothing to segment
    assert not mrml_markups.markups_is_placed(unsized)


def test_recorded_view_beats_the_thin_side(mrml_scene):
    # A ROI thin across S (a clear thin side: axial), recorded as placed in the sagittal view through its centre.
    ijk_to_ras = _ijk_to_ras("isotropic")
    volume = make_volume(mrml_scene, np.zeros(SHAPE, np.int16), ijk_to_ras)
    centre = _world(ijk_to_ras, [12, 20, 22])
    roi = make_roi(mrml_scene, centre, [12.0, 16.0, 1.0])
    assert mrml_markups.markups_key_boxes([roi], volume).slice_axis == 0
    _views(mrml_scene, ijk_to_ras, "Sagittal", centre)
    np.testing.assert_allclose(np.abs(mrml_markups.record_placement_view(roi, mrml_scene.scene)), [1.0, 0.0, 0.0])
    keys = mrml_markups.markups_key_boxes([roi], volume)
    assert keys.slice_axis == 2
    assert [(k.slice_index, k.box) for k in keys.boxes] == [(22, (12.0, 12.0, 28.0, 12.0))]  # 16 mm A-P, 1 mm S
    assert mrml_markups.markups_key_boxes([roi], volume, slice_axis=0).slice_axis == 0  # a given axis wins


def test_oblique_recorded_view_is_refused(mrml_scene):
    ijk_to_ras = _ijk_to_ras("isotropic")
    volume = make_volume(mrml_scene, np.zeros(SHAPE, np.int16), ijk_to_ras)
    roi = make_roi(mrml_scene, _world(ijk_to_ras, [12, 20, 22]), [20.0, 16.0, 16.0])
    roi.SetAttribute(mrml_markups.SLICE_NORMAL_ATTRIBUTE, "0.0,0.5,0.8660254037844386")  # 30 degrees from S
    with pytest.raises(GeometryError, match=r"view it was drawn in is 30\.0 degrees from image axis 0"):
        mrml_markups.markups_key_boxes([roi], volume)
    roi.SetAttribute(mrml_markups.SLICE_NORMAL_ATTRIBUTE, "not,a,normal")
    with pytest.raises(GeometryError, match="MedSAM.SliceNormal"):
        mrml_markups.markups_key_boxes([roi], volume)


def test_roi_placed_off_every_slice_view_records_nothing(mrml_scene):
    # Two clicks in the 3D view, on a surface at different depths: no slice view holds them.
    ijk_to_ras = _ijk_to_ras("thin_slice")
    volume = make_volume(mrml_scene, np.zeros(SHAPE, np.int16), ijk_to_ras)
    _views(mrml_scene, ijk_to_ras, "Axial", _world(ijk_to_ras, [3, 20, 22]))
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
    roi.AddControlPoint(vtk.vtkVector3d(*_world(ijk_to_ras, [10, 8, 9])))
    roi.AddControlPoint(vtk.vtkVector3d(*_world(ijk_to_ras, [14, 30, 33])))
    assert mrml_markups.markups_is_placed(roi)
    assert mrml_markups.record_placement_view(roi, mrml_scene.scene) is None
    assert roi.GetAttribute(mrml_markups.SLICE_NORMAL_ATTRIBUTE) is None
    # Not padded (three sides from the clicks), its thin side is clear: 2 mm deep, in the axial slice 12.
    (key,) = mrml_markups.markups_key_boxes([roi], volume).boxes
    assert key.slice_index == 12


@pytest.mark.parametrize("volume_name", ["isotropic", "flipped"])
def test_line_placed_in_a_slice_view_takes_its_axis(mrml_scene, volume_name):
    # A diameter drawn left-right in the coronal view lies along an image axis: its own axis is ambiguous.
    ijk_to_ras = _ijk_to_ras(volume_name)
    volume = make_volume(mrml_scene, np.zeros(SHAPE, np.int16), ijk_to_ras)
    a = _slice_point(ijk_to_ras, 1, 20, 10, 12)
    b = _slice_point(ijk_to_ras, 1, 20, 30, 12)
    views = _views(mrml_scene, ijk_to_ras, "Coronal", a)
    line = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "L")
    place_by_clicks(line, views["Coronal"], [a], hover_next=True)
    assert not mrml_markups.markups_is_placed(line)
    assert mrml_markups.record_placement_view(line, mrml_scene.scene) is None
    place_by_clicks(line, views["Coronal"], [b])
    assert mrml_markups.markups_is_placed(line)
    with pytest.raises(GeometryError, match="ambiguous"):
        mrml_markups.markups_key_boxes([line], volume)
    normal = mrml_markups.record_placement_view(line, mrml_scene.scene)
    np.testing.assert_allclose(np.abs(normal), [0.0, 1.0, 0.0])
    assert [float(v) for v in line.GetAttribute(mrml_markups.SLICE_NORMAL_ATTRIBUTE).split(",")] == list(normal)
    keys = mrml_markups.markups_key_boxes([line], volume, line_margin=0)
    assert keys.slice_axis == 1
    (key,) = keys.boxes
    half = 10.0  # the square around a 20-voxel diameter, in voxels of the (square) coronal pixels
    assert key.slice_index == 20
    np.testing.assert_allclose(key.box, [20 - half, 12 - half * abs(ijk_to_ras[0, 0] / ijk_to_ras[2, 2]),
                                         20 + half, 12 + half * abs(ijk_to_ras[0, 0] / ijk_to_ras[2, 2])])


def test_line_on_two_views_records_nothing(mrml_scene):
    # A line along the crossing of the axial and coronal views fits both: no single view.
    ijk_to_ras = _ijk_to_ras("isotropic")
    a = _slice_point(ijk_to_ras, 0, 12, 10, 20)
    b = _slice_point(ijk_to_ras, 0, 12, 30, 20)
    views = _views(mrml_scene, ijk_to_ras, "Axial", a)
    coronal = views["Coronal"]
    normal, _ = slice_view_plane(coronal)
    coronal.SetSliceOffset(float(a @ normal))
    coronal.UpdateMatrices()
    line = make_line(mrml_scene, a, b)
    assert mrml_markups.record_placement_view(line, mrml_scene.scene) is None
    assert line.GetAttribute(mrml_markups.SLICE_NORMAL_ATTRIBUTE) is None


def test_recorded_rois_and_lines_together(mrml_scene):
    ijk_to_ras = _ijk_to_ras("thin_slice")
    volume = make_volume(mrml_scene, np.zeros(SHAPE, np.int16), ijk_to_ras)
    views = _views(mrml_scene, ijk_to_ras, "Sagittal", _world(ijk_to_ras, [10, 20, 22]))
    roi = _two_click_roi(mrml_scene, views["Sagittal"], _slice_point(ijk_to_ras, 2, 22, 9.5, 3.5),
                         _slice_point(ijk_to_ras, 2, 22, 31.5, 19.5))
    line = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "L")
    place_by_clicks(line, views["Sagittal"], [_slice_point(ijk_to_ras, 2, 22, 12, 8),
                                              _slice_point(ijk_to_ras, 2, 22, 28, 8)])  # along j: ambiguous alone
    for node in (roi, line):
        assert mrml_markups.record_placement_view(node, mrml_scene.scene) is not None
    keys = mrml_markups.markups_key_boxes([roi, line], volume)
    assert keys.slice_axis == 2 and [k.slice_index for k in keys.boxes] == [22, 22]
    assert keys.boxes[0].box == (10.0, 4.0, 31.0, 19.0)  # voxels 10..31 x 4..19: within 9.5..31.5 x 3.5..19.5


# ---------------------------------------------------------------------------------------------------------
# Saved without the recorded view: the command line


def _saved_two_click_roi(mrml_scene, tmp_path, ijk_to_ras):
    """A Box ROI placed with two clicks in the axial view and saved by Slicer as .mrk.json (LPS, its default)."""
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    a = _world(ijk_to_ras, [12, 4, 4])
    b = a + ijk_to_ras[:3, :3] @ [39.3 / spacing[0], 32.4 / spacing[1], 0.0]  # 39.3 mm R-L, 32.4 mm A-P
    views = _views(mrml_scene, ijk_to_ras, "Axial", a)
    roi = _two_click_roi(mrml_scene, views["Axial"], a, b, name="box")
    assert mrml_markups.record_placement_view(roi, mrml_scene.scene) is not None  # a node attribute: not in the file
    roi.AddDefaultStorageNode()
    storage = roi.GetStorageNode()
    assert storage.GetCoordinateSystem() == storage.CoordinateSystemLPS
    path = tmp_path / "box.mrk.json"
    storage.SetFileName(str(path))
    assert storage.WriteData(roi) == 1
    saved = json.loads(path.read_text())["markups"][0]
    assert saved["coordinateSystem"] == "LPS" and saved["size"] == pytest.approx([39.3, 32.4, 32.4])
    return path, a, b


def test_saved_two_click_roi_needs_the_slice_axis(mrml_scene, tmp_path):
    ijk_to_ras = _ijk_to_ras("thin_slice")
    path, a, b = _saved_two_click_roi(mrml_scene, tmp_path, ijk_to_ras)
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    with pytest.raises(GeometryError, match=r"32\.4 and 32\.4 mm.*ambiguous.*--slice-axis") as info:
        markups_file.read_markups_key_boxes(path, ras_to_ijk, SHAPE)
    assert "\n" not in str(info.value)
    ((axis, key),) = markups_file.read_markups_key_boxes(path, ras_to_ijk, SHAPE, slice_axis=0)
    assert axis == 0 and key.slice_index == 12
    assert key.box == _drawn_rectangle_box(ijk_to_ras, 0, a, b)


def test_command_line_refuses_the_saved_two_click_roi_naming_slice_axis(mrml_scene, tmp_path, capsys):
    import SimpleITK as sitk

    # The volume as a file: thin-slice CT stored LPS (the direction matrix of a RAS diag(-1, -1, 1) volume).
    ijk_to_ras = np.diag([-0.7, -0.7, 0.5, 1.0])
    ijk_to_ras[:3, 3] = [14.0, 12.0, -6.0]
    image = sitk.GetImageFromArray(np.zeros(SHAPE, np.int16))
    image.SetSpacing((0.7, 0.7, 0.5))
    image.SetOrigin(tuple(float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras[:3, 3]))
    image_path = str(tmp_path / "ct.nrrd")
    sitk.WriteImage(image, image_path)
    volume = io.read_image(image_path)
    np.testing.assert_allclose(volume.ijk_to_ras(), ijk_to_ras, atol=1e-9)
    path, a, b = _saved_two_click_roi(mrml_scene, tmp_path, ijk_to_ras)

    out = tmp_path / "mask.nii.gz"
    code = cli.main(["segment", image_path, "--boxes", str(path), "-o", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("medsam-segment:")]
    assert code == 2 and len(lines) == 1, err
    assert "ambiguous" in lines[0] and "--slice-axis" in lines[0] and "'box'" in lines[0]
    assert not out.exists()
    # --slice-axis reaches the markups reader: the box the user drew.
    keys = io.read_key_boxes([str(path)], volume, slice_axis=0)
    assert keys.slice_axis == 0
    assert [(k.slice_index, k.box) for k in keys.boxes] == [(12, _drawn_rectangle_box(ijk_to_ras, 0, a, b))]
