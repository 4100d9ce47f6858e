"""The rule a default must pass to depart from MedSAM's published behaviour, and the wider set's case files."""

import importlib.util
import json
import os

import pytest
from medsam_evaluation import cases
from medsam_evaluation.default_rule import CASE_LOSS_LIMIT, GROUP_LOSS_LIMIT, judge_option, verdict_table

GROUPS = {"a_1": "a", "a_2": "a", "b_1": "b", "b_2": "b", "c_1": "c"}


def spacing_scores(published, departure, other=None):
    """{candidate: {case: DSC}} with ``published`` first; ``departure`` adds per-case changes to it."""
    scores = {"published": dict(published), "zoom=size": {c: published[c] + departure[c] for c in published}}
    if other is not None:
        scores["zoom=best"] = {c: published[c] + other[c] for c in published}
    return scores


BASE = {"a_1": 0.70, "a_2": 0.60, "b_1": 0.80, "b_2": 0.85, "c_1": 0.90}


def test_a_departure_that_gains_in_every_group_at_both_spacings_becomes_the_default():
    gain = {"a_1": 0.04, "a_2": 0.02, "b_1": 0.01, "b_2": 0.03, "c_1": 0.02}
    verdict = judge_option("zoom", {5: spacing_scores(BASE, gain), 10: spacing_scores(BASE, gain)}, GROUPS)
    assert verdict.passes and verdict.default == "zoom=size"
    assert [check.folds_choosing for check in verdict.checks] == [3, 3]
    assert verdict.checks[0].whole_set_change == pytest.approx(0.024)
    assert "default: **`size`**" in "\n".join(verdict_table([verdict]))


def test_a_departure_one_fold_does_not_choose_stays_published():
    # Group a's gain carries the whole set and every fold that keeps it; held out, b and c choose the published value.
    change = {"a_1": 0.20, "a_2": 0.20, "b_1": -0.004, "b_2": -0.004, "c_1": -0.004}
    verdict = judge_option("zoom", {5: spacing_scores(BASE, change), 10: spacing_scores(BASE, change)}, GROUPS)
    assert not verdict.passes and verdict.default == "published"
    assert verdict.checks[0].failures == ["chosen in 2 of 3 folds"]


def test_a_group_losing_more_than_the_limit_or_a_case_below_the_recipe_fails_even_when_every_fold_chooses_it():
    # Every fold chooses it (the other two groups' gains outweigh), but group c loses just over the limit.
    group_loss = {"a_1": 0.05, "a_2": 0.05, "b_1": 0.05, "b_2": 0.05, "c_1": -(GROUP_LOSS_LIMIT + 0.001)}
    verdict = judge_option("zoom", {5: spacing_scores(BASE, group_loss), 10: spacing_scores(BASE, group_loss)},
                           GROUPS)
    assert verdict.checks[0].folds_choosing == 3
    assert verdict.checks[0].failures == ["held-out c -0.006"]
    # One case falls more than the case limit below the published recipe; its group's mean does not fall.
    case_loss = {"a_1": 0.05, "a_2": 0.05, "b_1": 0.05, "b_2": -(CASE_LOSS_LIMIT + 0.005), "c_1": 0.01}
    verdict = judge_option("zoom", {5: spacing_scores(BASE, case_loss), 10: spacing_scores(BASE, case_loss)},
                           GROUPS)
    assert verdict.checks[0].failures == ["b_2 -0.025"] and verdict.default == "published"


def test_a_departure_must_pass_at_every_spacing_and_the_best_alternative_is_the_one_judged():
    gain = {"a_1": 0.04, "a_2": 0.02, "b_1": 0.01, "b_2": 0.03, "c_1": 0.02}
    loss_at_10 = {"a_1": 0.04, "a_2": 0.02, "b_1": 0.01, "b_2": 0.03, "c_1": -0.03}
    small = {c: 0.001 for c in BASE}
    verdict = judge_option("zoom", {5: spacing_scores(BASE, gain, small), 10: spacing_scores(BASE, loss_at_10, small)},
                           GROUPS)
    assert verdict.candidate == "zoom=size"
    assert not verdict.checks[0].failures and verdict.checks[1].failures
    assert verdict.default == "published"


def test_a_tie_with_the_published_value_keeps_it():
    same = {c: 0.0 for c in BASE}
    verdict = judge_option("guide", {5: spacing_scores(BASE, same), 10: spacing_scores(BASE, same)}, GROUPS)
    assert verdict.checks[0].failures == ["chosen in 0 of 3 folds"] and verdict.default == "published"


def test_the_spacings_must_score_the_same_candidates():
    gain = {c: 0.01 for c in BASE}
    with pytest.raises(ValueError, match="different candidates"):
        judge_option("zoom", {5: spacing_scores(BASE, gain, gain), 10: spacing_scores(BASE, gain)}, GROUPS)


def write_cases(folder, entries):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cases.json"
    path.write_text(json.dumps(entries))
    return str(path)


def entry(name, **extra):
    return dict(name=name, image="image.nii.gz", label="label.nii.gz", modality="MR", slice_axis=0, **extra)


def test_several_case_files_load_in_order_with_their_groups_and_paths(tmp_path):
    first = write_cases(tmp_path / "shared", [entry("brats_pat0001_whole_tumor")])
    second = write_cases(tmp_path / "devset", [entry("prostate_case01_gland", group="prostate_mr"),
                                              entry("amos_0013_liver")])
    loaded = cases.load_cases([first, second])
    assert [case.name for case in loaded] == ["brats_pat0001_whole_tumor", "prostate_case01_gland", "amos_0013_liver"]
    assert [case.group for case in loaded] == ["brats", "prostate_mr", "amos"]
    assert loaded[1].image == str(tmp_path / "devset" / "image.nii.gz")
    assert [case.name for case in cases.load_cases([first, second], ["amos"])] == ["amos_0013_liver"]


def test_a_case_name_repeated_across_files_is_refused_with_the_fix(tmp_path):
    first = write_cases(tmp_path / "one", [entry("cord_t1")])
    second = write_cases(tmp_path / "two", [entry("cord_t1")])
    with pytest.raises(ValueError, match="case names repeat across .*: cord_t1; rename them"):
        cases.load_cases([first, second])


REPOSITORY = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture(scope="module")
def study():
    """``benchmarks/defaults_cross_validation.py``, loaded as a module."""
    spec = importlib.util.spec_from_file_location(
        "defaults_cross_validation", os.path.join(REPOSITORY, "benchmarks", "defaults_cross_validation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_judges_every_departure_on_its_own(study):
    """``benchmarks/defaults_cross_validation.py`` lists each departure against the published value alone: one
    that gains in every group passes, one that loses a case fails and says which."""
    changes = {config: 0.0 for config in study.CONFIGS}
    changes.update({"zoom=auto": 0.01, "mr_rule=auto": -0.05})
    records = [{"case": case, "group": group, "spacing": spacing, "config": config, "dsc": BASE[case] + change}
               for case, group in GROUPS.items() for spacing in study.SPACINGS for config, change in changes.items()]
    lines = study.departure_lines(records)
    rows = {(line.split(" | ")[0].strip("| `"), line.split(" | ")[1]): line for line in lines[2:]}
    assert len(rows) == sum(len(values) for values in study.ALTERNATIVES.values()) * len(study.SPACINGS)
    assert rows[("zoom=auto", "5")].endswith("| passes |") and "3/3" in rows[("zoom=auto", "10")]
    losing = rows[("mr_rule=auto", "5")]
    assert "fails: chosen in 0 of 3 folds" in losing and "a_1 -0.050" in losing


def test_the_defaults_are_the_rules_verdicts_on_the_committed_records(study):
    """Each accuracy option's default is what the rule decides from the study's records under docs/results (a
    default changed without the records to pass the rule fails here)."""
    from medsam_evaluation.study_cli import study_records
    from MedSAMSegmentLib.settings import PUBLISHED, SegmentationSettings

    records = study_records(os.path.join(REPOSITORY, "docs", "results", "default_rule", "records.jsonl"),
                            study.config_digests().values())
    assert len({r["case"] for r in records}) >= 59
    defaults = SegmentationSettings()
    for verdict in study.verdicts(study.complete_records(records)):
        expected = verdict.candidate.split("=", 1)[1] if verdict.passes else PUBLISHED[verdict.option]
        assert getattr(defaults, verdict.option) == expected, verdict.option
