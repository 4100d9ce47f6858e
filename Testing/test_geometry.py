"""Key boxes, interpolation and world -> voxel geometry: property tests over random boxes and axes."""

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from MedSAMSegmentLib.geometry import (
    BoxWarning,
    GeometryError,
    KeyBox,
    KeyBoxSet,
    box_from_mask,
    in_plane_axes,
    interpolate_boxes,
    slice_shape,
    take_slice,
    validate_box,
    validate_key_boxes,
)
from MedSAMSegmentLib.io.markup_boxes import (
    key_box_from_line,
    key_box_from_roi,
    merge_key_boxes,
    roi_section_ras,
    slice_axis_from_view_normal,
)

coordinate = st.floats(min_value=0, max_value=200, allow_nan=False)


@st.composite
def box_strategy(draw):
    x0, x1 = sorted([draw(coordinate), draw(coordinate)])
    y0, y1 = sorted([draw(coordinate), draw(coordinate)])
    return (x0, y0, x1 + 1.0, y1 + 1.0)


@st.composite
def key_sets(draw):
    slices = draw(st.lists(st.integers(0, 60), min_size=1, max_size=8, unique=True))
    return [KeyBox(s, draw(box_strategy())) for s in slices]


@given(key_sets())
def test_interpolation_covers_range_keeps_keys_and_stays_between(keys):
    boxes = interpolate_boxes(keys)
    ordered = sorted(keys, key=lambda k: k.slice_index)
    assert sorted(boxes) == list(range(ordered[0].slice_index, ordered[-1].slice_index + 1))
    for key in keys:
        assert boxes[key.slice_index] == pytest.approx(key.box)
    for lower, upper in zip(ordered, ordered[1:]):
        low = np.minimum(lower.box, upper.box) - 1e-9
        high = np.maximum(lower.box, upper.box) + 1e-9
        for s in range(lower.slice_index, upper.slice_index + 1):
            assert np.all(np.asarray(boxes[s]) >= low) and np.all(np.asarray(boxes[s]) <= high)


def test_interpolation_is_linear():
    boxes = interpolate_boxes([KeyBox(10, (0, 0, 10, 10)), KeyBox(14, (4, 8, 30, 18))])
    assert boxes[12] == pytest.approx((2, 4, 20, 14))
    assert boxes[11] == pytest.approx((1, 2, 15, 12))


@given(key_sets())
def test_rounded_sizes_cover_range_keep_keys_and_stay_in_the_key_boxes_hull(keys):
    boxes = interpolate_boxes(keys, "rounded")
    ordered = sorted(keys, key=lambda k: k.slice_index)
    assert sorted(boxes) == list(range(ordered[0].slice_index, ordered[-1].slice_index + 1))
    for key in keys:
        assert boxes[key.slice_index] == pytest.approx(key.box)
    for lower, upper in zip(ordered, ordered[1:]):
        a, b = np.asarray(lower.box), np.asarray(upper.box)
        for s in range(lower.slice_index, upper.slice_index + 1):
            x0, y0, x1, y1 = boxes[s]
            assert min(a[0], b[0]) - 1e-9 <= x0 <= x1 <= max(a[2], b[2]) + 1e-9
            assert min(a[1], b[1]) - 1e-9 <= y0 <= y1 <= max(a[3], b[3]) + 1e-9


def test_rounded_sizes_change_fast_near_the_smaller_box_and_keep_the_centre_linear():
    # Half-sizes 1 and 7 around centres 10 and 12: a quarter of the way, sqrt(0.75 * 1 + 0.25 * 49) = sqrt(13).
    keys = [KeyBox(0, (9, 9, 11, 11)), KeyBox(4, (5, 5, 19, 19))]
    boxes = interpolate_boxes(keys, "rounded")
    half = np.sqrt(13.0)
    assert boxes[1] == pytest.approx((10.5 - half, 10.5 - half, 10.5 + half, 10.5 + half))
    linear = interpolate_boxes(keys)
    for s in (1, 2, 3):  # larger than linear between boxes of different sizes, same centre
        assert boxes[s][2] - boxes[s][0] > linear[s][2] - linear[s][0]
        assert (boxes[s][0] + boxes[s][2]) / 2 == pytest.approx((linear[s][0] + linear[s][2]) / 2)
    same = [KeyBox(0, (0, 0, 10, 10)), KeyBox(4, (8, 4, 18, 14))]  # equal sizes: rounded is linear
    rounded, linear = interpolate_boxes(same, "rounded"), interpolate_boxes(same)
    assert all(rounded[s] == pytest.approx(linear[s]) for s in range(5))
    with pytest.raises(ValueError, match="box sizes 'cubic'"):
        interpolate_boxes(same, "cubic")


def test_single_key_box_is_that_slice_only():
    assert interpolate_boxes([KeyBox(3, (1, 2, 5, 6))]) == {3: (1.0, 2.0, 5.0, 6.0)}


@given(st.integers(0, 2), st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(2, 9)))
def test_take_slice_matches_numpy_take(axis, shape):
    volume = np.arange(np.prod(shape)).reshape(shape)
    index = shape[axis] // 2
    assert np.array_equal(take_slice(volume, axis, index), volume.take(index, axis=axis))
    assert take_slice(volume, axis, index).shape == slice_shape(shape, axis)


@given(box_strategy(), st.integers(50, 300), st.integers(50, 300))
@example((80.0, 0.0, 81.0, 1.0), 50, 81)  # meets the slice only on its last column: refused, named as such
def test_validate_box_result_is_inside_and_ordered(box, rows, cols):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoxWarning)
        try:
            x0, y0, x1, y1 = validate_box(box, (rows, cols))
        except GeometryError as exc:
            assert "outside" in str(exc) or "zero" in str(exc) or "only touches the edge" in str(exc)
            return
    assert 0 <= x0 <= x1 <= cols - 1 and 0 <= y0 <= y1 <= rows - 1


def test_validate_box_swaps_clips_and_refuses():
    with pytest.warns(BoxWarning, match="reversed"):
        assert validate_box((10, 20, 5, 8), (100, 100)) == (5, 8, 10, 20)
    with pytest.warns(BoxWarning, match="clipped"):
        assert validate_box((-5, 10, 50, 200), (100, 100)) == (0, 10, 50, 99)
    for bad, message in [
        ((200, 200, 300, 300), "wholly outside"),
        ((5, 5, 5, 9), "zero width"),
        ((float("nan"), 0, 3, 3), "NaN"),
        ((0, 0, float("inf"), 3), "NaN or infinity"),
        ((1, 2, 3), "4 numbers"),
    ]:
        with pytest.raises(GeometryError, match=message):
            validate_box(bad, (100, 100))


def test_validate_key_boxes_refuses_duplicates_and_missing_slices():
    duplicate = KeyBoxSet(0, [KeyBox(3, (1, 1, 9, 9), "ROI 'a'"), KeyBox(3, (2, 2, 8, 8), "ROI 'b'")])
    with pytest.raises(GeometryError, match="ROI 'a'.*ROI 'b'"):
        validate_key_boxes(duplicate, (10, 20, 20))
    with pytest.raises(GeometryError, match="slices 0-9"):
        validate_key_boxes(KeyBoxSet(0, [KeyBox(12, (1, 1, 9, 9))]), (10, 20, 20))
    with pytest.raises(GeometryError, match="no key boxes"):
        validate_key_boxes(KeyBoxSet(0, []), (10, 20, 20))


def test_merge_refuses_mixed_axes():
    with pytest.raises(GeometryError, match="different slice axes"):
        merge_key_boxes([(0, KeyBox(1, (0, 0, 4, 4))), (2, KeyBox(1, (0, 0, 4, 4)))])


def test_box_from_mask_with_margin_is_clipped():
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:9, 2:12] = True
    assert box_from_mask(mask) == (2, 5, 11, 8)
    assert box_from_mask(mask, 3) == (0, 2, 14, 11)
    assert box_from_mask(np.zeros((4, 4), bool)) is None


# --- world -> voxels -------------------------------------------------------------------------------------


def rotation(axis: int, degrees: float) -> np.ndarray:
    theta = np.radians(degrees)
    c, s = np.cos(theta), np.sin(theta)
    a, b = [n for n in range(3) if n != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def ijk_to_ras_matrix(direction: np.ndarray, spacing, origin) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def roi_for_voxel_box(ijk_to_ras, slice_axis, slice_index, box, thickness=0.2, beyond=(0.5, 0.5, 0.5, 0.5)):
    """An ROI (centre, size, object-to-world) aligned with the volume that covers a voxel box on one slice.

    Its in-plane edges lie ``beyond`` = (left, top, right, bottom) voxels outside the box's outer voxel centres (0.5:
    on the voxel boundaries; 0: on the centres); it is ``thickness`` voxels deep.
    """
    row_axis, col_axis = in_plane_axes(slice_axis)
    low, high = np.zeros(3), np.zeros(3)  # numpy kji
    low[slice_axis] = high[slice_axis] = slice_index
    low[col_axis], high[col_axis] = box[0] - beyond[0], box[2] + beyond[2]
    low[row_axis], high[row_axis] = box[1] - beyond[1], box[3] + beyond[3]
    centre_kji = (low + high) / 2
    extent_kji = high - low
    extent_kji[slice_axis] = thickness
    linear = ijk_to_ras[:3, :3]
    spacing_ijk = np.linalg.norm(linear, axis=0)
    axes = linear / spacing_ijk  # unit columns: i, j, k directions in RAS
    size = extent_kji[::-1] * spacing_ijk
    object_to_world = np.eye(4)
    object_to_world[:3, :3] = axes
    object_to_world[:3, 3] = (ijk_to_ras @ np.r_[centre_kji[::-1], 1.0])[:3]
    return np.zeros(3), size, object_to_world


DIRECTIONS = [np.eye(3), np.diag([-1.0, -1.0, 1.0]), rotation(2, 90) @ np.diag([1, -1, 1]),
              rotation(0, 33) @ rotation(2, 20), np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)]
DIRECTION_IDS = ["identity", "flipped", "permuted", "oblique", "PSR"]


@pytest.mark.parametrize("direction", DIRECTIONS, ids=DIRECTION_IDS)
@settings(max_examples=25, deadline=None)
@given(axis=st.integers(0, 2), data=st.data())
def test_roi_gives_the_voxel_box_it_covers_for_any_direction(direction, axis, data):
    """The box holds exactly the voxels whose centres lie inside the ROI: edges anywhere from on the outer centres
    to just short of the next ones (on the voxel boundaries the old rounding made the box one voxel too large)."""
    shape = (20, 40, 50)
    ijk_to_ras = ijk_to_ras_matrix(direction, (0.8, 0.7, 2.5), (-12.0, 30.0, 5.0))
    rows, cols = slice_shape(shape, axis)
    x0 = data.draw(st.integers(0, cols - 3))
    y0 = data.draw(st.integers(0, rows - 3))
    box = (x0, y0, data.draw(st.integers(x0 + 1, cols - 1)), data.draw(st.integers(y0 + 1, rows - 1)))
    s = data.draw(st.integers(0, shape[axis] - 1))
    beyond = data.draw(st.tuples(*[st.one_of(st.just(0.0), st.just(0.5), st.floats(0.0, 0.99))] * 4))
    centre, size, object_to_world = roi_for_voxel_box(ijk_to_ras, axis, s, box, beyond=beyond)
    got_axis, key = key_box_from_roi(centre, size, object_to_world, np.linalg.inv(ijk_to_ras), shape)
    assert got_axis == axis
    assert key.slice_index == s
    assert key.box == box


def test_roi_on_voxel_boundaries_is_not_one_voxel_too_large():
    # Issue 13: an ROI from x0 - 0.5 to x1 + 0.5 covers voxels x0..x1, not x0..x1 + 1.
    ijk_to_ras = ijk_to_ras_matrix(np.eye(3), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))
    centre, size, object_to_world = roi_for_voxel_box(ijk_to_ras, 0, 4, (10, 12, 20, 18))
    np.testing.assert_allclose(size, [11.0, 7.0, 0.6])
    assert key_box_from_roi(centre, size, object_to_world, np.linalg.inv(ijk_to_ras), (10, 40, 40)) == (
        0, KeyBox(4, (10.0, 12.0, 20.0, 18.0), "ROI"))


def test_roi_covering_no_voxel_centre_is_refused():
    object_to_world = np.eye(4)
    object_to_world[:3, 3] = (10.5, 20.0, 3.0)  # from column 10.2 to 10.8: between two voxel centres
    with pytest.raises(GeometryError, match="covers no voxel centre on slice 3.*draw a larger box") as info:
        key_box_from_roi(np.zeros(3), (0.6, 8.0, 0.2), object_to_world, np.eye(4), (10, 40, 40), name="R")
    assert "\n" not in str(info.value)


def test_two_click_roi_without_a_view_is_ambiguous():
    # A Box ROI placed with two clicks in the axial view: 30 x 20 mm, padded to 20 mm across the slice.
    object_to_world = np.eye(4)
    object_to_world[:3, 3] = (20.0, 20.0, 5.0)
    ras_to_ijk = np.eye(4)
    with pytest.raises(GeometryError, match="ambiguous.*--slice-axis") as info:
        key_box_from_roi(np.zeros(3), (30.0, 20.0, 20.0), object_to_world, ras_to_ijk, (10, 40, 40), name="R")
    assert "\n" not in str(info.value) and "20.0 and 20.0 mm" in str(info.value)
    expected = (0, KeyBox(5, (5.0, 10.0, 35.0, 30.0), "ROI 'R'"))
    for kwargs in ({"slice_axis": 0}, {"slice_normal": (0.0, 0.0, -1.0)}, {"slice_axis": 0, "slice_normal": (0, 0, 1)}):
        assert key_box_from_roi(np.zeros(3), (30.0, 20.0, 20.0), object_to_world, ras_to_ijk, (10, 40, 40),
                                name="R", **kwargs) == expected
    # A thin side only 10% thinner than the next is still clear.
    axis, _ = key_box_from_roi(np.zeros(3), (30.0, 20.0, 18.0), object_to_world, ras_to_ijk, (10, 40, 40))
    assert axis == 0


def test_side_thinnest_in_voxels_but_not_in_mm_is_refused():
    # 0.7 x 0.7 x 5 mm voxels: half a slice deep (2.5 mm) is thinner in voxels than 3 columns wide (2.1 mm).
    ijk_to_ras = ijk_to_ras_matrix(np.eye(3), (0.7, 0.7, 5.0), (0.0, 0.0, 0.0))
    object_to_world = np.eye(4)
    object_to_world[:3, 3] = (14.0, 14.0, 20.0)
    with pytest.raises(GeometryError, match="ambiguous"):
        key_box_from_roi(np.zeros(3), (2.1, 14.0, 2.5), object_to_world, np.linalg.inv(ijk_to_ras), (10, 40, 40))


def test_recorded_view_normal_beats_the_thin_side():
    object_to_world = np.eye(4)
    object_to_world[:3, 3] = (20.0, 20.0, 5.0)
    # Thin along S, but recorded as drawn in a sagittal view: the cut at x = 20 is 20 (A) x 1 (S) mm.
    axis, key = key_box_from_roi(np.zeros(3), (30.0, 20.0, 1.0), object_to_world, np.eye(4), (10, 40, 40),
                                 slice_normal=(1.0, 0.0, 0.0))
    assert axis == 2 and key.slice_index == 20 and key.box == (10.0, 5.0, 30.0, 5.0)
    # A given slice axis wins over the recorded view.
    axis, key = key_box_from_roi(np.zeros(3), (30.0, 20.0, 1.0), object_to_world, np.eye(4), (10, 40, 40),
                                 slice_axis=0, slice_normal=(1.0, 0.0, 0.0))
    assert axis == 0 and key == KeyBox(5, (5.0, 10.0, 35.0, 30.0), "ROI")


def test_recorded_view_normal_too_oblique_is_refused():
    object_to_world = np.eye(4)
    object_to_world[:3, 3] = (20.0, 20.0, 5.0)
    normal = rotation(0, 35) @ np.array([0.0, 0.0, 1.0])
    with pytest.raises(GeometryError, match=r"the view it was drawn in is 35\.0 degrees from image axis 0"):
        key_box_from_roi(np.zeros(3), (30.0, 20.0, 20.0), object_to_world, np.eye(4), (10, 40, 40),
                         slice_normal=normal)
    with pytest.raises(GeometryError, match=r"35\.0 degrees"):
        key_box_from_line((10, 10, 5), (20, 14, 5), np.eye(4), (10, 40, 40), slice_normal=normal)


def test_section_through_a_box_in_a_tilted_plane():
    # A box 30 x 20 x 4 mm cut through its centre by a plane tilted 5 degrees about x: the cut reaches every side
    # face (4 vertices on the 4 edges along z), and all of them lie in the plane.
    normal = rotation(0, 5) @ np.array([0.0, 0.0, 1.0])
    matrix = np.eye(4)
    matrix[:3, 3] = (1.0, 2.0, 3.0)
    points = roi_section_ras(np.zeros(3), (30.0, 20.0, 4.0), matrix, normal)
    assert len(points) == 4
    np.testing.assert_allclose((points - [1.0, 2.0, 3.0]) @ normal, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sort(points[:, 0]), [-14, -14, 16, 16])
    np.testing.assert_allclose(np.sort(points[:, 1]), [-8, -8, 12, 12])


def test_rotated_roi_uses_all_corners():
    # An ROI rotated 45 degrees in plane covers its rotated extent, not its axis-aligned size.
    ijk_to_ras = np.eye(4)
    object_to_world = np.eye(4)
    object_to_world[:3, :3] = rotation(2, 45)
    object_to_world[:3, 3] = (20, 20, 3)
    axis, key = key_box_from_roi(np.zeros(3), (10, 10, 0.5), object_to_world, ijk_to_ras, (10, 40, 40))
    half = 5 * np.sqrt(2)
    assert axis == 0 and key.slice_index == 3
    assert key.box == pytest.approx((round(20 - half), round(20 - half), round(20 + half), round(20 + half)))


def test_oblique_roi_is_refused_with_its_angle():
    object_to_world = np.eye(4)
    object_to_world[:3, :3] = rotation(0, 40)
    object_to_world[:3, 3] = (20, 20, 5)
    with pytest.raises(GeometryError, match=r"40\.0 degrees"):
        key_box_from_roi(np.zeros(3), (10, 10, 0.5), object_to_world, np.eye(4), (10, 40, 40))


def test_line_becomes_square_around_its_diameter():
    ijk_to_ras = ijk_to_ras_matrix(np.eye(3), (0.5, 1.0, 3.0), (0, 0, 0))
    # A diagonal line on slice k=4 from voxel (10, 10) to (30, 20) (i, j).
    a = ijk_to_ras @ np.array([10, 10, 4, 1.0])
    b = ijk_to_ras @ np.array([30, 20, 4, 1.0])
    axis, key = key_box_from_line(a[:3], b[:3], np.linalg.inv(ijk_to_ras), (10, 50, 50), margin=0)
    length_mm = np.hypot(20 * 0.5, 10 * 1.0)
    assert axis == 0 and key.slice_index == 4
    cx, cy = 20, 15
    assert key.box == pytest.approx((cx - length_mm / 2 / 0.5, cy - length_mm / 2 / 1.0,
                                     cx + length_mm / 2 / 0.5, cy + length_mm / 2 / 1.0))


def test_axis_parallel_line_needs_the_slice_axis():
    with pytest.raises(GeometryError, match="ambiguous"):
        key_box_from_line((10, 5, 2), (20, 5, 2), np.eye(4), (10, 40, 40))
    axis, key = key_box_from_line((10, 5, 2), (20, 5, 2), np.eye(4), (10, 40, 40), slice_axis=0, margin=0)
    assert axis == 0 and key.slice_index == 2 and key.box == pytest.approx((10, 0, 20, 10))


def test_view_normal_picks_axis_for_psr_volume():
    # PSR storage: i runs P (-A), j runs S, k runs R. The axial view's normal (S) is along j: numpy axis 1.
    direction = np.array([[0, 0, 1], [-1, 0, 0], [0, 1, 0]], dtype=float)
    ijk_to_ras = ijk_to_ras_matrix(direction, (1, 1, 1), (0, 0, 0))
    assert slice_axis_from_view_normal((0, 0, 1), ijk_to_ras) == 1
    assert slice_axis_from_view_normal((1, 0, 0), ijk_to_ras) == 0


def test_view_normal_is_matched_in_physical_space():
    # 0.5 x 0.5 x 5 mm voxels: a view normal 15 degrees from the slice direction still picks the slice axis (in
    # voxel indices its in-plane part would weigh ten times more).
    ijk_to_ras = ijk_to_ras_matrix(np.eye(3), (0.5, 0.5, 5.0), (0, 0, 0))
    normal = rotation(0, 15) @ np.array([0.0, 0.0, 1.0])
    assert slice_axis_from_view_normal(normal, ijk_to_ras) == 0
