"""Encoding ahead: the views a run will read are encoded from the key boxes placed so far, before Segment."""

import numpy as np
import pytest
from MedSAMSegmentLib import demo, io
from MedSAMSegmentLib.engine import EmbeddingCache, zoom_region
from MedSAMSegmentLib.engine.lookahead import views_ahead
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.session import SegmentationSession, run_segmentation
from MedSAMSegmentLib.settings import SegmentationSettings

SLICE_SIZE, INPUT_SIZE, N_SLICES = (512, 512), 256, 20
SMALL = (270.0, 230.0, 310.0, 262.0)  # 20 model pixels: zoomed
LARGE = (100.0, 100.0, 400.0, 400.0)  # whole slice


def keys(*slices, box=SMALL):
    return KeyBoxSet(0, [KeyBox(s, box) for s in slices])


def test_key_slices_first_then_the_slices_between_with_both_views_for_union():
    views = views_ahead(keys(5, 8), SegmentationSettings(zoom="union"), SLICE_SIZE, INPUT_SIZE, N_SLICES)
    slices = [s for s, _ in views]
    assert slices == [5, 5, 8, 8, 6, 6, 7, 7]
    assert all((region is None) == (n % 2 == 1) for n, (_, region) in enumerate(views))  # crop, then whole slice
    assert len(set(views)) == len(views)


@pytest.mark.parametrize("zoom, retry, per_slice", [("off", "off", 1), ("auto", "off", 1), ("auto", "zoom", 2),
                                                    ("best", "off", 2)])
def test_views_per_slice_follow_zoom_and_retry(zoom, retry, per_slice):
    views = views_ahead(keys(5, 8), SegmentationSettings(zoom=zoom, retry=retry), SLICE_SIZE, INPUT_SIZE, N_SLICES)
    assert len(views) == 4 * per_slice
    assert all(region is None for _, region in views) == (zoom == "off")


def test_large_boxes_are_encoded_whole_once():
    views = views_ahead(keys(5, 8, box=LARGE), SegmentationSettings(zoom="union"), SLICE_SIZE, INPUT_SIZE, N_SLICES)
    assert views == [(5, None), (8, None), (6, None), (7, None)]


def test_speculation_goes_past_the_newest_box_away_from_the_others_inside_the_volume():
    off = SegmentationSettings(zoom="off")

    def guessed(key_boxes, newest, beyond):
        between = len(views_ahead(key_boxes, off, SLICE_SIZE, INPUT_SIZE, N_SLICES))
        return [s for s, _ in views_ahead(key_boxes, off, SLICE_SIZE, INPUT_SIZE, N_SLICES, newest, beyond)][between:]

    assert guessed(keys(5, 8), newest=8, beyond=3) == [9, 10, 11]
    assert guessed(keys(5, 8), newest=5, beyond=3) == [4, 3, 2]
    assert guessed(keys(5, 8, 12), newest=8, beyond=3) == []  # drawn in the middle: no direction
    assert guessed(keys(10), newest=10, beyond=3) == [11, 9, 12]  # one box: both ways
    assert guessed(keys(17, 18), newest=18, beyond=5) == [19]  # the volume ends
    assert guessed(keys(5, 8), newest=None, beyond=3) == []
    assert guessed(keys(5, 8), newest=8, beyond=0) == []


def test_guessed_slices_are_whole_where_whole_slices_are_read_anyway_else_in_the_newest_boxs_view():
    def guessed_views(settings):
        between = len(views_ahead(keys(5, 8), settings, SLICE_SIZE, INPUT_SIZE, N_SLICES))
        return views_ahead(keys(5, 8), settings, SLICE_SIZE, INPUT_SIZE, N_SLICES, 8, 2)[between:]

    assert guessed_views(SegmentationSettings(zoom="union")) == [(9, None), (10, None)]
    crop = zoom_region(SMALL, SLICE_SIZE, INPUT_SIZE)
    assert crop is not None
    assert guessed_views(SegmentationSettings(zoom="auto", retry="off")) == [(9, crop), (10, crop)]


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"zoom": "best", "guide": "off"}], ids=["defaults", "best-unguided"])
def test_working_ahead_leaves_the_run_nothing_to_encode_and_the_same_mask(lite_model, options):
    """The demo lesion (zoomed crops and whole slices; with the defaults, guided boxes between the key slices whose
    crops depend on the neighbouring masks): working ahead encodes exactly the one-shot run's views plus the two
    guessed slices past the newest box, and the run then encodes nothing and gives the one-shot mask exactly."""
    image = io.read_image(demo.DEMO_IMAGE)
    key_boxes = io.read_key_boxes([demo.DEMO_BOXES], image)
    settings = SegmentationSettings(modality="none", **options)
    session = SegmentationSession.open(lite_model, image.array, 0, settings, cache=EmbeddingCache(),
                                       background=False, preview=False)
    session.set_boxes(key_boxes, newest=key_boxes.boxes[-1].slice_index)
    ahead = session.work_ahead(beyond=2)
    fresh = run_segmentation(lite_model, image.array, key_boxes, settings, cache=EmbeddingCache())
    assert ahead == fresh.encoded + 2 and session.stats.speculated == 2  # slices 12 and 13, whole
    result = session.result()
    assert result.encoded == 0 and session.stats.encoded_in_results == 0
    np.testing.assert_array_equal(result.mask, fresh.mask)
