"""Study: encode every second slice inside long targets and fill the others by morphological contour interpolation?

For each development case (key boxes every ``--spacing`` slices from the reference, +3 px, the command line's
defaults, real LiteMedSAM on the CPU): the full run's mask, then the same mask kept only on the key slices and every
second slice from the first key slice, the others filled by ITK's morphological contour interpolation (as the
contour baseline and Slicer's "Fill between slices" do). Targets whose key slices span fewer than ``--min-length``
slices are left as they are. Prints per-case DSC (full, every second), the difference, the slice views a run would
not encode, and the means by case group and over all cases; the issue's rule is to adopt it only if the mean stays
within 0.005 of the full run.

The kept slices' masks are the full run's own. With ``guide`` on, a run that decodes only every second slice would
guide its boxes from masks two slices apart instead of one, so for the guided default this study is the optimistic
case; with ``--guide off`` it is exact.

    python benchmarks/every_second_slice_study.py [--cases ../shared/data/cases.json] [--guide off]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.baselines import contours_interpolated  # noqa: E402
from medsam_evaluation.cases import default_cases_json, load_cases, modality_setting  # noqa: E402
from medsam_evaluation.simulate import simulate_key_boxes  # noqa: E402
from MedSAMSegmentLib import io, pipeline  # noqa: E402
from MedSAMSegmentLib.engine import EmbeddingCache  # noqa: E402
from MedSAMSegmentLib.metrics import dice  # noqa: E402
from MedSAMSegmentLib.models import load_model  # noqa: E402
from MedSAMSegmentLib.settings import SegmentationSettings  # noqa: E402

#: The rule of the issue: the mean DSC may fall by at most this much.
TOLERANCE = 0.005


def kept_slices(key_slices, first: int, last: int) -> list:
    """Key slices and every second slice from ``first``."""
    return sorted(set(key_slices) | set(range(first, last + 1, 2)))


def group_of(name: str) -> str:
    return name.split("_")[0] if not name.startswith("ct_lesion") else "ct_lesion"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=None)
    parser.add_argument("--spacing", type=int, default=5)
    parser.add_argument("--min-length", type=int, default=10)
    parser.add_argument("--guide", default=None, help="override the guide setting (default: the command line's)")
    args = parser.parse_args()
    cases_json = default_cases_json(args.cases)
    if not cases_json:
        print("no development set found; give --cases", file=sys.stderr)
        return 2
    model = load_model("lite", device="cpu")
    print("| case | slices | DSC every slice | DSC every second | difference | views not encoded |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    full_scores, half_scores, groups = [], [], defaultdict(list)
    saved_total, encoded_total = 0, 0
    for case in load_cases(cases_json):
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        keys = simulate_key_boxes(reference, case.slice_axis, args.spacing, margin=3)
        options = {"guide": args.guide} if args.guide else {}
        settings = SegmentationSettings(modality=modality_setting(case, image.array), **options)
        result = pipeline.run_segmentation(model, image.array, keys, settings, cache=EmbeddingCache())
        first, last = result.slice_range
        key_slices = [k.slice_index for k in keys.boxes]
        if last - first + 1 >= args.min_length:
            kept = kept_slices(key_slices, first, last)
            half = contours_interpolated(result.mask, case.slice_axis, kept)
            dropped = (last - first + 1) - len(kept)
            saved = round(result.encoded * dropped / (last - first + 1))
        else:
            half, saved = result.mask, 0
        full_dsc, half_dsc = dice(result.mask, reference), dice(half, reference)
        full_scores.append(full_dsc)
        half_scores.append(half_dsc)
        groups[group_of(case.name)].append(half_dsc - full_dsc)
        saved_total += saved
        encoded_total += result.encoded
        print(f"| {case.name} | {last - first + 1} | {full_dsc:.3f} | {half_dsc:.3f} | {half_dsc - full_dsc:+.4f} | "
              f"{saved} of {result.encoded} |", flush=True)
    mean_full, mean_half = statistics.mean(full_scores), statistics.mean(half_scores)
    print(f"| **mean** | | **{mean_full:.4f}** | **{mean_half:.4f}** | **{mean_half - mean_full:+.4f}** | "
          f"{saved_total} of {encoded_total} |")
    print()
    for group, differences in sorted(groups.items()):
        print(f"- {group}: mean difference {statistics.mean(differences):+.4f} over {len(differences)} cases, "
              f"worst {min(differences):+.4f}")
    verdict = "within" if mean_full - mean_half <= TOLERANCE else "outside"
    print(f"\nThe mean moved by {mean_half - mean_full:+.4f}: {verdict} the {TOLERANCE} tolerance.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
