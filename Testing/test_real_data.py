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

# DSC with key boxes every 5 slices (+3 px): 0.02 under what MedSAM's published behaviour measures in the defaults
# study (benchmarks/defaults_cross_validation.py, docs/results/default_rule/records.jsonl, 2026-12-05; the defaults,
# which add rounded box sizes, measure within 0.002 of it or above on these cases, 2026-12-06), so a regression in
# any step of the default pipeline fails here; the earlier defaults' figures (mr_rule=auto, zoom=size, guide=auto,
# alternate slices; 2026-12-01), which the rule of docs/accuracy.md sent back, are noted for reference.
FLOORS = {
    "ct_lesion_000001_02_01_008-023": 0.87,  # published 0.894, earlier defaults 0.928
    "ct_lesion_000002_03_01_035-047": 0.40,  # published 0.427, earlier defaults 0.772
    "ct_lesion_000009_03_01_036-048": 0.76,  # published 0.787, earlier defaults 0.898
    "ct_lesion_000010_01_01_078-090": 0.67,  # published 0.692, earlier defaults 0.907
    "ct_lesion_000015_01_01_081-093": 0.80,  # published 0.822, earlier defaults 0.847
    "ct_lesion_000015_01_01_103-115": 0.76,  # published 0.783, earlier defaults 0.867
    "brats_pat0001_whole_tumor": 0.76,  # published 0.790, earlier defaults 0.871
    "brats_pat0001_tumor_core": 0.72,  # published 0.746, earlier defaults 0.919
    "brats_pat0002_whole_tumor": 0.86,  # published 0.880, earlier defaults 0.911
    "brats_pat0002_tumor_core": 0.57,  # published 0.596, earlier defaults 0.723
    "brats_pat0003_whole_tumor": 0.83,  # published 0.851, earlier defaults 0.903
    "brats_pat0003_tumor_core": 0.81,  # published 0.832, earlier defaults 0.893
    "brats_pat0004_whole_tumor": 0.78,  # published 0.806, earlier defaults 0.902
    "brats_pat0004_tumor_core": 0.69,  # published 0.715, earlier defaults 0.905
    "brats_pat0005_whole_tumor": 0.58,  # published 0.609, earlier defaults 0.861
    "brats_pat0005_tumor_core": 0.67,  # published 0.698, earlier defaults 0.816
    "brats_pat0006_whole_tumor": 0.86,  # published 0.884, earlier defaults 0.851
    "brats_pat0006_tumor_core": 0.74,  # published 0.769, earlier defaults 0.857
    "cord_t1": 0.86,  # published 0.882, earlier defaults 0.886
    "cord_t2": 0.86,  # published 0.889, earlier defaults 0.900
    "cord_gm_t2s": 0.37,  # published 0.394, earlier defaults 0.311
    "totalseg_ct_liver": 0.91,  # published 0.938, earlier defaults 0.941
    "totalseg_ct_spleen": 0.94,  # published 0.961, earlier defaults 0.958
    "totalseg_ct_kidney_right": 0.87,  # published 0.897, earlier defaults 0.894
    "totalseg_ct_kidney_left": 0.91,  # published 0.933, earlier defaults 0.922
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
        # The defaults a user gets (SegmentationSettings' accuracy options).
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
