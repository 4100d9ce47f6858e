"""mrml.py, mrml_markups.py and mrml_segments.py on a real slicer-core scene: volumes, markups -> key boxes,
writing through the Segment Editor logic."""

from __future__ import annotations

import numpy as np
import pytest
from MedSAMSegmentLib.geometry import GeometryError, in_plane_axes
from MedSAMSegmentLib.scene import mrml, mrml_markups, mrml_segments
from slicer_scene import (  # noqa: F401
    make_line,
    make_roi,
    make_segment_editor,
    make_transform,
    make_volume,
    mrml_scene_fixture,
    numpy_matrix,
    rotation_matrix,
    slicer,
)

SHAPE = (12, 20, 24)  # k, j, i


def _volume_array():
    rng = np.random.RandomState(1)
    return rng.randint(-100, 300, SHAPE).astype(np.int16)


def _geometries():
    """Name -> (ijk_to_ras, parent transform or None)."""
    spacing = np.diag([0.8, 0.9, 2.5, 1.0])
    axis_aligned = spacing.copy()
    axis_aligned[:3, 3] = [-10, 5, 30]
    flipped = np.diag([-0.8, -0.9, 2.5, 1.0])  # LPS-like storage
    flipped[:3, 3] = [12, 20, -4]
    oblique = rotation_matrix([1, 2, 0.5], 17) @ spacing
    oblique[:3, 3] = [3, -7, 11]
    psr = np.zeros((4, 4))  # i -> P, j -> S, k -> R (the spinal-cord case's storage)
    psr[1, 0], psr[2, 1], psr[0, 2], psr[3, 3] = -0.9, 0.8, 2.0, 1.0
    transform = rotation_matrix([0, 1, 1], 25)
    transform[:3, 3] = [4, -2, 9]
    return {
        "axis_aligned": (axis_aligned, None),
        "flipped": (flipped, None),
        "oblique": (oblique, None),
        "psr": (psr, None),
        "oblique_under_transform": (oblique, transform),
    }


def _world_point(ijk_to_world, kji):
    return (ijk_to_world @ np.r_[np.asarray(kji, dtype=float)[::-1], 1.0])[:3]


def _inside_voxels(roi_node, volume_node, ijk_to_world):
    """Numpy indices of the voxels whose centres Slicer's own ROI test puts inside the ROI."""
    shape = volume_node.GetImageData().GetDimensions()[::-1]
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ijk = np.c_[ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)]
    world = (ijk_to_world @ ijk.T).T[:, :3]
    inside = np.array([roi_node.IsPointInROIWorld(p) for p in world])
    return np.c_[kk.ravel(), jj.ravel(), ii.ravel()][inside]


@pytest.mark.parametrize("name", list(_geometries()))
def test_volume_geometry_includes_parent_transform(mrml_scene, name):
    ijk_to_ras, parent = _geometries()[name]
    node = make_volume(mrml_scene, _volume_array(), ijk_to_ras, parent_transform=parent)
    array, ijk_to_world = mrml.volume_geometry(node)
    assert array.shape == SHAPE
    np.testing.assert_array_equal(array, _volume_array())
    expected = ijk_to_ras if parent is None else parent @ ijk_to_ras
    np.testing.assert_allclose(ijk_to_world, expected, atol=1e-9)
    with pytest.raises(ValueError):
        array[0, 0, 0] = 1  # a read-only view: the source volume is never modified


def _aligned_rotation(ijk_to_world, slice_axis, spin):
    """An ROI rotation with its local x along the slice's columns and z along the slice axis, spun in-plane."""
    dirs_world = [ijk_to_world[:3, :3] @ np.eye(3)[a][::-1] for a in range(3)]
    row_axis, col_axis = in_plane_axes(slice_axis)
    x_dir = dirs_world[col_axis] / np.linalg.norm(dirs_world[col_axis])
    z_dir = dirs_world[slice_axis] / np.linalg.norm(dirs_world[slice_axis])
    y_dir = np.cross(z_dir, x_dir)
    return np.c_[x_dir, y_dir, z_dir] @ rotation_matrix([0, 0, 1], spin)[:3, :3]


@pytest.mark.parametrize("name", list(_geometries()))
@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize("spin", [0.0, 30.0])
@pytest.mark.parametrize("extent", ["fractional", "voxel_boundaries"])
def test_roi_key_box_matches_covered_voxels(mrml_scene, name, slice_axis, spin, extent):
    ijk_to_ras, parent = _geometries()[name]
    volume = make_volume(mrml_scene, _volume_array(), ijk_to_ras, parent_transform=parent)
    ijk_to_world = mrml.volume_ijk_to_world(volume)
    # An ROI aligned with the volume's slices (its local z along the slice axis), spun in-plane by `spin`. Its
    # in-plane edges are half-way between voxel centres ("voxel_boundaries": 7 x 5 voxels around a voxel centre)
    # or anywhere ("fractional": 6.3 x 4.2).
    row_axis, col_axis = in_plane_axes(slice_axis)
    rotation = _aligned_rotation(ijk_to_world, slice_axis, spin)
    center_kji = [5.0, 9.0, 11.0]
    center = _world_point(ijk_to_world, center_kji)
    spacing = np.linalg.norm(ijk_to_world[:3, :3], axis=0)[::-1]  # per numpy axis
    cols, rows = (6.3, 4.2) if extent == "fractional" else (7.0, 5.0)
    size = [cols * spacing[col_axis], rows * spacing[row_axis], 0.5 * spacing[slice_axis]]
    roi = make_roi(mrml_scene, center, size, rotation)

    keys = mrml_markups.markups_key_boxes([roi], volume)
    assert keys.slice_axis == slice_axis
    (key,) = keys.boxes
    assert key.slice_index == int(center_kji[slice_axis])
    inside = _inside_voxels(roi, volume, ijk_to_world)
    assert len(inside) > 0
    assert set(inside[:, slice_axis]) == {key.slice_index}
    x0, y0, x1, y1 = key.box
    xs, ys = inside[:, col_axis], inside[:, row_axis]
    if spin == 0.0:
        # The box is the covered voxels' extent, exactly (it used to be one voxel larger at the far edges).
        assert key.box == (xs.min(), ys.min(), xs.max(), ys.max())
        return
    # Spun in-plane: the box is the voxel centres inside the extent of the ROI's in-plane corners (from Slicer's own
    # matrix and size), so it holds every covered voxel. Its corners are the extreme covered centres only where
    # the ROI's tips lie on voxel centres (test_spun_roi_box_is_exact_when_its_tips_are_voxel_centres); otherwise a
    # tip may reach less than a voxel past the last covered centre in that column, never a whole voxel.
    object_to_world = numpy_matrix(roi.GetObjectToWorldMatrix())
    half = np.asarray(roi.GetSize()) / 2
    tips = [object_to_world @ [sx * half[0], sy * half[1], 0.0, 1.0] for sx in (-1, 1) for sy in (-1, 1)]
    tips_kji = (np.linalg.inv(ijk_to_world) @ np.array(tips).T).T[:, 2::-1]
    assert key.box == (np.ceil(tips_kji[:, col_axis].min()), np.ceil(tips_kji[:, row_axis].min()),
                       np.floor(tips_kji[:, col_axis].max()), np.floor(tips_kji[:, row_axis].max()))
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
    assert xs.min() - x0 <= 1 and x1 - xs.max() <= 1 and ys.min() - y0 <= 1 and y1 - ys.max() <= 1


@pytest.mark.parametrize("direction", ["oblique", "flipped"])
def test_spun_roi_box_is_exact_when_its_tips_are_voxel_centres(mrml_scene, direction):
    # Square pixels (0.7 mm): a square spun 45 degrees with its four tips just beyond voxel centres 2 columns
    # and 2 rows from its centre covers a diamond of voxels whose extent is the box.
    ijk_to_ras = np.diag([0.7, 0.7, 2.0, 1.0])
    if direction == "oblique":
        ijk_to_ras = rotation_matrix([1, 2, 0.5], 17) @ ijk_to_ras
    else:
        ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_ras
    ijk_to_ras[:3, 3] = [3, -7, 11]
    volume = make_volume(mrml_scene, _volume_array(), ijk_to_ras)
    center_kji = [5.0, 9.0, 11.0]
    reach = 2.01  # voxels from the centre to each tip
    side = reach * np.sqrt(2.0) * 0.7
    roi = make_roi(mrml_scene, _world_point(ijk_to_ras, center_kji), [side, side, 1.0],
                   _aligned_rotation(ijk_to_ras, 0, 45.0))
    (key,) = mrml_markups.markups_key_boxes([roi], volume).boxes
    inside = _inside_voxels(roi, volume, ijk_to_ras)
    assert len(inside) == 13  # |dj| + |di| <= 2
    assert key.slice_index == 5
    assert key.box == (inside[:, 2].min(), inside[:, 1].min(), inside[:, 2].max(), inside[:, 1].max()) == (
        9.0, 7.0, 13.0, 11.0)


def test_roi_under_its_own_transform(mrml_scene):
    volume = make_volume(mrml_scene, _volume_array(), np.diag([1.0, 1.0, 2.0, 1.0]))
    shift = np.eye(4)
    shift[:3, 3] = [3.0, 2.0, 4.0]  # 3 columns, 2 rows, 2 slices
    roi = make_roi(mrml_scene, [10.0, 8.0, 10.0], [6.0, 4.0, 1.0])
    plain = mrml_markups.markups_key_boxes([roi], volume).boxes[0]
    roi.SetAndObserveTransformNodeID(make_transform(mrml_scene, shift).GetID())
    moved = mrml_markups.markups_key_boxes([roi], volume).boxes[0]
    assert moved.slice_index == plain.slice_index + 2
    np.testing.assert_allclose(np.subtract(moved.box, plain.box), [3, 2, 3, 2])


def test_line_key_box(mrml_scene):
    ijk_to_ras = np.diag([0.5, 0.5, 3.0, 1.0])
    volume = make_volume(mrml_scene, _volume_array(), ijk_to_ras)
    # A diagonal diameter on slice k=4, from (i=6, j=5) to (i=14, j=11): 5 mm long.
    a = _world_point(ijk_to_ras, [4, 5, 6])
    b = _world_point(ijk_to_ras, [4, 11, 14])
    line = make_line(mrml_scene, a, b)
    keys = mrml_markups.markups_key_boxes([line], volume, line_margin=2)
    assert keys.slice_axis == 0
    (key,) = keys.boxes
    assert key.slice_index == 4
    half = np.hypot(8, 6) / 2 + 2
    np.testing.assert_allclose(key.box, [10 - half, 8 - half, 10 + half, 8 + half])


def test_mixed_markups_and_errors(mrml_scene):
    volume = make_volume(mrml_scene, _volume_array())
    roi = make_roi(mrml_scene, [10, 8, 3], [6, 4, 0.5])
    # A horizontal line (parallel to an image axis) takes the ROIs' slice axis.
    line = make_line(mrml_scene, [4, 8, 7], [12, 8, 7])
    unplaced = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "empty")
    keys = mrml_markups.markups_key_boxes([roi, line, unplaced], volume)
    assert keys.slice_axis == 0 and sorted(k.slice_index for k in keys.boxes) == [3, 7]
    with pytest.raises(GeometryError, match="no placed ROI or line"):
        mrml_markups.markups_key_boxes([unplaced], volume)
    sagittal = make_roi(mrml_scene, [10, 8, 6], [0.5, 4, 4])
    with pytest.raises(GeometryError, match="different slice axes"):
        mrml_markups.markups_key_boxes([roi, sagittal], volume)


def test_vector_volume_is_refused(mrml_scene):
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(node, np.zeros((3, 4, 5, 3), dtype=np.uint8))
    with pytest.raises(GeometryError, match="components"):
        mrml.volume_array(node)


# ---------------------------------------------------------------------------------------------------------
# Writing


def _setup_write(mrml_scene, ijk_to_ras=None, parent=None, segments=("target", "other")):
    volume = make_volume(mrml_scene, _volume_array(), ijk_to_ras, parent_transform=parent)
    segmentation, editor_node, logic, ids = make_segment_editor(mrml_scene, volume, segments)
    return volume, segmentation, editor_node, mrml_segments.SegmentWriter(logic), ids


def _set_segment(writer, volume, mask):
    """Fill the selected segment everywhere with `mask` (setup helper through the same logic)."""
    shape = mask.shape
    mrml_segments.write_segment_mask(writer, volume, mask, 0, (0, shape[0] - 1))
    writer.logic.ClearUndoState()


def _masks():
    rng = np.random.RandomState(7)
    old = np.zeros(SHAPE, dtype=bool)
    old[:, 4:12, 5:15] = True
    new = rng.rand(*SHAPE) > 0.5
    return old, new


@pytest.mark.parametrize("name", list(_geometries()))
@pytest.mark.parametrize("slice_axis", [0, 2])
def test_write_changes_only_the_slice_range(mrml_scene, name, slice_axis):
    ijk_to_ras, parent = _geometries()[name]
    volume, segmentation, _, writer, ids = _setup_write(mrml_scene, ijk_to_ras, parent)
    old, new = _masks()
    _set_segment(writer, volume, old)
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), old)
    first, last = 3, 8
    mrml_segments.write_segment_mask(writer, volume, new, slice_axis, (first, last))
    got = mrml_segments.segment_mask(segmentation, ids[0], volume)
    expected = old.copy()
    selector = [slice(None)] * 3
    selector[slice_axis] = slice(first, last + 1)
    expected[tuple(selector)] = new[tuple(selector)]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), _volume_array())  # source untouched


def test_one_undo_restores(mrml_scene):
    volume, segmentation, _, writer, ids = _setup_write(mrml_scene)
    old, new = _masks()
    _set_segment(writer, volume, old)
    mrml_segments.write_segment_mask(writer, volume, new, 1, (2, 15))
    assert not np.array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), old)
    assert writer.logic.CanUndo()
    writer.logic.Undo()
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), old)


def test_error_midway_leaves_segment_unchanged(mrml_scene):
    volume, segmentation, _, writer, ids = _setup_write(mrml_scene)
    old, new = _masks()
    _set_segment(writer, volume, old)

    class FailingWriter(mrml_segments.SegmentWriter):
        def modify(self, modifier, mode, extent):
            super().modify(modifier, mode, extent)
            if mode == "remove":
                raise RuntimeError("simulated failure after the first modification")

    with pytest.raises(RuntimeError, match="simulated"):
        mrml_segments.write_segment_mask(FailingWriter(writer.logic), volume, new, 0, (0, 11))
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), old)


def test_intensity_mask_is_honoured(mrml_scene):
    volume, segmentation, editor_node, writer, ids = _setup_write(mrml_scene)
    old, new = _masks()
    _set_segment(writer, volume, old)
    editor_node.SetSourceVolumeIntensityMask(True)
    editor_node.SetSourceVolumeIntensityMaskRange(0, 150)
    mrml_segments.write_segment_mask(writer, volume, new, 0, (2, 9))
    values = _volume_array()
    allowed = (values >= 0) & (values <= 150)
    expected = old.copy()
    expected[2:10] = (new[2:10] & allowed[2:10]) | (old[2:10] & ~allowed[2:10])
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), expected)


@pytest.mark.parametrize("overwrite", ["none", "all"])
def test_overwrite_mode_is_honoured(mrml_scene, overwrite):
    volume, segmentation, editor_node, writer, ids = _setup_write(mrml_scene)
    other = np.zeros(SHAPE, dtype=bool)
    other[:, 8:16, 8:20] = True
    editor_node.SetSelectedSegmentID(ids[1])
    _set_segment(writer, volume, other)
    editor_node.SetSelectedSegmentID(ids[0])
    editor_node.SetOverwriteMode(
        editor_node.OverwriteNone if overwrite == "none" else editor_node.OverwriteAllSegments
    )
    _, new = _masks()
    mrml_segments.write_segment_mask(writer, volume, new, 0, (3, 6))
    got_other = mrml_segments.segment_mask(segmentation, ids[1], volume)
    expected_other = other.copy()
    if overwrite == "all":
        expected_other[3:7] &= ~new[3:7]
    np.testing.assert_array_equal(got_other, expected_other)
    expected_target = np.zeros(SHAPE, dtype=bool)
    expected_target[3:7] = new[3:7]
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), expected_target)


def test_mask_mode_outside_all_segments(mrml_scene):
    volume, segmentation, editor_node, writer, ids = _setup_write(mrml_scene)
    other = np.zeros(SHAPE, dtype=bool)
    other[:, 8:16, 8:20] = True
    editor_node.SetSelectedSegmentID(ids[1])
    _set_segment(writer, volume, other)
    editor_node.SetSelectedSegmentID(ids[0])
    editor_node.SetMaskMode(segmentation.EditAllowedOutsideAllSegments)
    _, new = _masks()
    mrml_segments.write_segment_mask(writer, volume, new, 0, (0, 11))
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), new & ~other)
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[1], volume), other)


def test_segmentation_on_another_grid(mrml_scene):
    """The segmentation's reference geometry is another volume's (coarser) and it sits under a transform."""
    volume, segmentation, editor_node, writer, ids = _setup_write(mrml_scene, np.diag([1.0, 1.0, 2.0, 1.0]))
    shift = np.eye(4)
    shift[:3, 3] = [4.0, 0.0, 0.0]
    reference = make_volume(mrml_scene, np.zeros((12, 20, 24), np.int16), np.diag([1.0, 1.0, 2.0, 1.0]) @ shift)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    seg_transform = np.eye(4)
    seg_transform[:3, 3] = [0.0, -3.0, 0.0]
    segmentation.SetAndObserveTransformNodeID(make_transform(mrml_scene, seg_transform).GetID())
    new = np.zeros(SHAPE, dtype=bool)
    new[:, 6:12, 8:16] = True
    mrml_segments.write_segment_mask(writer, volume, new, 0, (2, 5))
    expected = np.zeros(SHAPE, dtype=bool)
    expected[2:6, 6:12, 8:16] = True
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), expected)


def test_write_refuses_bad_input(mrml_scene):
    volume, _, editor_node, writer, _ = _setup_write(mrml_scene)
    with pytest.raises(mrml_segments.SegmentWriteError, match="shape"):
        mrml_segments.write_segment_mask(writer, volume, np.zeros((2, 2, 2), bool), 0, (0, 1))
    with pytest.raises(mrml_segments.SegmentWriteError, match="slice range"):
        mrml_segments.write_segment_mask(writer, volume, np.zeros(SHAPE, bool), 0, (5, 40))
    editor_node.SetSelectedSegmentID(None)
    with pytest.raises(mrml_segments.SegmentWriteError, match="no segment is selected"):
        mrml_segments.write_segment_mask(writer, volume, np.zeros(SHAPE, bool), 0, (0, 1))


def test_a_broken_slicer_core_fails_the_mrml_tests_instead_of_skipping_them():
    import subprocess
    import sys

    code = "import sys; sys.modules['slicer'] = None; sys.path.insert(0, 'Testing'); import slicer_scene"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                         cwd=__file__.rsplit("/Testing/", 1)[0])
    assert run.returncode != 0 and "slicer-core cannot be imported" in run.stderr
