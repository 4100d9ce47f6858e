"""Study: may each accuracy option depart from MedSAM's published behaviour? (leave one group out, issue 35)

For each development case (key boxes every 5 and every 10 slices from the reference, +3 px, as ``evaluate``
simulates them; real LiteMedSAM on the CPU; ``interpolate``), each configuration below runs through the same
segmenter, so configurations share the embeddings they have in common: the published behaviour, each option's
alternatives one at a time on top of it, and today's defaults. The records go to a JSON-lines file, one per case,
spacing and configuration, keyed by the configuration's settings (a rerun skips what is there; ``--max-minutes``
runs it in pieces: docs/evaluation.md, "Long runs in pieces"). Then each option is judged by the rule of
:mod:`medsam_evaluation.default_rule` across the case groups (a case's ``group`` in its cases.json, else its name's
prefix), at each spacing, and the leave-one-group-out folds are printed beside the whole-set means.

    python benchmarks/defaults_cross_validation.py --out /tmp/logo.jsonl \
        --cases ../shared/data/cases.json Evaluation/devset/cases.json      # the wider set
    python benchmarks/defaults_cross_validation.py --out /tmp/logo.jsonl --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.baselines import filled_boxes  # noqa: E402
from medsam_evaluation.cases import load_cases, modality_setting  # noqa: E402
from medsam_evaluation.cross_validation import leave_one_group_out  # noqa: E402
from medsam_evaluation.default_rule import check_spacing, judge_option, verdict_table  # noqa: E402
from medsam_evaluation.resumable import (  # noqa: E402
    CaseLoop,
    CaseRecords,
    Piece,
    case_fingerprint,
    model_fingerprint,
    settings_digest,
)
from medsam_evaluation.simulate import simulate_key_boxes  # noqa: E402
from medsam_evaluation.study_cli import add_study_arguments, run_study, study_report  # noqa: E402
from MedSAMSegmentLib import io, pipeline  # noqa: E402
from MedSAMSegmentLib.engine import EmbeddingCache  # noqa: E402
from MedSAMSegmentLib.metrics import dice  # noqa: E402
from MedSAMSegmentLib.settings import PUBLISHED, ModelSettings, SegmentationSettings  # noqa: E402

SPACINGS = (5, 10)
#: Each option's alternatives to its published value (``PUBLISHED``), each tried alone on top of the published
#: behaviour. (The records under docs/results/cross_validation were made by the study before this one, which varied
#: each option from the defaults of 2026-11-30; ``--all-settings`` reports them with that study's configurations.)
ALTERNATIVES = {"mr_rule": ("auto",), "zoom": ("union", "best", "size", "auto"), "guide": ("auto", "union"),
                "slices": ("alternate",), "box_sizes": ("rounded",)}
#: Configuration name -> its accuracy options: the published behaviour, one departure from it each, and the
#: defaults of the checkout (``SegmentationSettings()``), reported beside them.
CONFIGS = {"published": dict(PUBLISHED),
           **{f"{option}={value}": {**PUBLISHED, option: value} for option, values in ALTERNATIVES.items()
              for value in values},
           "default": SegmentationSettings().accuracy()}


#: The model every configuration runs, and the annotator's margin.
MODEL = ModelSettings(model="lite", device="cpu")
MARGIN = 3


def config_digests() -> dict:
    """{configuration: the settings digest of its records}: its accuracy options, the model, the margin."""
    model = model_fingerprint(MODEL)
    return {config: settings_digest({"study": "defaults_cross_validation", "model": model, "margin": MARGIN,
                                     "settings": SegmentationSettings(**options)})
            for config, options in CONFIGS.items()}


def record_key(case, spacing: int, config: str) -> list:
    return [case.name, settings_digest(case_fingerprint(case)), spacing, config]


def run(cases_json: str, out: str, piece: Piece, case_filter=None, configs=None, cache_folder=None) -> int:
    """Run the cases of ``cases_json`` not recorded in ``out``; returns the cases left when ``piece`` stopped.

    ``cache_folder`` keeps the embeddings on disk (:class:`EmbeddingCache`), so a configuration added later costs
    the views it does not share with those run before only."""
    records, digests = CaseRecords(out), config_digests()
    chosen = [config for config in CONFIGS if not configs or config in configs]
    loop = CaseLoop(sorted(load_cases(cases_json, case_filter), key=lambda case: case.image), piece,
                    lambda case: all(records.get(digests[c], record_key(case, s, c)) for s in SPACINGS for c in chosen),
                    where=out)
    from MedSAMSegmentLib.models import load_from_settings
    model = load_from_settings(MODEL) if loop.todo else None
    image = volume = cache = None
    for case in loop:
        if case.image != image:  # the cases of one image share its cache; dropped after
            image, volume = case.image, io.read_image(case.image)
            cache = EmbeddingCache(cache_folder, max_memory_bytes=(1 if cache_folder else 6) << 30)
        segmenters = {}  # a segmenter is per slice axis and intensity; the next case may differ
        reference, _ = io.read_mask(case.label, case.label_values)
        base = SegmentationSettings(modality=modality_setting(case, volume.array))
        for spacing in SPACINGS:
            keys = simulate_key_boxes(reference, case.slice_axis, spacing, margin=MARGIN)
            filled = dice(filled_boxes(reference.shape, keys), reference)
            for config in chosen:
                if records.get(digests[config], record_key(case, spacing, config)):
                    continue
                settings = dataclasses.replace(base, **CONFIGS[config])
                if settings.mr_rule not in segmenters:
                    segmenters[settings.mr_rule] = pipeline.make_segmenter(
                        model, volume.array, case.slice_axis, settings, cache=cache, is_colour=volume.is_colour)
                started = time.perf_counter()
                result = segmenters[settings.mr_rule].segment(keys, settings)
                record = records.add(digests[config], record_key(case, spacing, config), {
                    "case": case.name, "group": case.group, "spacing": spacing, "config": config,
                    "dsc": round(dice(result.mask, reference), 5), "filled_dsc": round(filled, 5),
                    "encoded": result.encoded, "seconds": round(time.perf_counter() - started, 2)})
                print(f"{case.name} every {spacing} {config}: DSC {record['dsc']:.3f} ({record['seconds']:.1f} s)",
                      flush=True)
    return loop.left


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


def _groups(records) -> dict:
    return {r["case"]: r["group"] for r in records}


def _cross_validation_lines(title: str, scores: dict, groups: dict) -> list:
    result = leave_one_group_out(scores, groups)
    reference = next(iter(scores))
    lines = [f"**{title}**: the whole set chooses `{result.whole_set_choice}` ({result.whole_set_mean:.4f}); "
             f"chosen without each group, the held-out groups get {result.held_out_mean:.4f} against "
             f"{result.reference_mean:.4f} with `{reference}`",
             "", f"| held-out group | cases | chosen by the other groups | held out, chosen | held out, {reference} | "
             "worst case change |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for fold in result.folds:
        lines.append(f"| {fold.group} | {fold.cases} | `{fold.chosen}` | {fold.held_out_mean:.4f} | "
                     f"{fold.reference_mean:.4f} | {fold.worst_case_change:+.4f} |")
    return lines + [""]


def verdicts(records: list) -> list:
    """Each option's :class:`medsam_evaluation.default_rule.Verdict` from complete ``records``."""
    groups = _groups(records)
    return [judge_option(option, {s: _scores(records, ["published"] + [f"{option}={v}" for v in values], (s,))
                                  for s in SPACINGS}, groups)
            for option, values in ALTERNATIVES.items()]


def departure_lines(records: list) -> list:
    """Markdown lines: every departure judged by the rule on its own, against the published value alone (the
    verdicts above judge each option's best departure against all of its values)."""
    groups = _groups(records)
    lines = ["| departure | every | folds choosing it | whole set change | worst held-out group change | worst case "
             "change | verdict |", "| --- | ---: | ---: | ---: | --- | --- | --- |"]
    for option, values in ALTERNATIVES.items():
        for value in values:
            candidate = f"{option}={value}"
            for spacing in SPACINGS:
                check = check_spacing(spacing, _scores(records, ["published", candidate], (spacing,)), candidate,
                                      groups)
                lines.append(f"| `{candidate}` | {spacing} | {check.folds_choosing}/{check.folds} | "
                             f"{check.whole_set_change:+.4f} | {check.worst_group} {check.worst_group_change:+.4f} | "
                             f"{check.worst_case} {check.worst_case_change:+.3f} | {check.outcome} |")
    return lines


def complete_records(records: list) -> list:
    """The ``records`` of the cases that have one for every configuration and spacing, each made with its
    configuration's settings today (a configuration such as ``default`` whose settings changed keeps its earlier
    records in the file, under another digest)."""
    digests = config_digests()
    records = [r for r in records if r.get("settings") in (None, digests.get(r["config"]))]
    complete = {case for case in {r["case"] for r in records}
                if sum(r["case"] == case for r in records) == len(CONFIGS) * len(SPACINGS)}
    return [r for r in records if r["case"] in complete]


def report(records: list) -> str:
    """The tables of ``records`` (:func:`medsam_evaluation.study_cli.study_records`)."""
    records = complete_records(records)
    complete = {r["case"] for r in records}
    groups = _groups(records)
    lines = [f"{len(complete)} cases in {len(set(groups.values()))} groups, DSC (mean over cases)", ""]
    lines += _table_of_configs(records) + ["", "The rule (medsam_evaluation/default_rule.py), each option's best "
                                           "departure from the published value:", ""]
    lines += verdict_table(verdicts(records)) + [""]
    lines += ["Every departure on its own against the published value:", ""] + departure_lines(records) + [""]
    for option, values in ALTERNATIVES.items():
        configs = ["published"] + [f"{option}={value}" for value in values]
        for spacing in SPACINGS:
            lines += _cross_validation_lines(f"{option} (every {spacing})", _scores(records, configs, (spacing,)),
                                             groups)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--config", nargs="+", choices=list(CONFIGS), help="run only these configurations")
    parser.add_argument("--cache", metavar="FOLDER", help="keep the embeddings in this folder between runs "
                        "(about 4 MiB a slice view; default: in memory, per image)")
    args = parser.parse_args()
    return run_study(args, lambda cases_json, piece: run(cases_json, args.out, piece, args.case, args.config,
                                                         args.cache),
                     study_report(report, lambda: config_digests().values(), args.all_settings))


if __name__ == "__main__":
    sys.exit(main())
