"""Every 3D development case with the real LiteMedSAM: key boxes every 5 slices from the reference mask (+3 px).

The floors sit a little under what was measured (see FLOORS), so a regression in any step of the pipeline fails
here. A box on every slice must score what the published per-slice recipe scores on the same boxes (checked on
PARITY_CASES, where the two could part).
"""

import json

import numpy as np
import pytest
from conftest import SHARED_DATA, require_shared_data, shared_data_path
from medsam_evaluation.simulate import every_slice_boxes, simulate_key_boxes
from MedSAMSegmentLib import io, pipeline
from MedSAMSegmentLib.metrics import dice

# DSC with key boxes every 5 slices (+3 px): 0.02 under what the defaults (reading alternate slices) measure, in
# `medsam-segment evaluate` (docs/results/results.csv, 2026-12-01; this test's runs gave the same), so a regression
# in any step of the default pipeline fails here; the defaults' every-5 DSC when they read every slice (this test,
# 2026-11-30) and the published pipeline's are noted for reference.
FLOORS = {
    "ct_lesion_000001_02_01_008-023": 0.90,  # defaults 0.928, every slice read 0.928, published 0.894
    "ct_lesion_000002_03_01_035-047": 0.75,  # defaults 0.772, every slice read 0.772, published 0.427
    "ct_lesion_000009_03_01_036-048": 0.87,  # defaults 0.898, every slice read 0.898, published 0.787
    "ct_lesion_000010_01_01_078-090": 0.88,  # defaults 0.907, every slice read 0.900, published 0.692
    "ct_lesion_000015_01_01_081-093": 0.82,  # defaults 0.847, every slice read 0.847, published 0.822
    "ct_lesion_000015_01_01_103-115": 0.84,  # defaults 0.867, every slice read 0.865, published 0.783
    "brats_pat0001_whole_tumor": 0.85,  # defaults 0.871, every slice read 0.869, published 0.790
    "brats_pat0001_tumor_core": 0.88,  # defaults 0.919, every slice read 0.904, published 0.746
    "brats_pat0002_whole_tumor": 0.88,  # defaults 0.911, every slice read 0.907, published 0.880
    "brats_pat0002_tumor_core": 0.70,  # defaults 0.723, every slice read 0.694, published 0.596
    "brats_pat0003_whole_tumor": 0.88,  # defaults 0.903, every slice read 0.903, published 0.851
    "brats_pat0003_tumor_core": 0.86,  # defaults 0.893, every slice read 0.876, published 0.832
    "brats_pat0004_whole_tumor": 0.88,  # defaults 0.902, every slice read 0.899, published 0.806
    "brats_pat0004_tumor_core": 0.88,  # defaults 0.905, every slice read 0.896, published 0.715
    "brats_pat0005_whole_tumor": 0.83,  # defaults 0.861, every slice read 0.858, published 0.609
    "brats_pat0005_tumor_core": 0.79,  # defaults 0.816, every slice read 0.808, published 0.698
    "brats_pat0006_whole_tumor": 0.83,  # defaults 0.851, every slice read 0.846, published 0.884
    "brats_pat0006_tumor_core": 0.83,  # defaults 0.857, every slice read 0.853, published 0.769
    "cord_t1": 0.86,  # defaults 0.886, every slice read 0.882, published 0.882
    "cord_t2": 0.88,  # defaults 0.900, every slice read 0.889, published 0.889
    "cord_gm_t2s": 0.29,  # defaults 0.311, every slice read 0.284, published 0.394
    "totalseg_ct_liver": 0.92,  # defaults 0.941, every slice read 0.938, published 0.938
    "totalseg_ct_spleen": 0.93,  # defaults 0.958, every slice read 0.959, published 0.961
    "totalseg_ct_kidney_right": 0.86,  # defaults 0.894, every slice read 0.886, published 0.897
    "totalseg_ct_kidney_left": 0.88,  # defaults 0.922, every slice read 0.902, published 0.933
}


#: The cases whose box-on-every-slice run is checked against the published per-slice recipe (a small CT lesion and
#: the cord's grey matter, where the two could part); the sweep runs every slice only for these.
PARITY_CASES = ("ct_lesion_000002_03_01_035-047", "cord_gm_t2s")

pytestmark = pytest.mark.needs_time(1800, "the first test of this module runs the sweep: 25 cases with the real model")


def load_case(case):
    image = io.read_image(shared_data_path(case["image"]))
    reference, _ = io.read_mask(shared_data_path(case["label"]), case["label_values"])
    return image, reference


def case_settings(case, image):
    # The modality a user would pick, as the evaluation picks it: 8-bit CT (.npz) is already windowed.
    modality = "none" if case["modality"] == "CT" and image.array.dtype == np.uint8 else case["modality"]
    return pipeline.SegmentationSettings(modality=modality)


def all_cases():
    require_shared_data()
    with open(shared_data_path("cases.json"), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def measured(lite_model, embedding_cache):
    """Segment every case once with key boxes every 5 slices, and the parity cases also with a box on every slice
    (published decoding); keep the DSCs (None where a case was not run on every slice)."""
    scores = {}
    cases = all_cases()
    for index, case in enumerate(cases):
        image, reference = load_case(case)
        settings = case_settings(case, image)
        segmenter = pipeline.make_segmenter(lite_model, image.array, case["slice_axis"], settings,
                                            cache=embedding_cache)
        # Our method: the defaults a user gets (SegmentationSettings' accuracy options).
        every5 = segmenter.segment(simulate_key_boxes(reference, case["slice_axis"], 5), settings)
        every1 = None
        if case["name"] in PARITY_CASES:  # the published decoding (no accuracy options) on every slice
            published = pipeline.SegmentationSettings(**pipeline.PUBLISHED)
            boxes = every_slice_boxes(reference, case["slice_axis"])
            every1 = dice(segmenter.segment(boxes, published).mask, reference)
        scores[case["name"]] = (dice(every5.mask, reference), every1)
        if index + 1 == len(cases) or cases[index + 1]["image"] != case["image"]:
            segmenter.cache.clear_memory()  # the next case is another image (the organs of one CT share theirs)
    print("\ncase: DSC every 5 / every slice (parity cases)")
    for name, (five, one) in scores.items():
        print(f"{name}: {five:.3f}" + ("" if one is None else f" / {one:.3f}"))
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_every_five_slices_stays_above_floor(measured, name):
    assert name in measured, f"case {name} is missing from {SHARED_DATA}/cases.json"
    assert measured[name][0] >= FLOORS[name]


@pytest.mark.slow
def test_every_case_has_a_floor(measured):
    assert set(measured) == set(FLOORS)


@pytest.mark.slow
@pytest.mark.parametrize("name", PARITY_CASES)
def test_box_on_every_slice_matches_the_published_recipe(lite_model, measured, name):
    from medsam_evaluation.baselines import PublishedRecipe

    case = next(c for c in all_cases() if c["name"] == name)
    image, reference = load_case(case)
    volume_u8 = pipeline.normalised_volume(image.array, case_settings(case, image))
    recipe = PublishedRecipe(net=lite_model.net).segment_volume(volume_u8, every_slice_boxes(reference,
                                                                                             case["slice_axis"]))
    assert measured[name][1] == pytest.approx(dice(recipe.mask, reference), abs=0.005)
