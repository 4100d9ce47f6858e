"""Study: read every second slice inside long targets (``--slices alternate``) against every slice.

For each development case (key boxes every ``--spacing`` slices from the reference, +3 px, the command line's
defaults, real LiteMedSAM on the CPU), two runs from an empty cache: ``--slices every`` and ``--slices alternate``
(every second slice read in targets of 10 or more slices, the others filled halfway between their neighbours'
masks, the model reading those where that is no safe guess). Prints per case the DSC of both, the difference, the
views encoded and the seconds of each run, then the means by case group and over all cases. For comparison, the
column "ITK fill" keeps the every-slice run's own masks on the slices an alternate run reads and fills the others
by ITK's morphological contour interpolation (as the contour baseline and Slicer's "Fill between slices" do): the
optimistic case, since it keeps masks guided from neighbours one slice away. The issue's rule: an option only if
the mean stays within 0.005 of every slice.

    python benchmarks/every_second_slice_study.py [--cases ../shared/data/cases.json] [--case 'brats*']
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import statistics
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.baselines import contours_interpolated  # noqa: E402
from medsam_evaluation.cases import default_cases_json, load_cases, modality_setting  # noqa: E402
from medsam_evaluation.cross_validation import case_group, leave_one_group_out  # noqa: E402
from medsam_evaluation.simulate import simulate_key_boxes  # noqa: E402
from MedSAMSegmentLib import io, pipeline  # noqa: E402
from MedSAMSegmentLib.engine import EmbeddingCache  # noqa: E402
from MedSAMSegmentLib.metrics import dice  # noqa: E402
from MedSAMSegmentLib.models import load_model  # noqa: E402
from MedSAMSegmentLib.settings import SegmentationSettings  # noqa: E402

#: The rule of the issue: the mean DSC may fall by at most this much.
TOLERANCE = 0.005


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=None)
    parser.add_argument("--case", default="*", help="only the cases whose name matches this pattern")
    parser.add_argument("--spacing", type=int, default=5)
    args = parser.parse_args()
    cases_json = default_cases_json(args.cases)
    if not cases_json:
        print("no development set found; give --cases", file=sys.stderr)
        return 2
    model = load_model("lite", device="cpu")
    print("| case | slices | DSC every slice | DSC alternate | difference | DSC ITK fill | views encoded "
          "(every / alternate) | s (every / alternate) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    every_scores, alternate_scores, groups = [], [], defaultdict(list)
    scores = {"every": {}, "alternate": {}}
    encoded = {"every": 0, "alternate": 0}
    seconds = {"every": [], "alternate": []}
    for case in load_cases(cases_json):
        if not fnmatch.fnmatch(case.name, args.case):
            continue
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        keys = simulate_key_boxes(reference, case.slice_axis, args.spacing, margin=3)
        results = {}
        for slices in ("every", "alternate"):
            settings = SegmentationSettings(modality=modality_setting(case, image.array), slices=slices)
            started = time.perf_counter()
            results[slices] = pipeline.run_segmentation(model, image.array, keys, settings, cache=EmbeddingCache())
            seconds[slices].append(time.perf_counter() - started)
            encoded[slices] += results[slices].encoded
        every, alternate = results["every"], results["alternate"]
        first, last = every.slice_range
        read = sorted(set(range(first, last + 1)) - set(alternate.filled))
        itk = contours_interpolated(every.mask, case.slice_axis, read) if alternate.filled else every.mask
        every_dsc, alternate_dsc = dice(every.mask, reference), dice(alternate.mask, reference)
        every_scores.append(every_dsc)
        alternate_scores.append(alternate_dsc)
        groups[case_group(case.name)].append(alternate_dsc - every_dsc)
        scores["every"][case.name], scores["alternate"][case.name] = every_dsc, alternate_dsc
        print(f"| {case.name} | {last - first + 1} | {every_dsc:.3f} | {alternate_dsc:.3f} | "
              f"{alternate_dsc - every_dsc:+.4f} | {dice(itk, reference):.3f} | {every.encoded} / "
              f"{alternate.encoded} | {seconds['every'][-1]:.1f} / {seconds['alternate'][-1]:.1f} |", flush=True)
    if not every_scores:
        print(f"no case matches {args.case!r}", file=sys.stderr)
        return 2
    mean_every, mean_alternate = statistics.mean(every_scores), statistics.mean(alternate_scores)
    print(f"| **mean** | | **{mean_every:.4f}** | **{mean_alternate:.4f}** | **{mean_alternate - mean_every:+.4f}** "
          f"| | {encoded['every']} / {encoded['alternate']} | median {statistics.median(seconds['every']):.1f} / "
          f"{statistics.median(seconds['alternate']):.1f} |")
    print()
    for group, differences in sorted(groups.items()):
        print(f"- {group}: mean difference {statistics.mean(differences):+.4f} over {len(differences)} cases, "
              f"worst {min(differences):+.4f}")
    print("\nLeave one group out (the choice made without the group, judged on it):")
    for fold in leave_one_group_out(scores).folds:
        print(f"- {fold.group} held out: the other groups choose {fold.chosen}; on {fold.group} that gives "
              f"{fold.held_out_mean - fold.reference_mean:+.4f} (worst case {fold.worst_case_change:+.4f})")
    ratios = [a / e for a, e in zip(seconds["alternate"], seconds["every"])]
    print(f"\nViews encoded: {encoded['alternate']} of {encoded['every']} "
          f"({1 - encoded['alternate'] / encoded['every']:.0%} fewer); run time, median ratio alternate/every "
          f"{statistics.median(ratios):.2f}.")
    verdict = "within" if mean_every - mean_alternate <= TOLERANCE else "outside"
    print(f"The mean moved by {mean_alternate - mean_every:+.4f}: {verdict} the {TOLERANCE} tolerance.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
