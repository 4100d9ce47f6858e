"""Baselines: filled boxes, tight boxes, contours + morphological interpolation, the published recipe."""

import numpy as np
import pytest
from medsam_evaluation import baselines, simulate
from MedSAMSegmentLib import metrics
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet, take_slice


def test_fill_box_exact():
    m = baselines.fill_box((6, 8), (1.0, 2.0, 3.0, 4.0))
    assert m.sum() == 9
    assert m[2:5, 1:4].all()
    # rounding half up and clipping to the slice
    m = baselines.fill_box((6, 8), (-2.0, 4.5, 9.0, 10.0))
    assert m.sum() == 8 * 1 and m[5].all()


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_filled_boxes_interpolate_between_keys(slice_axis):
    shape = [10, 11, 12]
    keys = KeyBoxSet(slice_axis, [KeyBox(2, (1, 1, 3, 3)), KeyBox(6, (1, 1, 7, 7))])
    mask = baselines.filled_boxes(shape, keys)
    areas = [int(take_slice(mask, slice_axis, s).sum()) for s in range(shape[slice_axis])]
    assert areas[:2] == [0, 0] and areas[7:] == [0] * (shape[slice_axis] - 7)
    assert areas[2] == 9 and areas[6] == 49 and areas[4] == 25  # box (1,1,5,5) half way


def test_tight_boxes_filled_contains_reference():
    rng = np.random.default_rng(0)
    ref = rng.random((6, 20, 20)) > 0.9
    filled = baselines.tight_boxes_filled(ref, 0)
    assert np.all(filled[ref])
    # a box-shaped reference is reproduced exactly
    box_ref = np.zeros((5, 10, 10), bool)
    box_ref[1:4, 2:6, 3:9] = True
    assert metrics.dice(baselines.tight_boxes_filled(box_ref, 0), box_ref) == 1.0


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_contours_interpolated_along_the_slice_axis(slice_axis):
    # A cone-like target along slice_axis: growing squares.
    shape = [24, 26, 28]
    ref = np.zeros(shape, bool)
    for s in range(2, 11):
        sl = [slice(None)] * 3
        sl[slice_axis] = s
        rest = [a for a in range(3) if a != slice_axis]
        sl[rest[0]] = slice(12 - s, 12 + s)
        sl[rest[1]] = slice(12 - s, 12 + s)
        ref[tuple(sl)] = True
    keys = [2, 6, 10]
    out = baselines.contours_interpolated(ref, slice_axis, keys)
    # key slices are kept exactly; slices between are filled (not left empty); nothing beyond the keys
    for s in keys:
        assert np.array_equal(take_slice(out, slice_axis, s), take_slice(ref, slice_axis, s))
    for s in (3, 4, 5, 7, 8, 9):
        assert take_slice(out, slice_axis, s).sum() > 0
    assert take_slice(out, slice_axis, 1).sum() == 0 and take_slice(out, slice_axis, 11).sum() == 0
    assert metrics.dice(out, ref) > 0.95
    # along the wrong axis the slices between keys would stay empty: the axis mapping matters
    assert metrics.dice(out, ref) > metrics.dice(baselines.filled_boxes(shape, simulate.simulate_key_boxes(
        ref, slice_axis, 4, margin=0)), ref) - 0.05


def test_numpy_axis_to_itk():
    assert [baselines.numpy_axis_to_itk(a) for a in (0, 1, 2)] == [2, 1, 0]


def test_published_recipe_matches_engine_model(lite_model):
    """Parity: the step-by-step recipe and the engine's model give the same mask on a real slice."""
    from conftest import shared_data_path
    from MedSAMSegmentLib import io

    volume = io.read_image(shared_data_path("ct_lesion", "CT_Lesion_000010_01_01_078-090.npz"))
    ref, _ = io.read_mask(shared_data_path("ct_lesion", "CT_Lesion_000010_01_01_078-090.npz"))
    recipe = baselines.PublishedRecipe(net=lite_model.net)
    s = 6
    slice_u8 = take_slice(volume.array, 0, s)
    box = simulate.annotator_box(take_slice(ref, 0, s), 3)
    mask, iou = recipe.segment_slice(slice_u8, box)
    embedding = lite_model.encode([slice_u8])
    logits, engine_iou = lite_model.decode(embedding, np.array([box]), slice_u8.shape)
    assert metrics.dice(mask, logits[0] > 0) > 0.99
    assert iou == pytest.approx(float(engine_iou[0]), abs=1e-3)
    assert metrics.dice(mask, take_slice(ref, 0, s)) > 0.5
