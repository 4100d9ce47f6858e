"""The simulated annotator: key slices, boxes where the mask is, seeded jitter."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from medsam_evaluation import simulate
from MedSAMSegmentLib.geometry import KeyBoxSet, take_slice


def blob_volume(shape=(20, 30, 40), slice_axis=0, first=3, last=15):
    mask = np.zeros(shape, dtype=bool)
    for s in range(first, last + 1):
        sl = [slice(None)] * 3
        sl[slice_axis] = s
        rest = [a for a in range(3) if a != slice_axis]
        sl[rest[0]] = slice(5 + s % 3, 12 + s % 5)  # rows
        sl[rest[1]] = slice(8, 20 + s % 4)  # columns
        mask[tuple(sl)] = True
    return mask


@pytest.mark.parametrize(
    "first,last,spacing,expected",
    [
        (3, 15, 5, [3, 8, 13, 15]),
        (3, 13, 5, [3, 8, 13]),
        (0, 0, 5, [0]),
        (2, 4, 10, [2, 4]),
        (0, 6, 1, [0, 1, 2, 3, 4, 5, 6]),
    ],
)
def test_key_slice_rule_includes_last(first, last, spacing, expected):
    assert simulate.key_slice_indices(first, last, spacing) == expected


def test_spacing_must_be_positive():
    with pytest.raises(ValueError):
        simulate.key_slice_indices(0, 5, 0)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_boxes_land_where_the_mask_is(slice_axis):
    shape = [25, 26, 27]
    mask = blob_volume(tuple(shape), slice_axis)
    keys = simulate.simulate_key_boxes(mask, slice_axis, 5, margin=3)
    assert isinstance(keys, KeyBoxSet) and keys.slice_axis == slice_axis
    assert [k.slice_index for k in keys.boxes] == [3, 8, 13, 15]
    for key in keys.boxes:
        sl = take_slice(mask, slice_axis, key.slice_index)
        rows, cols = np.nonzero(sl)
        x0, y0, x1, y1 = key.box
        # the box is the mask's extent (x = column, y = row) plus the margin
        assert (x0, y0, x1, y1) == (cols.min() - 3, rows.min() - 3, cols.max() + 3, rows.max() + 3)
        assert simulate.box_in_slice(key.box, mask.shape, slice_axis)


def test_margin_clipped_to_slice():
    mask = np.zeros((3, 10, 12), bool)
    mask[1, 0:4, 9:12] = True
    keys = simulate.simulate_key_boxes(mask, 0, 5, margin=3)
    assert keys.boxes[0].box == (6.0, 0.0, 11.0, 6.0)


def test_gap_moves_key_slice_to_nearest_target_slice():
    mask = np.zeros((12, 8, 8), bool)
    mask[[0, 1, 2, 3, 4, 7, 8, 9], 2:5, 2:5] = True  # slices 5 and 6 are empty
    assert simulate.choose_key_slices(mask, 0, 5) == [0, 4, 9]
    assert simulate.choose_key_slices(mask, 0, 3) == [0, 3, 7, 9]


def test_empty_mask_refused():
    with pytest.raises(ValueError):
        simulate.simulate_key_boxes(np.zeros((3, 4, 4), bool), 0, 5)


def test_jitter_is_seeded_outward_and_bounded():
    mask = blob_volume()
    plain = simulate.simulate_key_boxes(mask, 0, 3, margin=3)
    a = simulate.simulate_key_boxes(mask, 0, 3, margin=3, jitter=5, seed=7)
    b = simulate.simulate_key_boxes(mask, 0, 3, margin=3, jitter=5, seed=7)
    c = simulate.simulate_key_boxes(mask, 0, 3, margin=3, jitter=5, seed=8)
    assert [k.box for k in a.boxes] == [k.box for k in b.boxes]
    assert [k.box for k in a.boxes] != [k.box for k in c.boxes]
    for p, j in zip(plain.boxes, a.boxes):
        grow = np.array([p.box[0] - j.box[0], p.box[1] - j.box[1], j.box[2] - p.box[2], j.box[3] - p.box[3]])
        assert np.all(grow >= 0) and np.all(grow <= 5)
        assert simulate.box_in_slice(j.box, mask.shape, 0)


def test_every_slice_and_tight_boxes():
    mask = blob_volume()
    every = simulate.every_slice_boxes(mask, 0, margin=3)
    assert [k.slice_index for k in every.boxes] == list(range(3, 16))
    tight = simulate.tight_boxes(mask, 0)
    assert sorted(tight) == list(range(3, 16))
    for key in every.boxes:
        t = tight[key.slice_index]
        assert key.box == (t[0] - 3, t[1] - 3, t[2] + 3, t[3] + 3)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2),
    st.integers(1, 12),
    st.integers(0, 10),
    st.integers(0, 2**31 - 1),
)
def test_key_slices_cover_target_with_spacing(slice_axis, spacing, jitter, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((14, 15, 16)) > 0.97
    if not mask.any():
        mask[3, 3, 3] = True
    keys = simulate.simulate_key_boxes(mask, slice_axis, spacing, margin=2, jitter=jitter, seed=seed)
    present = simulate.target_slices(mask, slice_axis)
    indices = [k.slice_index for k in keys.boxes]
    assert indices[0] == present[0] and indices[-1] == present[-1]
    assert all(i in set(present.tolist()) for i in indices)
    assert indices == sorted(set(indices))
    for key in keys.boxes:
        sl = take_slice(mask, slice_axis, key.slice_index)
        rows, cols = np.nonzero(sl)
        x0, y0, x1, y1 = key.box
        assert x0 <= cols.min() and x1 >= cols.max() and y0 <= rows.min() and y1 >= rows.max()
        assert simulate.box_in_slice(key.box, mask.shape, slice_axis)
