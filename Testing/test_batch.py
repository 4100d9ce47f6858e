"""``medsam-segment batch``: the manifest is checked before any model work; the local and Ray executors give the
bytes sequential ``segment`` runs give; a failing case is recorded and the batch goes on; a killed batch resumes
with only its unfinished cases; a two-node Ray cluster on loopback survives a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, require_shared_data, shared_data_path
from medsam_batch import ExecutorChoice, ManifestError, read_manifest, run_batch
from medsam_batch.jobs import RECORDS
from medsam_batch.ray_executor import RAY_MISSING, gpus_per_worker, on_loopback, ray_workers
from MedSAMSegmentLib import cli, demo, io, models
from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings, SettingsError

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
    monkeypatch.setattr(models, "load_from_settings", lambda model_settings: pytest.fail("the model was loaded"))
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
    lies outside its image, with each good case's mask from a sequential ``medsam-segment segment`` and the
    embedding folder those runs filled (``--cache-dir``): batches given it decode only, and must still give the
    cold runs' bytes."""
    from medsam_evaluation.simulate import simulate_key_boxes

    require_shared_data()
    folder = tmp_path_factory.mktemp("cohort")
    embeddings = str(folder / "embeddings")
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
                         "--device", "cpu", "--cache-dir", embeddings, "--quiet"]) == 0
        expected[name] = open(reference_output, "rb").read()
        rows.append(f"{image},{boxes},{name},{name}.nii.gz,none")
    outside = _write(folder / "outside.json", '{"slice_axis": 0, "boxes": [{"slice": 99, "box": [1, 1, 9, 9]}]}')
    rows.append(f"{demo.DEMO_IMAGE},{outside},broken,broken.nii.gz,none")
    return _demo_manifest(folder, rows), expected, embeddings


def _outputs(out_dir, names):
    return {name: open(os.path.join(out_dir, f"{name}.nii.gz"), "rb").read() for name in names}


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_local_batch_matches_sequential_segment_runs_and_goes_on_past_a_failing_case(cohort, tmp_path, workers,
                                                                                      capsys):
    """One worker runs cold (no embedding folder); two share the folder the sequential runs filled."""
    manifest, expected, embeddings = cohort
    out = str(tmp_path / "out")
    shared = ["--cache-dir", embeddings] if workers == "2" else []
    assert cli.main(["batch", manifest, "--out", out, "--workers", workers, "--device", "cpu", *shared,
                     "--quiet"]) == 1
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
    manifest, expected, embeddings = cohort
    out = tmp_path / "out"
    command = [sys.executable, "-m", "MedSAMSegmentLib.cli", "batch", manifest, "--out", str(out), "--workers",
               "1", "--device", "cpu", "--cache-dir", embeddings, "--quiet"]
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
                       log=lambda message: None, cache_dir=embeddings)
    ran = {o.name for o in report.outcomes if o.status != "skipped"}
    assert ran == {"demo", *LESIONS, "broken"} - (finished - {"broken"})
    assert {name: (out / f"{name}.nii.gz").read_bytes() for name in before} == before
    assert _outputs(str(out), expected) == expected
    assert not [p for p in out.iterdir() if p.name.startswith(".partial-")]  # no half-written mask left



# ---------------------------------------------------------------------------------------------------------
# Executors: the choice, and Ray (a private Ray on loopback; a two-node cluster on loopback with a worker killed)


@pytest.mark.parametrize("kind, workers, address, message", [
    ("spark", "auto", None, "--executor spark: use one of local, ray"),
    ("local", "0", None, "--workers 0: give a whole number"),
    ("local", "two", None, "--workers two: give a whole number"),
    ("local", "auto", "127.0.0.1:6379", "--address 127.0.0.1:6379: only the ray executor joins a cluster"),
])
def test_executor_choices_are_checked_with_one_line_naming_the_flag(kind, workers, address, message):
    with pytest.raises(SettingsError, match=message):
        ExecutorChoice(kind, workers, address)


def test_ray_workers_follow_the_clusters_gpus_or_cpus_and_the_cases():
    assert ray_workers("auto", 10, {"CPU": 8.0}, 0, 1) == 8
    assert ray_workers("auto", 3, {"CPU": 8.0}, 0, 1) == 3
    assert ray_workers("auto", 10, {"CPU": 8.0, "GPU": 2.0}, 1, 1) == 2
    assert ray_workers("auto", 10, {}, 0, 1) == 1  # an empty cluster still gets one, scheduled when a node joins
    assert ray_workers(4, 2, {"CPU": 8.0}, 0, 1) == 2
    assert on_loopback(None) and on_loopback("127.0.0.1:6379") and on_loopback("ray://localhost:10001")
    assert not on_loopback("10.0.0.5:6379") and not on_loopback("auto")

    class Cluster:
        def __init__(self, gpus):
            self.gpus = gpus

        def cluster_resources(self):
            return {"CPU": 16.0, "GPU": float(self.gpus)}

    assert [gpus_per_worker(Cluster(2), device) for device in ("auto", "cuda", "cuda:1", "cpu")] == [1, 1, 1, 0]
    assert gpus_per_worker(Cluster(0), "auto") == 0


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.setattr(models, "load_from_settings", lambda model_settings: pytest.fail("the model was loaded"))
    manifest = _demo_manifest(tmp_path, [f"{demo.DEMO_IMAGE},{demo.DEMO_BOXES},a,a.nii.gz,none"])
    assert cli.main(["batch", manifest, "--out", str(tmp_path / "out"), "--executor", "ray", "--quiet"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"medsam-segment: error: {RAY_MISSING}"]
    assert cli.main(["batch", manifest, "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1", "--quiet"]) == 2


@pytest.mark.slow
@pytest.mark.ray
def test_ray_batch_on_a_private_loopback_ray_matches_sequential_segment_runs(cohort, tmp_path):
    manifest, expected, embeddings = cohort
    out = str(tmp_path / "out")
    report = run_batch(manifest, out, SegmentationSettings(), ModelSettings(device="cpu"),
                       executor=ExecutorChoice("ray", 2), progress=False, log=lambda message: None,
                       cache_dir=embeddings)
    assert (report.count("done"), report.count("failed")) == (3, 1)
    assert _outputs(out, expected) == expected
    assert not sys.modules["ray"].is_initialized()  # the private Ray is stopped after the run


def _ray_worker_pids(state: bytes = b"") -> set:
    """Processes of Ray actors running the batch's worker (their title is ``ray::MedSAMWorker[.method]``)."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    title = handle.read()
            except OSError:
                continue
            if title.startswith(b"ray::MedSAMWorker" + state):
                pids.add(int(name))
    return pids


@pytest.mark.slow
@pytest.mark.ray
def test_ray_batch_on_a_two_node_loopback_cluster_survives_a_killed_worker_and_resumes(cohort, tmp_path,
                                                                                     monkeypatch):
    manifest, expected, _ = cohort  # cold: a worker must be mid-case long enough to be killed
    good = _write(tmp_path / "good.csv", "".join(open(manifest).readlines()[:-1]))  # without the broken case
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the nodes on 127.0.0.1 (see ray_executor)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        assert cluster.address.startswith("127.0.0.1:")
        out = tmp_path / "out"
        command = [sys.executable, "-m", "MedSAMSegmentLib.cli", "batch", good, "--out", str(out), "--executor",
                   "ray", "--address", cluster.address, "--workers", "2", "--device", "cpu", "--quiet"]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # the CLI's own
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 encoding="utf-8")
        records = out / RECORDS
        deadline = time.monotonic() + 300
        busy: set = set()
        while time.monotonic() < deadline and child.poll() is None and not busy:
            if records.is_dir() and any(records.glob("*.json")):  # one case done, the other worker mid-case
                busy = _ray_worker_pids(b".run")
            time.sleep(0.05)
        assert busy, f"no worker mid-case to kill: {child.poll()} {child.stderr.read() if child.poll() else ''}"
        victim = min(busy)
        before = _ray_worker_pids()
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = child.communicate(timeout=400)
        assert child.returncode == 0, stderr
        assert "3 done, 0 skipped (finished before), 0 failed" in (out / "summary.md").read_text()
        # Ray saw the worker die (the raylet's line, or the driver's retry line, whichever Ray flushes before the
        # driver exits) and ran its case again (all 3 done above).
        said = stdout + stderr
        assert "will be retried" in said or "worker died or was killed while executing a task" in said, said
        assert _outputs(str(out), expected) == expected
        assert len(before | _ray_worker_pids()) >= 2 and victim not in _ray_worker_pids()
        # The rerun finds every case finished and starts no worker.
        rerun = subprocess.run(command[:-1], cwd=REPO, env=env, capture_output=True, encoding="utf-8", timeout=300)
        assert rerun.returncode == 0 and "3 cases: 3 finished already, 0 to run" in rerun.stdout, rerun.stderr
        assert _outputs(str(out), expected) == expected
    finally:
        cluster.shutdown()


def test_an_unusable_cache_folder_exits_2_before_any_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "load_from_settings", lambda model_settings: pytest.fail("the model was loaded"))
    manifest = _demo_manifest(tmp_path, [f"{demo.DEMO_IMAGE},{demo.DEMO_BOXES},a,a.nii.gz,none"])
    blocker = _write(tmp_path / "a-file", "not a folder")
    assert cli.main(["batch", manifest, "--out", str(tmp_path / "out"), "--cache-dir", blocker + "/sub",
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cache-dir" in err[0] and "give a folder you can write to" in err[0], err


@pytest.mark.parametrize("command", ["batch", "evaluate"])
def test_a_bad_executor_choice_exits_2_before_any_model_loads(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setattr(models, "load_from_settings", lambda model_settings: pytest.fail("the model was loaded"))
    manifest = _demo_manifest(tmp_path, [f"{demo.DEMO_IMAGE},{demo.DEMO_BOXES},a,a.nii.gz,none"])
    first = [manifest] if command == "batch" else ["--cases", shared_data_path("cases.json")]
    assert cli.main([command, *first, "--out", str(tmp_path / "out"), "--workers", "0", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "medsam-segment: error: --workers 0: give a whole number of workers, 1 or more, or auto"]
