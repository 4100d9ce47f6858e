"""Benchmark: ``medsam-segment batch`` over the development cases on each executor; cases per minute and overhead.

Writes a manifest of the development cases (key boxes every 5 slices from the reference, +3 px, as ``evaluate``
simulates an annotator; each case's ``--modality`` as a user would pick it), then runs the same batch, from an
empty output folder each time, on: the local executor with 1 worker, with 2 workers, and the Ray executor with 2
actors on a private Ray on this machine. Prints one table (Markdown) and writes it with the raw numbers as JSON:

* wall seconds of the whole batch (reading the manifest to the summary) and cases per minute;
* the sum of the cases' own seconds (read, segment, write, as each worker timed them);
* the overhead per case: (wall x workers - the cases' seconds) / cases, i.e. what starting the workers (model
  loads, Ray's start), handing out cases and idle workers at the end cost each case;
* whether every executor wrote the same bytes as the first.

    python benchmarks/batch_throughput.py [--cases ../shared/data/cases.json] [--out docs/results/batch]
        [--runs local:1 local:2 ray:2] [--case GLOB] [--recist]

``--recist`` measures a DeepLesion-style cohort instead: each case gets one key box, on the slice where its
reference is largest (where a RECIST diameter is drawn; the box a line gives), and runs ``--strategy propagate``
(masks grown slice by slice from that one box). Use it with ``--case 'ct_lesion*'`` (the development set's CT
lesions come from DeepLesion); the JSON goes to ``results_recist.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Batch"))

from medsam_batch import ExecutorChoice, run_batch  # noqa: E402
from medsam_evaluation.cases import default_cases_json, load_cases, modality_setting  # noqa: E402
from medsam_evaluation.simulate import simulate_key_boxes  # noqa: E402
from MedSAMSegmentLib import io  # noqa: E402
from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings  # noqa: E402

#: Key boxes every this many slices, as the README's accuracy table's main column.
SPACING = 5


def write_manifest(cases, folder: str, recist: bool = False) -> str:
    """A JSON manifest of ``cases`` with simulated key boxes (see the module); returns its path."""
    rows = []
    for case in cases:
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        boxes = os.path.join(folder, f"{case.name}.boxes.json")
        keys = simulate_key_boxes(reference, case.slice_axis, SPACING, margin=3)
        row = {"image": case.image, "boxes": boxes, "name": case.name, "modality": modality_setting(case, image.array)}
        if recist:
            along = np.moveaxis(reference, case.slice_axis, 0)
            largest = int(np.argmax(along.reshape(len(along), -1).sum(1)))
            only = np.zeros_like(along)
            only[largest] = along[largest]
            keys = simulate_key_boxes(np.moveaxis(only, 0, case.slice_axis), case.slice_axis, 1, margin=3)
            row["strategy"] = "propagate"
        io.write_box_json(boxes, keys)
        rows.append(row)
    path = os.path.join(folder, "manifest.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"cases": rows}, out, indent=1)
    return path


def run_once(manifest: str, out_dir: str, kind: str, workers: int) -> dict:
    started = time.perf_counter()
    report = run_batch(manifest, out_dir, SegmentationSettings(), ModelSettings(device="cpu"),
                       executor=ExecutorChoice(kind, workers), progress=False, log=lambda message: None)
    wall = time.perf_counter() - started
    n = len(report.outcomes)
    case_seconds = sum(o.seconds for o in report.outcomes)
    return {"executor": kind, "workers": workers, "cases": n, "done": report.count("done"),
            "failed": report.count("failed"), "slices": sum(o.slices for o in report.outcomes),
            "wall_s": round(wall, 1), "cases_per_min": round(60 * n / wall, 2),
            "case_seconds": round(case_seconds, 1),
            "median_case_s": round(statistics.median(o.seconds for o in report.outcomes), 2),
            "overhead_per_case_s": round((wall * workers - case_seconds) / n, 2),
            "outputs": {o.name: open(o.output, "rb").read() for o in report.outcomes if o.status == "done"}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=None, help="cases.json (default: ../shared/data/cases.json)")
    parser.add_argument("--out", default=None, help="folder for table.md and results.json (default: print only)")
    parser.add_argument("--runs", nargs="+", default=["local:1", "local:2", "ray:2"], metavar="EXECUTOR:WORKERS")
    parser.add_argument("--case", action="append", help="only cases matching (glob or substring); repeat for more")
    parser.add_argument("--recist", action="store_true", help="one key box per case, propagated (see the module)")
    args = parser.parse_args(argv)
    cases = load_cases(default_cases_json(args.cases), args.case)
    with tempfile.TemporaryDirectory(prefix="batch-benchmark-") as folder:
        manifest = write_manifest(cases, folder, args.recist)
        results = []
        for run in args.runs:
            kind, workers = run.split(":")
            results.append(run_once(manifest, os.path.join(folder, run.replace(":", "-")), kind, int(workers)))
            print(f"{run}: {results[-1]['wall_s']} s", file=sys.stderr, flush=True)
    first = results[0]["outputs"]
    lines = ["| executor | workers | cases | slices | wall s | cases/min | cases' own s | median s/case | "
             "overhead s/case | same bytes as the first |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        same = "yes" if r["outputs"] == first else "NO"
        lines.append(f"| {r['executor']} | {r['workers']} | {r['cases']} | {r['slices']} | {r['wall_s']} | "
                     f"{r['cases_per_min']} | {r['case_seconds']} | {r['median_case_s']} | "
                     f"{r['overhead_per_case_s']} | {same} |")
        r["same_bytes_as_first"] = same == "yes"
        del r["outputs"]
    table = "\n".join(lines)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        suffix = "_recist" if args.recist else ""
        with open(os.path.join(args.out, f"table{suffix}.md"), "w", encoding="utf-8") as out:
            out.write(table + "\n")
        with open(os.path.join(args.out, f"results{suffix}.json"), "w", encoding="utf-8") as out:
            json.dump({"date": time.strftime("%Y-%m-%d"), "cpus": len(os.sched_getaffinity(0)),
                       "spacing": SPACING, "runs": results}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
