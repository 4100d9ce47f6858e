"""``medsam-segment batch``: the manifest is checked before any model work; the local executor gives the bytes
sequential ``segment`` runs give; a failing case is recorded and the batch goes on; a killed batch resumes with
only its unfinished cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, require_shared_data, shared_data_path
from medsam_batch import ManifestError, read_manifest, run_batch
from medsam_batch.jobs import RECORDS
from MedSAMSegmentLib import cli, demo, io
from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings

LESIONS = ("ct_lesion_000002_03_01_035-047", "ct_lesion_000009_03_01_036-048")


def _write(path, text):
    path.write_text(text)
    return str(path)


def _demo_manifest(tmp_path, rows):
    return _write(tmp_path / "cohort.csv", "image,boxes,name,output,modality\n" + "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------------------------------------
# The manifest


@pytest.mark.parametrize("text, message", [
    ("image,name\nx.npz,a\n", "no 'boxes' column"),
    ("image,boxes,colour\nx.npz,b.json,red\n", "unknown column 'colour'"),
    ("image,boxes\nmissing.npz,{boxes}\n", r"row 1 \(case 'missing'\): image .*missing.npz does not exist"),
    ("image,boxes\n{image},\n", r"row 1 \(case 'demo_ct_lesion'\): no key-box file"),
    ("image,boxes\n{image},{boxes}; nowhere.json\n", "row 1 .*key-box file .*nowhere.json does not exist"),
    ("image,boxes,output\n{image},{boxes},a.nii.gz\n{image},{boxes},a.nii.gz\n",
     "rows 1 and 2 have the same name 'demo_ct_lesion'"),
    ("image,boxes,name,output\n{image},{boxes},a,x.nii.gz\n{image},{boxes},b,x.nii.gz\n",
     "rows 1 and 2 have the same output"),
    ("image,boxes,name,zoom\n{image},{boxes},a,off\n{image},{boxes},b,wide\n", r"row 2 \(case 'b'\): --zoom 'wide'"),
    ("image,boxes,output\n{image},{boxes},mask.jpg\n", "row 1 .*output .*mask.jpg: use one of"),
    ("", "no 'image', 'boxes' column"),
])
def test_bad_manifests_are_refused_with_one_line_naming_the_row(tmp_path, text, message):
    manifest = _write(tmp_path / "m.csv", text.format(image=demo.DEMO_IMAGE, boxes=demo.DEMO_BOXES))
    with pytest.raises(ManifestError, match=message) as caught:
        read_manifest(manifest, str(tmp_path / "out"), SegmentationSettings())
    assert "\n" not in str(caught.value)


def test_a_bad_manifest_stops_the_command_before_any_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ModelSettings, "load", lambda self: pytest.fail("the model was loaded"))
    manifest = _write(tmp_path / "m.csv", f"image,boxes\n{demo.DEMO_IMAGE},\n")
    assert cli.main(["batch", manifest, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "row 1 (case 'demo_ct_lesion'): no key-box file" in capsys.readouterr().err


def test_json_manifests_take_lists_relative_paths_and_per_case_settings(tmp_path):
    os.symlink(demo.DEMO_IMAGE, tmp_path / "ct.npz")
    os.symlink(demo.DEMO_BOXES, tmp_path / "boxes.json")
    manifest = _write(tmp_path / "m.json", json.dumps({"cases": [
        {"image": "ct.npz", "boxes": ["boxes.json"], "modality": "none", "window": "40 400"},
        {"image": "ct.npz", "boxes": "boxes.json", "name": "second", "output": "/abs/second.seg.nrrd",
         "segment": "lesion", "propagate_margin": "5"}]}))
    first, second = read_manifest(manifest, str(tmp_path / "out"), SegmentationSettings(zoom="off"))
    assert first.name == "ct" and first.boxes == (str(tmp_path / "boxes.json"),)
    assert first.output == str(tmp_path / "out" / "ct.nii.gz")
    assert first.settings == SegmentationSettings(zoom="off", modality="none", window=(40.0, 400.0))
    assert second.output == "/abs/second.seg.nrrd" and second.segment == "lesion"
    assert second.settings.propagate_margin == 5.0 and second.settings.modality == "auto"


# ---------------------------------------------------------------------------------------------------------
# Real runs (LiteMedSAM on the CPU)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three cases (the demo lesion and two development CT lesions, key boxes every 5 slices) and one whose box
    lies outside its image, with each good case's mask from a sequential ``medsam-segment segment``."""
    from medsam_evaluation.simulate import simulate_key_boxes

    require_shared_data()
    folder = tmp_path_factory.mktemp("cohort")
    rows, expected = [], {}
    cases = [("demo", demo.DEMO_IMAGE, demo.DEMO_BOXES)]
    for name in LESIONS:
        image = shared_data_path("ct_lesion", name.replace("ct_lesion", "CT_Lesion") + ".npz")
        reference, _ = io.read_mask(image)
        boxes = str(folder / f"{name}.json")
        io.write_box_json(boxes, simulate_key_boxes(reference, 0, 5, margin=3))
        cases.append((name, image, boxes))
    for name, image, boxes in cases:
        reference_output = str(folder / f"sequential_{name}.nii.gz")
        assert cli.main(["segment", image, "--boxes", boxes, "-o", reference_output, "--modality", "none",
                         "--device", "cpu", "--quiet"]) == 0
        expected[name] = open(reference_output, "rb").read()
        rows.append(f"{image},{boxes},{name},{name}.nii.gz,none")
    outside = _write(folder / "outside.json", '{"slice_axis": 0, "boxes": [{"slice": 99, "box": [1, 1, 9, 9]}]}')
    rows.append(f"{demo.DEMO_IMAGE},{outside},broken,broken.nii.gz,none")
    return _demo_manifest(folder, rows), expected


def _outputs(out_dir, names):
    return {name: open(os.path.join(out_dir, f"{name}.nii.gz"), "rb").read() for name in names}


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_local_batch_matches_sequential_segment_runs_and_goes_on_past_a_failing_case(cohort, tmp_path, workers,
                                                                                      capsys):
    manifest, expected = cohort
    out = str(tmp_path / "out")
    assert cli.main(["batch", manifest, "--out", out, "--workers", workers, "--device", "cpu", "--quiet"]) == 1
    assert "1 of 4 cases failed" in capsys.readouterr().err
    assert _outputs(out, expected) == expected
    assert not os.path.exists(os.path.join(out, "broken.nii.gz"))
    summary = open(os.path.join(out, "summary.md")).read()
    assert "3 done, 0 skipped (finished before), 1 failed" in summary
    assert "| broken | failed |" in summary and "slices 0-" in summary  # the reason names the volume's slices
    csv_lines = open(os.path.join(out, "summary.csv")).read().splitlines()
    assert csv_lines[0].startswith("case,status,slices") and len(csv_lines) == 5
    # Run again: the finished cases are skipped, the failed one runs (and fails) again.
    report = run_batch(manifest, out, SegmentationSettings(), ModelSettings(device="cpu"), progress=False,
                       log=lambda message: None)
    assert report.count("skipped") == 3 and report.count("failed") == 1 and report.count("done") == 0
    assert _outputs(out, expected) == expected


@pytest.mark.slow
def test_a_killed_batch_resumes_with_only_its_unfinished_cases(cohort, tmp_path):
    manifest, expected = cohort
    out = tmp_path / "out"
    command = [sys.executable, "-m", "MedSAMSegmentLib.cli", "batch", manifest, "--out", str(out), "--workers",
               "1", "--device", "cpu", "--quiet"]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / RECORDS
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (records.is_dir() and any(records.glob("*.json"))):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # mid-run: one case finished, the next in flight
    child.wait(timeout=60)
    finished = {p.stem for p in records.glob("*.json")}
    assert 1 <= len(finished) < 4
    before = {name: (out / f"{name}.nii.gz").read_bytes() for name in finished if name in expected}
    report = run_batch(manifest, str(out), SegmentationSettings(), ModelSettings(device="cpu"), progress=False,
                       log=lambda message: None)
    ran = {o.name for o in report.outcomes if o.status != "skipped"}
    assert ran == {"demo", *LESIONS, "broken"} - (finished - {"broken"})
    assert {name: (out / f"{name}.nii.gz").read_bytes() for name in before} == before
    assert _outputs(str(out), expected) == expected
    assert not [p for p in out.iterdir() if p.name.startswith(".partial-")]  # no half-written mask left

