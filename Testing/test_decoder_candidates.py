"""The decoder-candidates study's ways from logits to masks, and its report (benchmarks/decoder_candidates_study.py)."""

import importlib.util
import os
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def study():
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "decoder_candidates_study.py")
    spec = importlib.util.spec_from_file_location("decoder_candidates_study", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def stack_of(study, logits, key_slices=(0, 4)):
    boxes = np.tile([[2.0, 2.0, 7.0, 7.0]], (len(logits), 1))
    return study.SliceStack(list(range(len(logits))), np.asarray(logits, dtype=np.float32), boxes,
                            list(key_slices), {0.9: np.asarray(logits, dtype=np.float32)})


def test_published_is_medsams_mask_and_a_lower_threshold_only_grows_it(study):
    logits = np.random.default_rng(0).normal(0, 3, (5, 10, 10))
    stack = stack_of(study, logits)
    published = study.CANDIDATES["published"](stack)
    assert np.array_equal(published, logits > 0)
    grown = study.CANDIDATES["threshold=-1.0"](stack)
    assert (grown >= published).all() and grown.sum() > published.sum()


def test_the_slice_axis_candidates_fill_a_one_slice_gap_and_drop_a_one_slice_blob(study):
    logits = np.full((5, 10, 10), -8.0)
    logits[:, 3:7, 3:7] = 8.0
    logits[2, 3:7, 3:7] = -0.5  # a weak gap in the middle slice
    logits[2, 0, 0] = 0.5  # a weak speck on that slice alone
    stack = stack_of(study, logits)
    for name in ("majority3", "slice_smoothing=0.25"):
        mask = study.CANDIDATES[name](stack)
        assert mask[2, 3:7, 3:7].all() and not mask[2, 0, 0], name
        assert np.array_equal(mask[[0, 1, 3, 4]], logits[[0, 1, 3, 4]] > 0), name


def test_key_shape_pulls_the_slices_between_towards_the_key_masks(study):
    logits = np.full((5, 10, 10), -8.0)
    logits[[0, 4], 3:7, 3:7] = 8.0  # the key slices hold a square; the slices between are weakly negative
    logits[1:4, 3:7, 3:7] = -1.0
    mask = study.CANDIDATES["key_shape=1.0"](stack_of(study, logits))
    assert mask[1:4, 4:6, 4:6].all() and not mask[:, 0, 0].any()


def test_the_report_judges_each_candidate_against_the_published_mask(study):
    records = []
    for case, group in (("a_1", "a"), ("a_2", "a"), ("b_1", "b"), ("b_2", "b")):
        for spacing in study.SPACINGS:
            for name in study.CANDIDATES:
                change = {"threshold=-0.5": 0.02, "majority3": -0.05}.get(name, 0.0)
                records.append({"case": case, "group": group, "spacing": spacing, "candidate": name,
                                "dsc": 0.7 + change})
    rows = {(line.split(" | ")[0].strip("| `"), line.split(" | ")[1]): line
            for line in study.report(records).splitlines() if line.startswith("| `")}
    assert rows[("threshold=-0.5", "5")].endswith("| passes |")
    assert "fails: chosen in 0 of 2 folds" in rows[("majority3", "10")]
    assert len(rows) == len(study.CANDIDATES) * len(study.SPACINGS)
