"""Study: how much do a few corrected slices help the rest? (Refine from my edits, simulated annotator)

For each development case: key boxes every ``--spacing`` slices from the reference (+3 px, as ``evaluate``
simulates them), one run with the command line's defaults (real LiteMedSAM on the CPU); then for each k of ``--k``
the annotator replaces the k worst slices by the reference and Refine from my edits adapts the decoder to them
(:mod:`medsam_evaluation.corrections`). Prints per case the untouched slices' DSC before and after, whether the
adapted decoder was kept (leave-one-out check), and the seconds the refinement took; then the means by case group,
the largest loss, and the issue's targets. Records go to a JSON-lines file (a rerun skips what is there).

    python benchmarks/corrections_study.py --out /tmp/corrections.jsonl [--k 2 3] [--case cord]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.cases import load_cases, modality_setting  # noqa: E402
from medsam_evaluation.corrections import corrections_protocol  # noqa: E402
from medsam_evaluation.cross_validation import case_group  # noqa: E402
from medsam_evaluation.simulate import simulate_key_boxes  # noqa: E402
from medsam_evaluation.study_cli import add_study_arguments, run_study  # noqa: E402
from MedSAMSegmentLib import io, pipeline  # noqa: E402
from MedSAMSegmentLib.models import load_model  # noqa: E402
from MedSAMSegmentLib.refinement import RefineSettings  # noqa: E402
from MedSAMSegmentLib.settings import SegmentationSettings  # noqa: E402

#: The issue's targets with two corrected slices: the weakest targets gain this much ...
WEAK_GAIN = 0.05
#: ... and no case loses more than this.
MOST_LOSS = 0.01


def run(cases_json: str, out: str, ks, spacing: int, refine: RefineSettings, case_filter=None) -> None:
    done = set()
    if os.path.exists(out):
        with open(out) as handle:
            done = {(r["case"], r["k"], r["refine"]["anchors"]) for r in map(json.loads, handle)}
    model = load_model("lite", device="cpu")
    for case in load_cases(cases_json, case_filter):
        todo = [k for k in ks if (case.name, k, refine.anchors) not in done]
        if not todo:
            continue
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        settings = SegmentationSettings(modality=modality_setting(case, image.array))
        segmenter = pipeline.make_segmenter(model, image.array, case.slice_axis, settings)
        keys = simulate_key_boxes(reference, case.slice_axis, spacing, margin=3)
        result = segmenter.segment(keys, settings)
        for row in corrections_protocol(segmenter, keys, settings, result, reference, todo, refine):
            record = {"case": case.name, "group": case_group(case.name), "spacing": spacing,
                      "refine": dataclasses.asdict(refine), **row,
                      "held_out": {str(i): pair for i, pair in row.get("held_out", {}).items()}}
            with open(out, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"{case.name} k={row['k']}: {row['before']:.3f} -> {row['after']:.3f} "
                  f"({'kept' if row['kept'] else 'not kept'}, {row['seconds']:.1f} s)", flush=True)


def report(out: str) -> str:
    with open(out) as handle:
        records = [json.loads(line) for line in handle]
    lines = []
    for k, anchors in sorted({(r["k"], r["refine"]["anchors"]) for r in records}):
        mine = sorted((r for r in records if r["k"] == k and r["refine"]["anchors"] == anchors),
                      key=lambda r: r["case"])
        lines += [f"### {k} corrected slice{'s' if k > 1 else ''} (the {k} worst), {anchors} anchor slices", "",
                  "| case | corrected slices | untouched DSC before | after | change | adapted decoder | s |",
                  "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
        for r in mine:
            kept = "kept" if r["kept"] else ("not kept" if len(r["corrected"]) > 1 else "(one slice: none)")
            lines.append(f"| {r['case']} | {r['corrected']} | {r['before']:.3f} | {r['after']:.3f} | "
                         f"{r['after'] - r['before']:+.3f} | {kept} | {r['seconds']:.1f} |")
        by_group = defaultdict(list)
        for r in mine:
            by_group[r["group"]].append(r["after"] - r["before"])
        changes = [r["after"] - r["before"] for r in mine]
        worst = min(mine, key=lambda r: r["after"] - r["before"])
        lines += ["", f"- mean change {statistics.mean(changes):+.4f} over {len(mine)} cases; kept on "
                  f"{sum(r['kept'] for r in mine)}; largest loss {worst['after'] - worst['before']:+.4f} "
                  f"({worst['case']})"]
        lines += [f"- {group}: mean change {statistics.mean(v):+.4f} ({len(v)} cases)"
                  for group, v in sorted(by_group.items())]
        weak = [r for r in mine if r["before"] < 0.75]
        if weak:
            gain = statistics.mean(r["after"] - r["before"] for r in weak)
            lines.append(f"- the weakest targets (untouched DSC below 0.75 before: {len(weak)} cases): mean change "
                         f"{gain:+.4f} (target {WEAK_GAIN:+.2f}: {'met' if gain >= WEAK_GAIN else 'not met'})")
        lines += [f"- no case lower by more than {MOST_LOSS}: "
                  f"{'met' if worst['after'] - worst['before'] >= -MOST_LOSS else 'not met'}", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 3], help="corrected slices (default 2 3)")
    parser.add_argument("--spacing", type=int, default=5)
    parser.add_argument("--anchors", type=int, default=RefineSettings().anchors,
                        help="untouched slices that keep the run's masks while adapting (0: none)")
    args = parser.parse_args()
    refine = RefineSettings(anchors=args.anchors)
    return run_study(args, lambda cases_json: run(cases_json, args.out, args.k, args.spacing, refine, args.case),
                     report)


if __name__ == "__main__":
    sys.exit(main())
