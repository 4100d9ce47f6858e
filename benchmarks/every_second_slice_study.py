"""Study: read every second slice inside long targets (``--slices alternate``) against every slice.

For each development case (key boxes every ``--spacing`` slices from the reference, +3 px, the command line's
defaults, real LiteMedSAM on the CPU), two runs from an empty cache: ``--slices every`` and ``--slices alternate``
(every second slice read in targets of 10 or more slices, the others filled halfway between their neighbours'
masks, the model reading those where that is no safe guess). Reports per case the DSC of both, the difference, the
views encoded and the seconds of each run, then the means by case group and over all cases. For comparison, the
column "ITK fill" keeps the every-slice run's own masks on the slices an alternate run reads and fills the others
by ITK's morphological contour interpolation (as the contour baseline and Slicer's "Fill between slices" do): the
optimistic case, since it keeps masks guided from neighbours one slice away. The issue's rule: an option only if
the mean stays within 0.005 of every slice.

Records go to a JSON-lines file, one per case, keyed by the study's settings (a rerun skips what is there;
``--max-minutes`` runs it in pieces: docs/evaluation.md, "Long runs in pieces").

    python benchmarks/every_second_slice_study.py --out /tmp/alternate.jsonl [--cases ../shared/data/cases.json] \\
        [--case 'brats*']
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.baselines import contours_interpolated  # noqa: E402
from medsam_evaluation.cases import load_cases, modality_setting  # noqa: E402
from medsam_evaluation.cross_validation import case_group, leave_one_group_out  # noqa: E402
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
from MedSAMSegmentLib import io  # noqa: E402
from MedSAMSegmentLib.engine import EmbeddingCache  # noqa: E402
from MedSAMSegmentLib.metrics import dice  # noqa: E402
from MedSAMSegmentLib.session import run_segmentation  # noqa: E402
from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings  # noqa: E402

#: The rule of the issue: the mean DSC may fall by at most this much.
TOLERANCE = 0.005
#: The two ways of reading the slices compared.
READS = ("every", "alternate")
#: The model the runs use, and the annotator's margin.
MODEL = ModelSettings(model="lite", device="cpu")
MARGIN = 3


def study_digest(spacing: int) -> str:
    """The settings digest of the records: both runs' settings, the model, the key boxes' spacing and margin."""
    return settings_digest({"study": "every_second_slice", "model": model_fingerprint(MODEL), "spacing": spacing,
                            "margin": MARGIN, "settings": {read: SegmentationSettings(slices=read) for read in READS}})


def record_key(case) -> list:
    return [case.name, settings_digest(case_fingerprint(case))]


def run(cases_json: str, out: str, piece: Piece, spacing: int, case_filter=None) -> int:
    """Run the cases of ``cases_json`` not recorded in ``out``; returns the cases left when ``piece`` stopped."""
    records, digest = CaseRecords(out), study_digest(spacing)
    loop = CaseLoop(load_cases(cases_json, case_filter), piece, lambda case: records.get(digest, record_key(case)),
                    where=out)
    from MedSAMSegmentLib.models import load_from_settings
    model = load_from_settings(MODEL) if loop.todo else None
    for case in loop:
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        keys = simulate_key_boxes(reference, case.slice_axis, spacing, margin=MARGIN)
        results, seconds = {}, {}
        for read in READS:
            settings = SegmentationSettings(modality=modality_setting(case, image.array), slices=read)
            started = time.perf_counter()
            results[read] = run_segmentation(model, image.array, keys, settings, cache=EmbeddingCache())
            seconds[read] = time.perf_counter() - started
        every, alternate = results["every"], results["alternate"]
        first, last = every.slice_range
        read_slices = sorted(set(range(first, last + 1)) - set(alternate.filled))
        itk = contours_interpolated(every.mask, case.slice_axis, read_slices) if alternate.filled else every.mask
        record = records.add(digest, record_key(case), {
            "case": case.name, "group": case_group(case.name), "slices": last - first + 1,
            **{f"{read}_dsc": dice(results[read].mask, reference) for read in READS},
            "itk_dsc": dice(itk, reference),
            **{f"{read}_encoded": results[read].encoded for read in READS},
            **{f"{read}_seconds": round(seconds[read], 2) for read in READS}})
        print(case_line(record), flush=True)
    return loop.left


def case_line(r: dict) -> str:
    return (f"| {r['case']} | {r['slices']} | {r['every_dsc']:.3f} | {r['alternate_dsc']:.3f} | "
            f"{r['alternate_dsc'] - r['every_dsc']:+.4f} | {r['itk_dsc']:.3f} | {r['every_encoded']} / "
            f"{r['alternate_encoded']} | {r['every_seconds']:.1f} / {r['alternate_seconds']:.1f} |")


def report(records: list) -> str:
    """The table, the means by group, the leave-one-group-out check and the verdict of ``records``."""
    lines = ["| case | slices | DSC every slice | DSC alternate | difference | DSC ITK fill | views encoded "
             "(every / alternate) | s (every / alternate) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [case_line(r) for r in records]
    mean = {read: statistics.mean(r[f"{read}_dsc"] for r in records) for read in READS}
    encoded = {read: sum(r[f"{read}_encoded"] for r in records) for read in READS}
    median_seconds = {read: statistics.median(r[f"{read}_seconds"] for r in records) for read in READS}
    lines.append(f"| **mean** | | **{mean['every']:.4f}** | **{mean['alternate']:.4f}** | "
                 f"**{mean['alternate'] - mean['every']:+.4f}** | | {encoded['every']} / {encoded['alternate']} | "
                 f"median {median_seconds['every']:.1f} / {median_seconds['alternate']:.1f} |")
    lines.append("")
    groups = defaultdict(list)
    for r in records:
        groups[r["group"]].append(r["alternate_dsc"] - r["every_dsc"])
    for group, differences in sorted(groups.items()):
        lines.append(f"- {group}: mean difference {statistics.mean(differences):+.4f} over {len(differences)} cases, "
                     f"worst {min(differences):+.4f}")
    if len(groups) > 1:
        lines.append("\nLeave one group out (the choice made without the group, judged on it):")
        scores = {read: {r["case"]: r[f"{read}_dsc"] for r in records} for read in READS}
        for fold in leave_one_group_out(scores).folds:
            lines.append(f"- {fold.group} held out: the other groups choose {fold.chosen}; on {fold.group} that "
                         f"gives {fold.held_out_mean - fold.reference_mean:+.4f} (worst case "
                         f"{fold.worst_case_change:+.4f})")
    ratios = [r["alternate_seconds"] / r["every_seconds"] for r in records]
    lines.append(f"\nViews encoded: {encoded['alternate']} of {encoded['every']} "
                 f"({1 - encoded['alternate'] / encoded['every']:.0%} fewer); run time, median ratio alternate/every "
                 f"{statistics.median(ratios):.2f}.")
    verdict = "within" if mean["every"] - mean["alternate"] <= TOLERANCE else "outside"
    lines.append(f"The mean moved by {mean['alternate'] - mean['every']:+.4f}: {verdict} the {TOLERANCE} tolerance.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--spacing", type=int, default=5, help="key boxes every N slices (default 5)")
    args = parser.parse_args()
    return run_study(args, lambda cases_json, piece: run(cases_json, args.out, piece, args.spacing, args.case),
                     study_report(report, lambda: {study_digest(args.spacing)}, args.all_settings))


if __name__ == "__main__":
    sys.exit(main())
