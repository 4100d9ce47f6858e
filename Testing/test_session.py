"""The interactive session: key boxes as events, work ahead on a thread, the result equal to a one-shot run."""

import dataclasses
import os
import threading
import time

import numpy as np
import pytest
from MedSAMSegmentLib import demo, io
from MedSAMSegmentLib.engine import EmbeddingCache
from MedSAMSegmentLib.engine.lookahead import FIRST_GUESS, speculation_depth
from MedSAMSegmentLib.geometry import GeometryError, KeyBox, KeyBoxSet
from MedSAMSegmentLib.session import SegmentationSession, run_segmentation
from MedSAMSegmentLib.settings import SegmentationSettings
from stand_in_model import StandInModel

WAIT_S = 60.0


class SlowStandIn(StandInModel):
    """The stand-in, taking ``seconds`` per encoded slice, so that events arrive while it encodes."""

    def __init__(self, seconds: float = 0.02) -> None:
        super().__init__("bright")
        self.seconds = seconds

    def encode(self, slices):
        time.sleep(self.seconds * len(slices))
        return super().encode(slices)


def _volume(n_slices: int = 40) -> np.ndarray:
    rng = np.random.default_rng(7)
    volume = rng.integers(0, 100, size=(n_slices, 64, 64)).astype(np.int16)
    volume[:, 20:44, 18:40] += 150  # a bright block on every slice
    return volume


BOX = (16.0, 18.0, 42.0, 46.0)
SETTINGS = SegmentationSettings(modality="none")


def _one_shot(model, volume, boxes, settings=SETTINGS):
    keys = KeyBoxSet(0, [KeyBox(s, b) for s, b in sorted(boxes.items())])
    return run_segmentation(model, volume, keys, settings, cache=EmbeddingCache(), batch_size=2)


def test_speculation_follows_the_users_spacing_within_a_limit():
    assert speculation_depth([10], 10) == FIRST_GUESS
    assert speculation_depth([10, 15], 15) == 5
    assert speculation_depth([10, 15, 40], 40) == 10  # bounded
    assert speculation_depth([10, 15], None) == 0


def test_events_in_any_order_while_encoding_give_the_one_shot_mask():
    model = SlowStandIn()
    volume = _volume()
    with SegmentationSession.open(model, volume, 0, SETTINGS, cache=EmbeddingCache(), batch_size=2) as session:
        session.add_box(10, BOX)
        session.add_box(15, (17.0, 19.0, 41.0, 45.0))
        session.add_box(30, BOX)
        session.move_box(30, (15.0, 17.0, 43.0, 47.0), to_slice=20)  # a box dragged to another slice
        session.add_box(25, BOX)
        session.remove_box(25)
        session.add_box(26, (18.0, 20.0, 40.0, 44.0))
        result = session.result()
        boxes = {10: BOX, 15: (17.0, 19.0, 41.0, 45.0), 20: (15.0, 17.0, 43.0, 47.0), 26: (18.0, 20.0, 40.0, 44.0)}
        expected = _one_shot(StandInModel(), volume, boxes)
        np.testing.assert_array_equal(result.mask, expected.mask)
        assert result.slice_range == (10, 26) and result.boxes == expected.boxes


def test_work_ahead_leaves_the_result_nothing_to_encode_and_its_preview_is_the_result():
    """Counted reading every slice (test_alternate covers the work ahead of an alternate run)."""
    model = SlowStandIn(0.0)
    every_slice = dataclasses.replace(SETTINGS, slices="every")
    with SegmentationSession.open(model, _volume(), 0, every_slice, cache=EmbeddingCache(), batch_size=4) as session:
        session.add_box(10, BOX)
        session.add_box(15, BOX)
        assert session.wait_until_idle(WAIT_S)
        preview = session.preview()
        assert preview is not None and preview.slice_range == (10, 15)
        assert session.stats.speculated == 5  # slices 16-20: the user's spacing past the newest box
        session.add_box(20, BOX)  # lands on slices encoded on speculation
        assert session.wait_until_idle(WAIT_S)
        encoded = model.encoded
        result = session.result()
        assert model.encoded == encoded and result.encoded == 0
        np.testing.assert_array_equal(result.mask, session.preview().mask)
        assert session.stats.encoded_in_results == 0
        assert session.stats.wasted == 5  # 21-25, guessed past the last box, never needed


def test_cancelled_speculation_never_leaves_a_wrong_embedding():
    """Events arrive every few milliseconds while batches are encoded; every cached embedding is still exactly
    the encoding of its view's pixels."""
    model = SlowStandIn(0.01)
    cache = EmbeddingCache()
    volume = _volume()
    with SegmentationSession.open(model, volume, 0, SETTINGS, cache=cache, batch_size=3) as session:
        for step, s in enumerate(range(5, 35, 3)):
            session.add_box(s, BOX)
            if step % 3 == 2:
                session.remove_box(s - 3)
            time.sleep(0.015)
        session.result()
        encoder = session.segmenter.encoder
        checked = 0
        for (index, region), key in list(encoder._keys.items()):
            if cache.contains(key):
                expected = StandInModel().encode([encoder.image(index, region)]).numpy()[0]
                np.testing.assert_array_equal(cache.get(key), expected)
                checked += 1
        assert checked >= 10


def test_a_settings_change_stops_the_work_for_the_old_settings():
    model = SlowStandIn(0.05)
    with SegmentationSession.open(model, _volume(), 0, SETTINGS, cache=EmbeddingCache(), batch_size=1) as session:
        session.add_box(0, BOX)
        session.add_box(30, BOX)  # 31 slices to encode: about 1.5 s
        time.sleep(0.2)
        session.update_settings(SegmentationSettings(modality="none", strategy="propagate"))
        assert session.settings.strategy == "propagate"
        with pytest.raises(ValueError, match="modality change the voxels"):
            session.update_settings(SegmentationSettings(modality="CT"))
        assert session.wait_until_idle(WAIT_S)
        expected = _one_shot(StandInModel(), _volume(), {0: BOX, 30: BOX},
                             SegmentationSettings(modality="none", strategy="propagate"))
        np.testing.assert_array_equal(session.result().mask, expected.mask)


def test_closing_stops_the_worker_at_once():
    model = SlowStandIn(0.05)
    session = SegmentationSession.open(model, _volume(), 0, SETTINGS, cache=EmbeddingCache(), batch_size=1)
    session.add_box(0, BOX)
    session.add_box(39, BOX)
    time.sleep(0.2)
    started = time.monotonic()
    session.close()
    assert time.monotonic() - started < 1.0
    encoded = model.encoded
    time.sleep(0.2)
    assert model.encoded == encoded < 40
    assert not any(t.name == "medsam-session" and t.is_alive() for t in threading.enumerate())


def test_bad_events_are_refused_with_one_line():
    with SegmentationSession.open(StandInModel(), _volume(), 0, SETTINGS, background=False) as session:
        with pytest.raises(GeometryError, match="no key boxes yet"):
            session.result()
        session.add_box(5, BOX)
        with pytest.raises(GeometryError, match="slice 5 has a key box already"):
            session.add_box(5, BOX)
        with pytest.raises(GeometryError, match="slice 6 has no key box"):
            session.move_box(6, BOX)
        with pytest.raises(GeometryError, match="slices 0-39"):
            session.add_box(40, BOX)
        with pytest.raises(GeometryError, match="four numbers"):
            session.add_box(7, (1.0, 2.0))
        with pytest.raises(GeometryError, match="axis 1"):
            session.set_boxes(KeyBoxSet(1, [KeyBox(5, BOX)]))
        assert [k.slice_index for k in session.key_boxes.boxes] == [5]


def test_without_a_thread_the_owner_does_the_work_ahead():
    model = StandInModel()
    with SegmentationSession.open(model, _volume(), 0, SETTINGS, background=False, preview=False) as session:
        session.set_boxes(KeyBoxSet(0, [KeyBox(10, BOX), KeyBox(14, BOX)]), newest=14)
        assert model.encoded == 0
        assert session.work_ahead() == 5 + 4  # 10-14, then the spacing (4) past 14
        assert session.preview() is None and session.is_idle() is False
        assert session.result().encoded == 0 and session.is_idle()


@pytest.mark.slow
def test_real_litemedsam_session_on_the_demo_matches_the_command_line(lite_model):
    """The demo's key boxes placed one by one (one moved, one removed and put back) with the defaults, preview
    on: the session's result is the one-shot run's mask exactly."""
    image = io.read_image(demo.DEMO_IMAGE)
    key_boxes = io.read_key_boxes([demo.DEMO_BOXES], image)
    settings = SegmentationSettings(modality="none")
    first, *rest = key_boxes.sorted()
    with SegmentationSession.open(lite_model, image.array, 0, settings, cache=EmbeddingCache()) as session:
        session.add_box(first.slice_index, (0.0, 0.0, 20.0, 20.0))
        session.move_box(first.slice_index, first.box)
        for key in rest:
            session.add_box(key.slice_index, key.box)
        session.remove_box(rest[-1].slice_index)
        session.add_box(rest[-1].slice_index, rest[-1].box)
        assert session.wait_until_idle(WAIT_S * 5)
        result = session.result()
    fresh = run_segmentation(lite_model, image.array, key_boxes, settings, cache=EmbeddingCache())
    np.testing.assert_array_equal(result.mask, fresh.mask)
    assert result.encoded == 0 and session.stats.previews >= 1


def test_a_session_in_a_small_memory_bound_reads_spilled_embeddings_back_instead_of_encoding_again():
    """The editing cache's memory holds a few views; the rest spill to a temporary folder, and a box moved back
    to where it was, after every view was encoded, encodes nothing."""
    model = StandInModel("bright")
    cache = EmbeddingCache(max_memory_bytes=3 * 64 * 64 * 4, spill=True)  # three of the stand-in's 64x64 views
    volume = _volume()
    boxes = {2: BOX, 12: BOX, 24: BOX}
    with SegmentationSession.open(model, volume, 0, SETTINGS, cache=cache, batch_size=2, background=False) as session:
        session.set_boxes(KeyBoxSet(0, [KeyBox(s, b) for s, b in sorted(boxes.items())]))
        first = session.result()
        encoded = model.encoded
        session.move_box(12, (17.0, 19.0, 41.0, 45.0))
        session.result()
        session.move_box(12, BOX)
        again = session.result()
    assert model.encoded == encoded  # every view came back from memory or the spill folder
    np.testing.assert_array_equal(again.mask, first.mask)
    np.testing.assert_array_equal(first.mask, _one_shot(StandInModel("bright"), volume, boxes).mask)
    assert cache._spill_folder is not None and len(os.listdir(cache._spill_folder.name)) >= 10
