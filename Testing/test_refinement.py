"""Refine from my edits with the real LiteMedSAM on the bundled CT lesion: the expert's slices are never changed,
the adapted decoder is checked on a held-out slice, and the user's model and result are left as they were."""

import numpy as np
import pytest
from medsam_evaluation.corrections import (
    corrections_protocol,
    pooled_dice,
    slice_overlaps,
    untouched_dice,
    worst_slices,
)
from MedSAMSegmentLib import demo, pipeline
from MedSAMSegmentLib import io as image_io
from MedSAMSegmentLib.engine import Cancelled
from MedSAMSegmentLib.geometry import take_slice
from MedSAMSegmentLib.learning.decoder_training import AdaptedModel, head_logits, mask_features, training_views
from MedSAMSegmentLib.learning.refinement import RefinementError, RefineSettings, adapt_decoder, refine_from_corrections
from stand_in_model import StandInModel

FAST = RefineSettings(steps=8, jitters=2, anchors=2)


@pytest.fixture(scope="module")
def demo_run(lite_model, embedding_cache, demo_lesion):
    image, reference = demo_lesion
    keys = demo.demo_key_boxes(image.shape)
    settings = pipeline.SegmentationSettings(modality="none", zoom="size")  # a zoom decided per target
    segmenter = pipeline.make_segmenter(lite_model, image.array, keys.slice_axis, settings, cache=embedding_cache)
    result = segmenter.segment(keys, settings)
    return segmenter, keys, settings, result, reference


def _reference_slices(reference, axis, slices):
    return {i: np.asarray(take_slice(reference, axis, i), dtype=bool) for i in slices}


def test_the_expert_slices_are_written_as_given_and_the_run_is_not_changed(demo_run):
    segmenter, keys, settings, result, reference = demo_run
    original = result.mask.copy()
    weights = {k: v.clone() for k, v in segmenter.model.net.mask_decoder.state_dict().items()}
    corrected = _reference_slices(reference, keys.slice_axis, (6, 9, 10))
    corrected[7] = np.zeros(segmenter.slice_size, dtype=bool)  # an erased slice stays erased
    corrected[7][250:260, 280:300] = True
    refinement = refine_from_corrections(segmenter, keys, settings, result, corrected, FAST)
    for index, mask in corrected.items():
        np.testing.assert_array_equal(take_slice(refinement.result.mask, keys.slice_axis, index), mask)
    assert sorted(refinement.held_out) == refinement.trained_on == [6, 7, 9, 10]  # each held out in turn
    before = np.mean([b for b, _ in refinement.held_out.values()])
    after = np.mean([a for _, a in refinement.held_out.values()])
    assert refinement.kept == (after > before and all(a >= b - 0.01 for b, a in refinement.held_out.values()))
    assert refinement.message and "\n" not in refinement.message
    if not refinement.kept:  # the untouched slices are the run's
        untouched = [i for i in range(result.mask.shape[0]) if i not in corrected]
        np.testing.assert_array_equal(refinement.result.mask[untouched], original[untouched])
    np.testing.assert_array_equal(result.mask, original)  # the run handed in is left as it was
    for name, value in segmenter.model.net.mask_decoder.state_dict().items():  # the model's decoder too
        assert np.array_equal(value.numpy(), weights[name].numpy()), name


def test_the_adapted_stage_reproduces_the_decoder_before_training(demo_run, lite_model):
    """The decoder split at its last stage (features computed once, the hypernetwork trained) gives the published
    decoder's logits when the hypernetwork is the original one."""
    import torch
    from MedSAMSegmentLib.models import box_prompt_decode

    segmenter, keys, settings, result, reference = demo_run
    embeddings = torch.from_numpy(np.stack([segmenter.embedding(i) for i in (6, 8)]))
    boxes = lite_model.model_boxes(np.array([result.boxes[6], result.boxes[8]]), segmenter.slice_size)
    with torch.no_grad():
        published, _ = box_prompt_decode(lite_model.net, embeddings, boxes)
        tokens, features = mask_features(lite_model, embeddings, boxes)
        split = head_logits(lite_model.net.mask_decoder.output_hypernetworks_mlps[0], tokens, features)
    assert float((published - split).abs().max()) < 1e-3


def test_an_adapted_decoder_learns_the_corrected_slices_and_reuses_the_cached_embeddings(demo_run):
    """Trained on one corrected slice, the loss goes down and the adapted decoder reproduces that slice better than
    the original decoder does, with no slice encoded again."""
    from MedSAMSegmentLib.engine import VolumeSegmenter
    from MedSAMSegmentLib.engine.views import resolve_zoom

    segmenter, keys, settings, result, reference = demo_run
    settings = resolve_zoom(settings, keys, segmenter.slice_size)  # as the run decided: the lesion is small
    assert settings.zoom == "union"
    target = np.zeros(segmenter.slice_size, dtype=bool)  # the expert erases the lower half of the lesion
    target[: int(np.mean(result.boxes[8][1::2]))] = True
    target &= np.asarray(result.mask[8], dtype=bool)
    corrected = {8: target}
    views = training_views(segmenter, result.boxes, corrected, settings.zoom)
    losses = []
    decoder = adapt_decoder(segmenter.model, views, RefineSettings(steps=30, learning_rate=1e-3, anchors=0),
                            progress=lambda done, total, message: losses.append(float(message.split()[-1][:-1])))
    assert len(losses) == 30 and losses[-1] < 0.8 * losses[0]
    adapted = VolumeSegmenter(AdaptedModel(segmenter.model, decoder, "1 corrected slice"), segmenter.volume,
                              keys.slice_axis, cache=segmenter.cache)
    box = {8: result.boxes[8]}
    before = segmenter.decoder.decode(box, zoom=settings.zoom, retry=settings.retry).masks[8][0]
    after = adapted.decoder.decode(box, zoom=settings.zoom, retry=settings.retry).masks[8][0]
    assert _dice(after, target) > _dice(before, target) + 0.05
    assert adapted.encoded_views == 0


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_too_few_or_misshapen_corrections_get_one_line(demo_run):
    segmenter, keys, settings, result, reference = demo_run
    one = _reference_slices(reference, keys.slice_axis, (8,))
    with pytest.raises(RefinementError, match="correct at least 2 slices") as caught:
        refine_from_corrections(segmenter, keys, settings, result, one, FAST)
    assert "\n" not in str(caught.value)
    outside = {**one, 0: np.zeros(segmenter.slice_size, dtype=bool)}  # slice 0 lies before the first key box
    with pytest.raises(RefinementError, match="1 corrected slice"):
        refine_from_corrections(segmenter, keys, settings, result, outside, FAST)
    with pytest.raises(RefinementError, match="shape"):
        refine_from_corrections(segmenter, keys, settings, result, {6: np.zeros((3, 3), bool), 8: one[8]}, FAST)
    for bad in ({"steps": 0}, {"learning_rate": 0.0}, {"anchors": -1}, {"confident_iou": 1.5}, {"agreement": -0.1}):
        with pytest.raises(RefinementError, match="refine settings"):
            RefineSettings(**bad)


def test_a_model_without_a_trainable_decoder_is_refused():
    with pytest.raises(RefinementError, match="LiteMedSAM"):
        adapt_decoder(StandInModel(), [], FAST)


def test_cancel_stops_the_refinement_and_changes_nothing(demo_run):
    segmenter, keys, settings, result, reference = demo_run
    original = result.mask.copy()
    corrected = _reference_slices(reference, keys.slice_axis, (6, 10))
    with pytest.raises(Cancelled):
        refine_from_corrections(segmenter, keys, settings, result, corrected, FAST, cancel=lambda: True)
    np.testing.assert_array_equal(result.mask, original)


def test_the_corrections_protocol_scores_only_the_untouched_slices(demo_run):
    segmenter, keys, settings, result, reference = demo_run
    axis = keys.slice_axis
    worst = worst_slices(result.mask, reference, axis, result.slice_range, 2)
    first, last = result.slice_range
    scores = {i: _dice(take_slice(result.mask, axis, i), take_slice(reference, axis, i)) for i in range(first, last + 1)
              if take_slice(result.mask, axis, i).any() or take_slice(reference, axis, i).any()}
    assert len(worst) == 2 and set(worst) <= set(scores)
    assert max(scores[i] for i in worst) <= min(score for i, score in scores.items() if i not in worst)
    # Replacing the touched slices by the reference does not change the untouched score.
    fixed = result.mask.copy()
    fixed[worst] = reference[worst].astype(bool)
    assert untouched_dice(fixed, reference, axis, worst) == untouched_dice(result.mask, reference, axis, worst)
    rows = corrections_protocol(segmenter, keys, settings, result, reference, ks=(1, 2), refine=FAST)
    assert [row["k"] for row in rows] == [1, 2]
    assert rows[0]["after"] == rows[0]["before"] and not rows[0]["kept"]  # one slice: nothing is refined
    assert rows[1]["corrected"] == worst and 0.0 <= rows[1]["after"] <= 1.0
    if not rows[1]["kept"]:
        assert rows[1]["after"] == rows[1]["before"]
    # The per-slice counts give back both scores, and any choice of refined slices between them.
    overlaps, segmented = rows[1]["overlaps"], sorted(result.boxes)
    assert worst[0] not in overlaps and rows[1]["keys"] == [key.slice_index for key in keys.sorted()]
    assert pooled_dice(overlaps, []) == pytest.approx(rows[1]["before"])
    assert pooled_dice(overlaps, segmented) == pytest.approx(rows[1]["after"])


def test_pooled_dice_is_the_untouched_dice_of_any_mix_of_refined_and_run_slices():
    rng = np.random.default_rng(0)
    reference, before, after = (rng.random((6, 8, 8)) < share for share in (0.3, 0.35, 0.25))
    after[0] = before[0]  # a slice outside the run's range: the refinement leaves it
    touched = [2]
    overlaps = slice_overlaps(before, after, reference, 0, touched)
    assert sorted(overlaps) == [0, 1, 3, 4, 5]
    for refined in ([], [1], [3, 5], [0, 1, 3, 4, 5]):
        mixed = before.copy()
        mixed[refined] = after[refined]
        assert pooled_dice(overlaps, refined) == pytest.approx(untouched_dice(mixed, reference, 0, touched))
    assert pooled_dice({1: [0, 0, 0, 0, 0]}, [1]) == 1.0


def test_the_python_api_refines_after_predict(lite_model, embedding_cache):
    from MedSAMSegmentLib import RefinementError as ExportedError
    from MedSAMSegmentLib import RefineSettings as ExportedSettings
    from MedSAMSegmentLib import VolumePredictor

    assert ExportedError is RefinementError and ExportedSettings is RefineSettings
    image = image_io.read_image(demo.DEMO_IMAGE)
    reference, _ = image_io.read_mask(demo.DEMO_IMAGE)
    keys = demo.demo_key_boxes(image.shape)
    predictor = VolumePredictor(lite_model, image.array, keys.slice_axis,
                                pipeline.SegmentationSettings(modality="none"), cache=embedding_cache)
    corrected = _reference_slices(reference, keys.slice_axis, (7, 9))
    with pytest.raises(RefinementError, match="call predict"):
        predictor.refine(corrected, FAST)
    result = predictor.predict(keys)
    refinement = predictor.refine(corrected, FAST)
    assert sorted(refinement.held_out) == [7, 9]
    for index, mask in corrected.items():
        np.testing.assert_array_equal(refinement.result.mask[index], mask)
    assert refinement.result.slice_range == result.slice_range


def test_anchor_slices_are_spread_over_the_untouched_ones():
    from MedSAMSegmentLib.learning.decoder_training import spread

    assert spread([3, 4, 5, 6, 7, 8, 9], 3) == [3, 6, 9]
    assert spread([3, 4], 6) == [3, 4]
    assert spread([3, 4], 0) == [] and spread([], 4) == []


def test_the_service_refines_the_kept_run_as_the_engine_does(lite_model, embedding_cache):
    """SegmentationService.refine (what the worker runs for the effect's Refine from my edits) gives the engine's
    refinement of the same run, and its account for the user."""
    from MedSAMSegmentLib.service import ModelSpec, SegmentationService

    image = image_io.read_image(demo.DEMO_IMAGE)
    reference, _ = image_io.read_mask(demo.DEMO_IMAGE)
    keys = demo.demo_key_boxes(image.shape)
    settings = pipeline.SegmentationSettings(modality="none", zoom="size")  # a zoom decided per target
    service = SegmentationService(model_loader=lambda *unused: lite_model, cache=embedding_cache)
    service.put_volume("demo", image.array)
    corrected = _reference_slices(reference, keys.slice_axis, (7, 9))
    with pytest.raises(RefinementError, match="correct at least 2 slices"):
        service.refine("demo", image.ijk_to_ras(), keys, ModelSpec(), settings, {7: corrected[7]})
    served = service.refine("demo", image.ijk_to_ras(), keys, ModelSpec(), settings, corrected, refine=FAST)

    segmenter = pipeline.make_segmenter(lite_model, image.array, keys.slice_axis, settings, cache=embedding_cache)
    expected = refine_from_corrections(segmenter, keys, settings, segmenter.segment(keys, settings), corrected,
                                       FAST)
    np.testing.assert_array_equal(served.result.mask, expected.result.mask)
    assert served.refined == expected.kept and served.note == expected.message
    assert served.intensity and served.device


@pytest.mark.slow
def test_free_first_keeps_the_free_adaptation_unless_the_confident_slices_disagree(demo_run):
    """The rule is exactly its two building blocks: the free adaptation when it holds out and the run's confident
    slices agree with it, else the anchored one (what benchmarks/corrections_study.py scores from their records)."""
    import dataclasses

    from MedSAMSegmentLib.learning.refinement import confident_agreement

    segmenter, keys, settings, result, reference = demo_run
    from scipy import ndimage

    QUICK = RefineSettings(steps=20, learning_rate=1e-3, jitters=2, anchors=2, interior_free=False, anchored_near=False)
    # An expert who draws every slice 3 pixels wider than the run: one slice teaches the other, so the free
    # adaptation holds out.
    corrected = {i: ndimage.binary_dilation(take_slice(result.mask, keys.slice_axis, i), iterations=3)
                 for i in (6, 9)}
    free = refine_from_corrections(segmenter, keys, settings, result, corrected,
                                   dataclasses.replace(QUICK, anchors=0))
    anchored = refine_from_corrections(segmenter, keys, settings, result, corrected, QUICK)
    assert free.kept and free.anchors == 0 and free.agreement is None
    untouched = [i for i in sorted(result.boxes) if i not in corrected]
    agreement = confident_agreement(free.result, result, untouched, 0.0)
    assert 0.0 < agreement < 1.0

    agreeing = refine_from_corrections(segmenter, keys, settings, result, corrected,
                                       dataclasses.replace(QUICK, free_first=True, confident_iou=0.0,
                                                           agreement=agreement))
    np.testing.assert_array_equal(agreeing.result.mask, free.result.mask)
    assert agreeing.anchors == 0 and agreeing.agreement == pytest.approx(agreement)
    assert "and 2 of the run's own slices" not in agreeing.message

    disagreeing = refine_from_corrections(segmenter, keys, settings, result, corrected,
                                          dataclasses.replace(QUICK, free_first=True, confident_iou=0.0,
                                                              agreement=min(1.0, agreement + 1e-6)))
    np.testing.assert_array_equal(disagreeing.result.mask, anchored.result.mask)
    assert disagreeing.kept == anchored.kept and disagreeing.held_out == anchored.held_out
    assert disagreeing.anchors == (2 if anchored.kept else None)

    nobody_confident = refine_from_corrections(segmenter, keys, settings, result, corrected,
                                               dataclasses.replace(QUICK, free_first=True, confident_iou=1.0,
                                                                   agreement=1.0))
    np.testing.assert_array_equal(nobody_confident.result.mask, free.result.mask)  # no confident slice: no veto


def test_the_slices_near_corrections_lie_between_the_key_slices_around_them():
    from MedSAMSegmentLib.learning.refinement import slices_near

    assert slices_near([7], [0, 5, 10]) == set(range(5, 11))
    assert slices_near([5], [0, 5, 10]) == set(range(0, 11))  # on a key slice: both intervals
    assert slices_near([1, 12], [0, 5, 10]) == set(range(0, 6)) | {10, 11, 12}  # past the last key slice
    assert slices_near([], [0, 5]) == set()


def test_corrections_inside_the_target_keep_a_share_and_two_slices_from_both_ends():
    from MedSAMSegmentLib.learning.refinement import corrections_inside

    assert corrections_inside([7, 9], (5, 11))  # 2 slices from the ends of a short range
    assert not corrections_inside([6, 9], (5, 11))  # one next to the first key box
    assert not corrections_inside([9, 10], (5, 11))
    assert corrections_inside([20, 80], (0, 100)) and not corrections_inside([19, 80], (0, 100))  # a fifth
    assert not corrections_inside([20, 81], (0, 100))
    assert not corrections_inside([], (0, 100))


@pytest.mark.slow
def test_interior_free_adapts_freely_to_corrections_inside_the_target_and_with_anchors_otherwise(demo_run):
    """``interior_free`` is the free adaptation for corrections inside the key boxes' range (when it holds out),
    and the anchored one for corrections next to an end, or when the free one does not hold out."""
    import dataclasses

    from scipy import ndimage

    segmenter, keys, settings, result, reference = demo_run
    assert result.slice_range == (5, 11)
    QUICK = RefineSettings(steps=20, learning_rate=1e-3, jitters=2, anchors=2, interior_free=False, anchored_near=False)
    ruled = dataclasses.replace(QUICK, interior_free=True)

    def wider(slices):  # an expert who draws each slice 3 pixels wider than the run: one slice teaches the other
        return {i: ndimage.binary_dilation(take_slice(result.mask, keys.slice_axis, i), iterations=3) for i in slices}

    inside = wider((7, 9))
    free = refine_from_corrections(segmenter, keys, settings, result, inside, dataclasses.replace(QUICK, anchors=0))
    assert free.kept
    chosen = refine_from_corrections(segmenter, keys, settings, result, inside, ruled)
    np.testing.assert_array_equal(chosen.result.mask, free.result.mask)
    assert chosen.anchors == 0

    at_an_end = wider((6, 9))
    anchored = refine_from_corrections(segmenter, keys, settings, result, at_an_end, QUICK)
    chosen = refine_from_corrections(segmenter, keys, settings, result, at_an_end, ruled)
    np.testing.assert_array_equal(chosen.result.mask, anchored.result.mask)
    assert chosen.anchors == anchored.anchors and chosen.held_out == anchored.held_out

    # Two corrections that contradict each other (one slice drawn wider, the other emptied): the free adaptation
    # cannot hold out, so the rule falls back to the anchored one.
    contradicting = {7: wider((7,))[7], 9: np.zeros(segmenter.slice_size, dtype=bool)}
    free = refine_from_corrections(segmenter, keys, settings, result, contradicting,
                                   dataclasses.replace(QUICK, anchors=0))
    assert not free.kept
    anchored = refine_from_corrections(segmenter, keys, settings, result, contradicting, QUICK)
    chosen = refine_from_corrections(segmenter, keys, settings, result, contradicting, ruled)
    np.testing.assert_array_equal(chosen.result.mask, anchored.result.mask)
    assert chosen.kept == anchored.kept


def _corrections_study():
    import importlib.util
    import os

    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "corrections_study.py")
    spec = importlib.util.spec_from_file_location("corrections_study", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_scores_interior_free_from_the_free_and_anchored_records():
    """The rule by where the corrections lie, scored from the two adaptations' records (free when it held out and
    the corrections lie inside the run's range, else anchored), and judged by the defaults rule in the report."""
    study = _corrections_study()

    def records(case, corrected, free_after, anchored_after, free_kept=True):
        untouched = {str(i): 0.9 for i in range(0, 21) if i not in corrected}
        common = {"case": case, "group": case.split("_")[0], "k": 2, "corrected": corrected, "before": 0.5,
                  "iou": untouched, "agreement": dict.fromkeys(untouched, 1.0), "seconds": 1.0}
        return [{**common, "adaptation": "free", "after": free_after if free_kept else 0.5, "kept": free_kept},
                {**common, "adaptation": "anchored", "after": anchored_after, "kept": True}]

    rows = (records("cord_a", [6, 12], 0.8, 0.6) + records("cord_b", [5, 15], 0.7, 0.6)
            + records("brats_a", [0, 20], 0.2, 0.55) + records("brats_b", [1, 10], 0.3, 0.52)
            + records("hippocampus_a", [8, 12], 0.9, 0.6, free_kept=False)
            + records("hippocampus_b", [9, 11], 0.75, 0.6))
    pairs = {}
    for row in rows:
        pairs.setdefault(row["case"], {})[row["adaptation"]] = row
    inside = study.candidates(pairs)[study.INSIDE]
    assert inside == {"cord_a": 0.8, "cord_b": 0.7, "brats_a": 0.55, "brats_b": 0.52, "hippocampus_a": 0.6,
                      "hippocampus_b": 0.75}
    report = study.report(rows)
    assert f"- {study.INSIDE} (`interior_free`): chosen in 3 of 3 leave-one-group-out folds" in report
    assert report.rstrip().endswith("passes") and study.NEAR not in report  # no voxel counts: not scored

    # With the voxel counts: the anchored masks near the corrections only (key slices 0, 5, ..., 20).
    anchored = {"corrected": [1, 10], "keys": [0, 5, 10, 15, 20], "kept": True, "after": 0.0,
                "overlaps": {str(i): [5, 10, 10 if i < 8 else 0, 10, 10] for i in range(21) if i not in (1, 10)}}
    # Slices 0 .. 15 take the refined masks ([0, 5] around slice 1, [5, 15] around the key slice 10): 7 of them
    # gain (10 voxels inside), 7 lose (0 inside); 16 .. 20 keep the run's (5 inside); 190 voxels of masks and of
    # reference over the 19 untouched slices.
    assert study.near_after(anchored) == pytest.approx(2 * (7 * 10 + 7 * 0 + 5 * 5) / (190 + 190))


@pytest.mark.slow
def test_anchored_near_changes_only_the_slices_between_the_key_boxes_around_the_corrections(demo_run):
    import dataclasses

    from scipy import ndimage

    segmenter, keys, settings, result, reference = demo_run
    QUICK = RefineSettings(steps=20, learning_rate=1e-3, jitters=2, anchors=2, interior_free=False, anchored_near=False)
    corrected = {i: ndimage.binary_dilation(take_slice(result.mask, keys.slice_axis, i), iterations=3)
                 for i in (6, 7)}  # between the key boxes on slices 5 and 8
    anchored = refine_from_corrections(segmenter, keys, settings, result, corrected, QUICK)
    near = refine_from_corrections(segmenter, keys, settings, result, corrected,
                                   dataclasses.replace(QUICK, anchored_near=True))
    assert anchored.kept and near.kept and near.anchors == 2
    for i in (5, 6, 7, 8):  # near: the anchored decoder's masks, and the expert's slices
        np.testing.assert_array_equal(near.result.mask[i], anchored.result.mask[i])
    for i in (9, 10, 11):  # elsewhere: the run's
        np.testing.assert_array_equal(near.result.mask[i], result.mask[i])
    assert sorted(near.result.recomputed) == [5, 8]
    # The defaults: corrections next to an end of the target get the anchored adaptation, near them only.
    default = refine_from_corrections(segmenter, keys, settings, result, corrected,
                                      RefineSettings(steps=20, learning_rate=1e-3, jitters=2, anchors=2))
    np.testing.assert_array_equal(default.result.mask, near.result.mask)
