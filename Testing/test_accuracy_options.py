"""The accuracy options with a stand-in model: fast, no weights. Their effect on real cases is measured
by benchmarks/accuracy_study.py (docs/accuracy.md) and guarded by test_real_data.py."""

import numpy as np
import pytest
from MedSAMSegmentLib import engine
from MedSAMSegmentLib.engine import Crop, EmbeddingCache, VolumeSegmenter, refine_to_box, shift_box, zoom_region
from MedSAMSegmentLib.engine.views import paste
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.intensity import normalise_volume
from MedSAMSegmentLib.settings import PUBLISHED, SegmentationSettings, SettingsError
from stand_in_model import StandInModel


def published(**changes) -> SegmentationSettings:
    """The published behaviour with ``changes`` (the engine has no defaults of its own)."""
    return SegmentationSettings(**{**PUBLISHED, **changes})



def volume(shape=(9, 200, 200)):
    return np.random.default_rng(0).integers(0, 255, size=shape, dtype=np.uint8)


def test_zoom_region_only_for_small_boxes_and_stable_under_small_moves():
    assert zoom_region((50, 50, 150, 150), (200, 200)) is None  # 128 model pixels: whole slice
    region = zoom_region((95, 90, 104, 101), (200, 200))
    assert region is not None
    r0, r1, c0, c1 = region
    assert r0 <= 90 and r1 > 101 and c0 <= 95 and c1 > 104
    assert r1 - r0 == c1 - c0 >= engine.ZOOM_MIN_CROP
    assert zoom_region((96, 90, 105, 101), (200, 200)) == region
    # At the edge of the slice the crop stays inside it and still holds the box.
    r0, r1, c0, c1 = zoom_region((0, 0, 8, 8), (200, 200))
    assert (r0, c0) == (0, 0)


def test_a_crop_is_rows_then_columns_end_exclusive_and_boxes_shift_into_it():
    crop = zoom_region((95, 90, 104, 101), (200, 200))
    assert isinstance(crop, Crop) and crop == tuple(crop)
    assert crop.shape == (crop.row1 - crop.row0, crop.col1 - crop.col0)
    local = shift_box((95, 90, 104, 101), crop)
    assert local == (95 - crop.col0, 90 - crop.row0, 104 - crop.col0, 101 - crop.row0)
    assert shift_box((1, 2, 3, 4), None) == (1, 2, 3, 4)
    image = np.arange(200 * 200).reshape(200, 200)
    assert np.array_equal(crop.cut(image), image[crop.row0 : crop.row1, crop.col0 : crop.col1])
    full = paste(np.ones(crop.shape, bool), crop, (200, 200))
    assert full.sum() == crop.shape[0] * crop.shape[1] and full[crop.row0, crop.col0] and not full[0, 0]
    assert Crop.from_slices(slice(3, 9), slice(4, 8)) == (3, 9, 4, 8)


def test_zoom_encodes_the_crop_and_pastes_the_mask_back():
    model = StandInModel("inner")
    segmenter = VolumeSegmenter(model, volume(), 0, cache=EmbeddingCache(), batch_size=2)
    keys = KeyBoxSet(0, [KeyBox(2, (95, 90, 104, 101)), KeyBox(6, (97, 92, 106, 103))])
    zoomed = segmenter.segment(keys, published(zoom="auto"))
    assert all(shape[0] < 200 for shape in model.encoded_shapes)
    whole = VolumeSegmenter(StandInModel("inner"), volume(), 0, cache=EmbeddingCache()).segment(keys, published())
    assert np.array_equal(zoomed.mask, whole.mask)  # the box model gives the same mask at any zoom
    assert zoomed.mask[2, 91:101, 96:104].all() and zoomed.mask[2].sum() == 10 * 8


def test_refine_clips_to_the_box_and_fills_holes():
    mask = np.zeros((40, 40), bool)
    mask[5:30, 5:30] = True
    mask[15, 15] = False
    out = refine_to_box(mask, (10, 10, 20, 20), margin=2)
    assert out[8:23, 8:23].all() and out.sum() == 15 * 15


def test_guided_boxes_follow_the_masks_and_key_slices_keep_their_boxes():
    segmenter = VolumeSegmenter(StandInModel("inner"), volume(), 0, cache=EmbeddingCache())
    keys = KeyBoxSet(0, [KeyBox(0, (40, 40, 80, 80)), KeyBox(8, (60, 60, 100, 100))])
    result = segmenter.segment(keys, published(guide="mean"))
    assert sorted(result.boxes) == list(range(9))
    assert result.boxes[0] == (40, 40, 80, 80) and result.boxes[8] == (60, 60, 100, 100)
    # The box model shrinks each box by a pixel; a guided box is the mean of it (+3 px) and the interpolated one.
    interpolated = np.array([42.5, 42.5, 82.5, 82.5])
    assert np.allclose(result.boxes[1], (interpolated + np.array([41, 41, 79, 79]) + [-3, -3, 3, 3]) / 2)
    with pytest.raises(SettingsError, match="--guide 'nope': use one of off, mean"):
        published(guide="nope")


def test_mr_rule_uses_the_voxels_above_the_background_of_z_scored_images():
    rng = np.random.default_rng(1)
    brain = rng.normal(0, 1, size=(4, 20, 20)).astype(np.float32)
    image = np.full((4, 30, 30), -3.5, np.float32)
    image[:, 5:25, 5:25] = brain
    published = normalise_volume(image, "MR", mr_rule="published")
    auto = normalise_volume(image, "MR", mr_rule="auto")
    inside = image > -3.5
    assert (published[inside] == 0).mean() > 0.4  # half the brain black
    assert (auto[inside] == 0).mean() < 0.01 and auto[~inside].max() == 0
    positive = np.abs(image) + 1
    positive[:, :3] = 0
    assert np.array_equal(normalise_volume(positive, "MR", mr_rule="auto"),
                          normalise_volume(positive, "MR", mr_rule="published"))


class CropShyModel(StandInModel):
    """The stand-in's inner box, but on a crop (an input smaller than the slice) half the box and a higher IoU."""

    def __init__(self):
        super().__init__("inner")

    def decode(self, embeddings, boxes, original_size):
        logits, iou = super().decode(embeddings, boxes, original_size)
        if original_size[0] < 200:
            for n, box in enumerate(boxes):
                logits[n, :, int((box[0] + box[2]) / 2) :] = -1.0
            iou[:] = 0.95
        else:
            iou[:] = 0.3
        return logits, iou


def test_best_and_union_views_and_retry():
    keys = KeyBoxSet(0, [KeyBox(2, (95, 90, 104, 101))])

    def run(**options):
        segmenter = VolumeSegmenter(CropShyModel(), volume(), 0, cache=EmbeddingCache())
        result = segmenter.segment(keys, published(**options))
        return result.mask[2].sum(), result.iou[2]

    whole, _ = run()
    crop, crop_iou = run(zoom="auto")
    assert crop < whole and crop_iou == pytest.approx(0.95)
    assert run(zoom="best") == (crop, crop_iou)  # the crop's IoU is higher
    assert run(zoom="union")[0] == whole  # the whole slice's mask holds the crop's
    assert run(retry="zoom") == (crop, crop_iou)  # whole slice IoU 0.3 < RETRY_IOU: the crop is tried and kept


def test_zoom_by_size_is_union_for_a_target_small_on_every_key_box_and_best_for_a_large_one():
    from MedSAMSegmentLib.engine.views import resolve_zoom, target_is_small

    small = KeyBoxSet(0, [KeyBox(2, (95, 90, 104, 101)), KeyBox(6, (97, 92, 106, 103))])
    # The same tip box, but the target is large at its other key slice (60 of 200 pixels = 77 model pixels).
    tip_of_large = KeyBoxSet(0, [KeyBox(2, (95, 90, 104, 101)), KeyBox(6, (70, 70, 130, 130))])
    assert target_is_small(small, (200, 200)) and not target_is_small(tip_of_large, (200, 200))
    assert resolve_zoom(published(zoom="size"), small, (200, 200)).zoom == "union"
    assert resolve_zoom(published(zoom="size"), tip_of_large, (200, 200)).zoom == "best"
    assert resolve_zoom(published(zoom="union"), tip_of_large, (200, 200)).zoom == "union"  # others as they are

    def run(keys, zoom):
        segmenter = VolumeSegmenter(CropShyModel(), volume(), 0, cache=EmbeddingCache())
        result = segmenter.segment(keys, published(zoom=zoom))
        return result.mask, result.iou

    for keys, same_as in ((small, "union"), (tip_of_large, "best")):
        by_size, iou = run(keys, "size")
        expected, expected_iou = run(keys, same_as)
        assert np.array_equal(by_size, expected) and iou == expected_iou
    # The tip slice differs between the two: the whole slice's larger mask (union) against the crop's (best).
    assert run(small, "size")[0][2].sum() > run(tip_of_large, "size")[0][2].sum()
