"""``slices="alternate"``: which slices are skipped, the halfway masks, and runs that read every second slice."""

import numpy as np
import pytest
from MedSAMSegmentLib.engine import EmbeddingCache
from MedSAMSegmentLib.engine.alternate import (
    MIN_TARGET_SLICES,
    halfway_mask,
    reads_ahead,
    signed_distance,
    skipped_slices,
)
from MedSAMSegmentLib.engine.lookahead import views_ahead
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.session import run_segmentation
from MedSAMSegmentLib.settings import SegmentationSettings, SettingsError
from stand_in_model import StandInModel

EVERY = SegmentationSettings(modality="none", zoom="off", guide="off", slices="every")
ALTERNATE = SegmentationSettings(modality="none", zoom="off", guide="off", slices="alternate")


def disc(radius: float, centre=(32, 30), shape=(64, 64)) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_skipped_slices_are_every_second_non_key_slice_of_long_targets_only():
    keys = [10, 15, 20, 25]
    skipped = skipped_slices(keys, ALTERNATE)
    assert skipped == {11, 13, 17, 19, 21, 23}  # 15 and 25 are key slices: read although odd
    assert all(s - 1 not in skipped and s + 1 not in skipped for s in skipped)
    assert skipped_slices(keys, EVERY) == set()
    short = [10, 10 + MIN_TARGET_SLICES - 2]
    assert skipped_slices(short, ALTERNATE) == set()
    assert skipped_slices([10, 10 + MIN_TARGET_SLICES - 1], ALTERNATE)


def test_auto_reads_alternate_slices_when_interpolating_and_every_slice_when_propagating():
    assert SegmentationSettings().slices == "every"  # the published default: every slice is read
    auto = SegmentationSettings(slices="auto")
    assert auto.reads_alternate
    assert skipped_slices([10, 30], auto) == skipped_slices([10, 30], ALTERNATE) != set()
    propagating = SegmentationSettings(strategy="propagate", slices="auto")  # no refusal: every slice there
    assert not propagating.reads_alternate and skipped_slices([10, 30], propagating) == set()
    assert auto.with_strategy("propagate") == propagating
    assert not EVERY.reads_alternate and ALTERNATE.reads_alternate


def test_alternate_needs_interpolate():
    with pytest.raises(SettingsError, match="--slices alternate works with --strategy interpolate"):
        SegmentationSettings(strategy="propagate", slices="alternate")
    with pytest.raises(SettingsError, match="--slices"):
        SegmentationSettings(slices="half")


def test_halfway_between_two_discs_is_the_disc_of_the_mean_radius():
    below, above = disc(8), disc(14)
    np.testing.assert_array_equal(halfway_mask(below, below), below)
    halfway = halfway_mask(below, above)
    assert (halfway & ~above).sum() == 0 and (below & ~halfway).sum() == 0
    expected = disc(11)
    assert abs(int(halfway.sum()) - int(expected.sum())) <= 0.05 * expected.sum()
    shifted = halfway_mask(disc(10, (30, 26)), disc(10, (30, 34)))  # a target moving sideways: halfway between
    assert abs(np.argwhere(shifted).mean(axis=0)[1] - 30) < 0.5


def test_halfway_in_the_masks_box_equals_halfway_over_the_whole_slice():
    rng = np.random.default_rng(3)
    below = disc(9, (20, 22)) | (rng.random((64, 64)) > 0.995)
    above = disc(12, (24, 25))
    whole = (signed_distance(below) + signed_distance(above)) < 0
    np.testing.assert_array_equal(halfway_mask(below, above), whole)


def test_no_halfway_guess_where_a_neighbour_is_empty_or_they_do_not_overlap():
    empty = np.zeros((64, 64), dtype=bool)
    assert halfway_mask(disc(8), empty) is None and halfway_mask(empty, disc(8)) is None
    assert halfway_mask(disc(5, (10, 10)), disc(5, (50, 50))) is None


def test_speculation_keeps_only_the_slices_an_alternate_run_would_read():
    keys = [0, 5]
    assert reads_ahead([6, 7, 8, 9, 10], keys, ALTERNATE) == [6, 8, 10]  # 10 is where the next box is expected
    assert reads_ahead([6, 7, 8, 9, 10], keys, EVERY) == [6, 7, 8, 9, 10]
    assert reads_ahead([6, 7], keys, ALTERNATE) == [6, 7]  # a target of 8 slices is read whole


def _block_volume(n_slices: int = 40, gap: int = -1) -> np.ndarray:
    """A bright block whose size grows with the slice (``gap``: a slice with no block), on a noisy background that
    makes every slice's pixels (and so its cache key) its own."""
    volume = np.random.default_rng(5).integers(0, 40, size=(n_slices, 64, 64)).astype(np.uint8)
    for s in range(n_slices):
        half = 6 + s // 4
        volume[s, 32 - half : 32 + half, 30 - half : 30 + half] = 200
    if gap >= 0:
        volume[gap] = np.minimum(volume[gap], 40)
    return volume


def _keys(slices) -> KeyBoxSet:
    return KeyBoxSet(0, [KeyBox(s, (8.0, 8.0, 56.0, 56.0)) for s in slices])


def _run(model, volume, keys, settings, **callbacks):
    return run_segmentation(model, volume, keys, settings, cache=EmbeddingCache(), batch_size=4,
                                     **callbacks)


@pytest.mark.parametrize("guide", ["off", "mask"])
def test_an_alternate_run_reads_every_second_slice_and_fills_the_others_halfway(guide):
    volume = _block_volume()
    keys = _keys([5, 10, 15, 20, 25])
    every_model, alternate_model = StandInModel(), StandInModel()
    every = _run(every_model, volume, keys, SegmentationSettings(modality="none", zoom="off", guide=guide,
                                                                 slices="every"))
    progress, seen = [], []
    alternate = _run(alternate_model, volume, keys, SegmentationSettings(modality="none", zoom="off", guide=guide,
                                                                         slices="alternate"),
                     progress=lambda done, total, message: progress.append((done, total)),
                     on_slice=lambda s, m: seen.append(s))
    skipped = skipped_slices([5, 10, 15, 20, 25], ALTERNATE)
    assert alternate.filled == sorted(skipped) and sorted(alternate.boxes) == list(range(5, 26)) == sorted(seen)
    assert alternate_model.encoded == every_model.encoded - len(skipped)
    assert progress[-1] == (21, 21)
    for s in range(5, 26):
        if s in skipped:
            np.testing.assert_array_equal(alternate.mask[s], halfway_mask(alternate.mask[s - 1], alternate.mask[s + 1]))
            assert alternate.iou[s] == min(alternate.iou[s - 1], alternate.iou[s + 1])
        else:
            np.testing.assert_array_equal(alternate.mask[s], every.mask[s])  # read slices: the model's own masks
    # The block grows steadily: the halfway masks differ from the model's by at most the one-pixel growth steps.
    assert (alternate.mask ^ every.mask).sum() <= 0.05 * every.mask.sum()


def test_a_skipped_slice_next_to_an_empty_mask_is_read_by_the_model():
    volume = _block_volume(gap=13)  # the model finds nothing on slice 13: slices 12 and 14 cannot be filled
    model = StandInModel()
    result = _run(model, volume, _keys([5, 10, 15, 20]), ALTERNATE)
    assert result.filled == [6, 8, 16, 18]
    assert result.mask[12].any() and result.mask[14].any() and not result.mask[13].any()
    np.testing.assert_array_equal(result.mask[12], volume[12] > 127)  # the model's own mask
    assert result.seconds >= 0 and sorted(result.boxes) == list(range(5, 21))


def test_the_work_ahead_skips_the_slices_that_will_be_filled():
    keys = _keys([5, 10, 15, 20])
    planned = {s for s, _ in views_ahead(keys, ALTERNATE, (64, 64), 256, 40)}
    assert planned == set(range(5, 21)) - skipped_slices([5, 10, 15, 20], ALTERNATE)
    assert {s for s, _ in views_ahead(keys, EVERY, (64, 64), 256, 40)} == set(range(5, 21))


def test_a_session_reading_every_second_slice_gives_the_one_shot_mask():
    from MedSAMSegmentLib.session import SegmentationSession

    volume = _block_volume()
    box = (8.0, 8.0, 56.0, 56.0)
    with SegmentationSession.open(StandInModel(), volume, 0, ALTERNATE, cache=EmbeddingCache(),
                                  batch_size=2) as session:
        for s in (5, 10, 15):
            session.add_box(s, box)
        session.move_box(15, box, to_slice=20)
        session.add_box(25, box)
        result = session.result()
    expected = _run(StandInModel(), volume, _keys([5, 10, 20, 25]), ALTERNATE)
    np.testing.assert_array_equal(result.mask, expected.mask)
    assert result.filled == expected.filled == sorted(skipped_slices([5, 10, 20, 25], ALTERNATE))


@pytest.mark.slow
def test_real_litemedsam_reading_every_second_slice_of_a_kidney_keeps_its_accuracy(lite_model, tmp_path, capsys):
    """The right kidney of the TotalSegmentator example CT (19 slices, key boxes every 5 from the reference +3 px):
    the alternate run encodes fewer views and its DSC stays within 0.01 of every slice's; the command line gives
    the same mask and names the filled slices."""
    import json

    from conftest import require_shared_data, shared_data_path
    from medsam_evaluation.cases import find_case, modality_setting
    from medsam_evaluation.simulate import simulate_key_boxes
    from MedSAMSegmentLib import cli, io
    from MedSAMSegmentLib.metrics import dice

    require_shared_data()
    case = find_case(shared_data_path("cases.json"), "totalseg_ct_kidney_right")
    image = io.read_image(case.image)
    reference, _ = io.read_mask(case.label, case.label_values)
    keys = simulate_key_boxes(reference, case.slice_axis, 5, margin=3)
    results = {}
    for slices in ("every", "alternate"):
        settings = SegmentationSettings(modality=modality_setting(case, image.array), slices=slices)
        results[slices] = run_segmentation(lite_model, image.array, keys, settings, cache=EmbeddingCache())
    every, alternate = results["every"], results["alternate"]
    assert alternate.filled and alternate.encoded <= every.encoded - len(alternate.filled)
    assert abs(dice(alternate.mask, reference) - dice(every.mask, reference)) < 0.01  # measured +0.0005
    assert sorted(alternate.boxes) == sorted(every.boxes)

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"slice_axis": case.slice_axis, "boxes": [
        {"slice": k.slice_index, "box": list(k.box)} for k in keys.boxes]}))
    out = tmp_path / "kidney.nii.gz"
    modality = modality_setting(case, image.array)
    assert cli.main(["segment", case.image, "--boxes", str(boxes), "-o", str(out), "--modality", modality,
                     "--slices", "alternate"]) == 0
    filled = " ".join(str(s) for s in alternate.filled)
    assert f"filled between their neighbours (--slices every reads them): {len(alternate.filled)} slices, {filled}" in (
        capsys.readouterr().out)
    np.testing.assert_array_equal(io.read_mask(str(out))[0], alternate.mask)


def test_the_effects_summary_says_how_many_slices_were_filled():
    from MedSAMSegmentLib.scene.effect import RunOutcome

    keys = _keys([5, 10, 15, 20])
    result = _run(StandInModel(), _block_volume(), keys, ALTERNATE)
    summary = RunOutcome(result, keys, "vtkMRMLScalarVolumeNode1", "auto", "CPU").summary()
    assert f" {len(result.filled)} slice(s) filled between their neighbours." in summary
    every = RunOutcome(_run(StandInModel(), _block_volume(), keys, EVERY), keys, "v", "auto", "CPU").summary()
    assert "filled" not in every


def test_one_set_of_options_runs_both_strategies():
    """The evaluation runs ``interpolate`` and ``propagate`` with the user's options: ``alternate`` applies to the
    first and falls back to every slice for the second, instead of refusing the run."""
    assert ALTERNATE.with_strategy("propagate").slices == "every"
    assert ALTERNATE.with_strategy("propagate").strategy == "propagate"
    assert ALTERNATE.with_strategy("interpolate") == ALTERNATE
    assert EVERY.with_strategy("propagate").zoom == EVERY.zoom
