"""Study: do the accuracy defaults hold on case groups they were not chosen on? (leave one group out)

For each development case (key boxes every 5 and every 10 slices from the reference, +3 px, as ``evaluate``
simulates them; real LiteMedSAM on the CPU; ``interpolate``), each configuration below runs through the same
segmenter, so configurations share the embeddings they have in common. The records go to a JSON-lines file (a
rerun skips what is there). Then, per option (the default and each alternative, the other options at their
defaults) and over the whole configurations, the choice is cross-validated across the case groups (CT lesions,
BraTS, spinal cord, TotalSegmentator organs): the group held out is scored with what the other groups chose
(:mod:`medsam_evaluation.cross_validation`). A case's score is its mean DSC over the two spacings, since one
default serves both. Also printed: each configuration's worst case against its given boxes filled.

    python benchmarks/defaults_cross_validation.py --out /tmp/logo.jsonl [--cases ../shared/data/cases.json]
    python benchmarks/defaults_cross_validation.py --out /tmp/logo.jsonl --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from itertools import groupby

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.baselines import filled_boxes  # noqa: E402
from medsam_evaluation.cases import load_cases, modality_setting  # noqa: E402
from medsam_evaluation.cross_validation import case_group, leave_one_group_out  # noqa: E402
from medsam_evaluation.simulate import simulate_key_boxes  # noqa: E402
from medsam_evaluation.study_cli import add_study_arguments, run_study  # noqa: E402
from MedSAMSegmentLib import io, pipeline  # noqa: E402
from MedSAMSegmentLib.engine import EmbeddingCache  # noqa: E402
from MedSAMSegmentLib.metrics import dice  # noqa: E402
from MedSAMSegmentLib.models import load_model  # noqa: E402
from MedSAMSegmentLib.settings import PUBLISHED, SegmentationSettings  # noqa: E402

SPACINGS = (5, 10)
#: Each option's alternatives to the default (the default itself is the configuration "default"). The committed
#: records (docs/results/cross_validation) were made when ``slices`` defaulted to ``every``; with today's default
#: (``auto``: alternate slices when interpolating) a new run compares ``slices=alternate`` with the same thing.
ALTERNATIVES = {"mr_rule": ("published",), "zoom": ("off", "best", "size"), "guide": ("off", "union"),
                "slices": ("alternate",)}
#: Configuration name -> the accuracy options that differ from the defaults.
CONFIGS = {"default": {}, "published": dict(PUBLISHED),
           **{f"{option}={value}": {option: value} for option, values in ALTERNATIVES.items() for value in values}}


def run(cases_json: str, out: str, case_filter=None, configs=None) -> None:
    done = set()
    if os.path.exists(out):
        with open(out) as handle:
            done = {(r["case"], r["spacing"], r["config"]) for r in map(json.loads, handle)}
    model = load_model("lite", device="cpu")
    cases = sorted(load_cases(cases_json, case_filter), key=lambda case: case.image)
    for _, same_image in groupby(cases, key=lambda case: case.image):
        same_image = list(same_image)
        volume = io.read_image(same_image[0].image)
        cache = EmbeddingCache(max_memory_bytes=6 << 30)  # the cases of one image share it; dropped after
        segmenters = {}
        for case in same_image:
            reference, _ = io.read_mask(case.label, case.label_values)
            base = SegmentationSettings(modality=modality_setting(case, volume.array))
            for spacing in SPACINGS:
                keys = simulate_key_boxes(reference, case.slice_axis, spacing, margin=3)
                filled = dice(filled_boxes(reference.shape, keys), reference)
                for config, options in CONFIGS.items():
                    if (case.name, spacing, config) in done or (configs and config not in configs):
                        continue
                    settings = dataclasses.replace(base, **options)
                    if settings.mr_rule not in segmenters:
                        segmenters[settings.mr_rule] = pipeline.make_segmenter(
                            model, volume.array, case.slice_axis, settings, cache=cache, is_colour=volume.is_colour)
                    started = time.perf_counter()
                    result = segmenters[settings.mr_rule].segment(keys, settings)
                    record = {"case": case.name, "group": case_group(case.name), "spacing": spacing,
                              "config": config, "dsc": round(dice(result.mask, reference), 5),
                              "filled_dsc": round(filled, 5), "encoded": result.encoded,
                              "seconds": round(time.perf_counter() - started, 2)}
                    with open(out, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    print(f"{case.name} every {spacing} {config}: DSC {record['dsc']:.3f} "
                          f"({record['seconds']:.1f} s)", flush=True)
            segmenters = {}  # a segmenter is per slice axis and intensity; the next case may differ


def _table_of_configs(records) -> list:
    groups = sorted({r["group"] for r in records})
    lines = ["| configuration | " + " | ".join(f"every {s}" for s in SPACINGS) + " | "
             + " | ".join(f"{g} (5 / 10)" for g in groups) + " | worst case minus boxes filled (every 5) |",
             "| --- | " + " | ".join("---:" for _ in [*SPACINGS, *groups]) + " | --- |"]
    for config in CONFIGS:
        mine = [r for r in records if r["config"] == config]
        cells = [f"{statistics.mean(r['dsc'] for r in mine if r['spacing'] == s):.4f}" for s in SPACINGS]
        for group in groups:
            means = [statistics.mean(r["dsc"] for r in mine if r["group"] == group and r["spacing"] == s)
                     for s in SPACINGS]
            cells.append(" / ".join(f"{mean:.3f}" for mean in means))
        worst = min((r for r in mine if r["spacing"] == 5), key=lambda r: r["dsc"] - r["filled_dsc"])
        cells.append(f"{worst['dsc'] - worst['filled_dsc']:+.3f} ({worst['case']})")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return lines


def _scores(records, configs, spacings=SPACINGS) -> dict:
    """{config: {case: mean DSC over ``spacings``}} for ``configs``, in their order."""
    by = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["config"] in configs and r["spacing"] in spacings:
            by[r["config"]][r["case"]].append(r["dsc"])
    return {config: {case: statistics.mean(v) for case, v in by[config].items()} for config in configs}


def _cross_validation_lines(title: str, scores: dict) -> list:
    result = leave_one_group_out(scores)
    lines = [f"**{title}**: the whole set chooses `{result.whole_set_choice}` ({result.whole_set_mean:.4f}); "
             f"chosen without each group, the held-out groups get {result.held_out_mean:.4f} against "
             f"{result.reference_mean:.4f} with `default`; "
             + ("the choice holds in every fold." if result.generalises else "the choice does NOT hold in every fold."),
             "", "| held-out group | cases | chosen by the other groups | held out, chosen | held out, default | "
             "worst case change |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for fold in result.folds:
        lines.append(f"| {fold.group} | {fold.cases} | `{fold.chosen}` | {fold.held_out_mean:.4f} | "
                     f"{fold.reference_mean:.4f} | {fold.worst_case_change:+.4f} |")
    return lines + [""]


def report(out: str) -> str:
    with open(out) as handle:
        records = [json.loads(line) for line in handle]
    complete = {case for case in {r["case"] for r in records}
                if sum(r["case"] == case for r in records) == len(CONFIGS) * len(SPACINGS)}
    records = [r for r in records if r["case"] in complete]
    lines = [f"{len(complete)} cases, DSC (mean over cases)", ""] + _table_of_configs(records) + [""]
    for option, values in ALTERNATIVES.items():
        configs = ["default"] + [f"{option}={value}" for value in values]
        for spacings, label in ((SPACINGS, "every 5 and 10"), ((5,), "every 5"), ((10,), "every 10")):
            lines += _cross_validation_lines(f"{option} ({label})", _scores(records, configs, spacings))
    lines += _cross_validation_lines("all configurations (every 5 and 10)", _scores(records, list(CONFIGS)))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--config", nargs="+", choices=list(CONFIGS), help="run only these configurations")
    args = parser.parse_args()
    return run_study(args, lambda cases_json: run(cases_json, args.out, args.case, args.config), report)


if __name__ == "__main__":
    sys.exit(main())
