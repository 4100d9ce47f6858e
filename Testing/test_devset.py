"""The wider development set's extra cases (Evaluation/devset): every file there, in the shape the studies need."""

import json
import os

import numpy as np
import pytest
from conftest import REPO
from medsam_evaluation import cases
from MedSAMSegmentLib import io

DEVSET = os.path.join(REPO, "Evaluation", "devset", "cases.json")
SHARED_GROUPS = {"ct_lesion", "brats", "cord", "totalseg"}


def devset_cases():
    return cases.load_cases(DEVSET)


def test_every_case_names_its_group_source_and_reference():
    with open(DEVSET, encoding="utf-8") as handle:
        entries = json.load(handle)
    for entry in entries:
        assert entry["name"].startswith(entry["group"] + "_"), entry["name"]
        assert entry["modality"] in ("CT", "MR") and entry["ground_truth"] and entry["target"], entry["name"]
    groups = {entry["group"] for entry in entries}
    assert not groups & SHARED_GROUPS, "a devset group repeats one of the shared set's"
    readme = open(os.path.join(os.path.dirname(DEVSET), "README.md"), encoding="utf-8").read()
    for group in groups:
        assert f"{group}/" in readme, f"{group} has no row in Evaluation/devset/README.md"


@pytest.mark.parametrize("case", devset_cases(), ids=lambda case: case.name)
def test_each_case_reads_with_a_mask_on_its_grid_spanning_slices_for_key_boxes(case):
    image = io.read_image(case.image)
    mask, label = io.read_mask(case.label, case.label_values)
    assert mask.shape == image.array.shape[:3]
    spanned = np.flatnonzero(np.moveaxis(mask, case.slice_axis, 0).reshape(mask.shape[case.slice_axis], -1).any(1))
    assert spanned.size >= 8 and spanned[-1] - spanned[0] + 1 == spanned.size, "the target must span 8+ slices"
    assert image.spacing == pytest.approx(label.spacing) and image.origin == pytest.approx(label.origin)
    assert np.asarray(image.direction) == pytest.approx(np.asarray(label.direction))
