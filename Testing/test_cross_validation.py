"""Leave-one-group-out selection of a default: what each fold chooses and what the held-out group gets."""

import json

import pytest
from conftest import require_shared_data, shared_data_path
from medsam_evaluation.cross_validation import case_group, choose, leave_one_group_out


def test_groups_of_the_development_cases():
    assert case_group("ct_lesion_000002_03_01_035-047") == "ct_lesion"
    assert case_group("brats_pat0006_whole_tumor") == "brats"
    assert case_group("cord_gm_t2s") == "cord"
    assert case_group("totalseg_ct_kidney_left") == "totalseg"
    assert case_group("breast_mr_tumour") == "breast"


def test_every_development_case_falls_in_one_of_the_four_groups():
    require_shared_data()
    with open(shared_data_path("cases.json")) as handle:
        names = [case["name"] for case in json.load(handle)]
    assert {case_group(name) for name in names} == {"ct_lesion", "brats", "cord", "totalseg"}


def test_a_gain_from_one_group_is_not_credited_on_the_groups_it_was_not_chosen_on():
    # "tuned" wins big on group a (two cases) and loses a little on b and c: the whole set prefers it, but held
    # out, a is scored with what b and c chose (the default), and b and c with "tuned" (a's win outweighs the
    # other group's loss in every fold that keeps a).
    scores = {
        "default": {"a_1": 0.50, "a_2": 0.50, "b_1": 0.80, "c_1": 0.90},
        "tuned": {"a_1": 0.80, "a_2": 0.80, "b_1": 0.78, "c_1": 0.88},
    }
    result = leave_one_group_out(scores)
    assert result.whole_set_choice == "tuned"
    assert result.whole_set_mean == pytest.approx((0.8 + 0.8 + 0.78 + 0.88) / 4)
    folds = {fold.group: fold for fold in result.folds}
    assert folds["a"].chosen == "default" and folds["a"].held_out_mean == pytest.approx(0.50)
    assert folds["b"].chosen == "tuned" and folds["b"].held_out_mean == pytest.approx(0.78)
    assert folds["b"].worst_case_change == pytest.approx(-0.02)
    assert result.held_out_mean == pytest.approx((0.5 + 0.5 + 0.78 + 0.88) / 4)
    assert result.reference_mean == pytest.approx((0.5 + 0.5 + 0.8 + 0.9) / 4)
    assert not result.generalises


def test_a_gain_in_every_group_generalises():
    scores = {"default": {"a_1": 0.5, "b_1": 0.6, "c_1": 0.7}, "better": {"a_1": 0.55, "b_1": 0.61, "c_1": 0.7}}
    result = leave_one_group_out(scores)
    assert result.whole_set_choice == "better" and result.generalises
    assert [fold.chosen for fold in result.folds] == ["better", "better", "better"]
    assert result.held_out_mean == pytest.approx((0.55 + 0.61 + 0.7) / 3)


def test_ties_keep_the_first_candidate_and_explicit_groups_are_used():
    scores = {"default": {"x": 0.7, "y": 0.7}, "other": {"x": 0.7, "y": 0.7}}
    assert choose(scores, ["x", "y"]) == "default"
    result = leave_one_group_out(scores, groups={"x": "one", "y": "two"})
    assert [fold.group for fold in result.folds] == ["one", "two"]
    assert result.whole_set_choice == "default" and result.generalises


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no candidates"):
        leave_one_group_out({})
    with pytest.raises(ValueError, match="other cases"):
        leave_one_group_out({"default": {"a_1": 0.5, "b_1": 0.5}, "other": {"a_1": 0.5}})
    with pytest.raises(ValueError, match="two groups"):
        leave_one_group_out({"default": {"a_1": 0.5, "a_2": 0.6}})


def test_a_study_without_its_cases_says_so_and_a_report_needs_no_run(tmp_path, capsys):
    import argparse

    from medsam_evaluation.study_cli import add_study_arguments, run_study

    parser = argparse.ArgumentParser()
    add_study_arguments(parser)
    ran = []
    missing = parser.parse_args(["--cases", str(tmp_path / "none.json"), "--out", str(tmp_path / "r.jsonl")])
    assert run_study(missing, lambda cases, piece: ran.append(cases), lambda out: "report") == 2 and not ran
    assert "no development set found at" in capsys.readouterr().err
    report_only = parser.parse_args(["--out", str(tmp_path / "r.jsonl"), "--report-only"])
    assert run_study(report_only, lambda cases, piece: ran.append(cases), lambda out: f"report of {out}") == 0
    assert not ran and capsys.readouterr().out.strip() == f"report of {tmp_path / 'r.jsonl'}"


def test_a_study_stopped_by_its_bound_prints_no_report_and_reports_only_its_own_settings(tmp_path, capsys):
    import argparse

    from medsam_evaluation.resumable import CaseRecords
    from medsam_evaluation.study_cli import add_study_arguments, run_study, study_report

    require_shared_data()
    parser = argparse.ArgumentParser()
    add_study_arguments(parser)
    out = str(tmp_path / "r.jsonl")
    args = parser.parse_args(["--cases", shared_data_path("cases.json"), "--out", out, "--max-minutes", "0"])
    pieces = []

    def run(cases_json, piece):
        pieces.append(piece.settings.max_minutes)
        return 3  # cases left: the run said so itself

    assert run_study(args, run, lambda path: "report") == 0 and pieces == [0]
    assert capsys.readouterr().out == ""  # the report waits for every case
    records = CaseRecords(out)
    records.add("mine", ["a"], {"dsc": 0.5})
    records.add("theirs", ["a"], {"dsc": 0.25})
    with open(out, "a") as handle:
        handle.write(json.dumps({"case": "made before settings were recorded", "dsc": 0.125}) + "\n")

    def report(rows):
        return " ".join(str(r["dsc"]) for r in rows)

    assert study_report(report, lambda: {"mine"})(out) == "0.5"
    assert "2 records of other settings ignored" in capsys.readouterr().err
    assert study_report(report, lambda: {"mine"}, all_settings=True)(out) == "0.5 0.25 0.125"
    assert study_report(report, lambda: {"nobody"})(out).startswith(f"no records in {out} of these settings")
