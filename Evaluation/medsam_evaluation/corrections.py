"""The corrections protocol: the simulated annotator corrects the k worst slices of a run, then Refine from my
edits re-segments the others.

After the first run the annotator replaces the ``k`` slices with the lowest DSC against the reference (among the
slices the run segmented) by the reference, as an expert correcting the worst slices would. The score is the DSC
of the *untouched* slices (every slice but the corrected ones, over the whole volume) before and after the
refinement, so the corrected slices themselves never count.
"""

from __future__ import annotations

import csv
import os
import statistics
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
from MedSAMSegmentLib.engine import SegmentationResult, VolumeSegmenter
from MedSAMSegmentLib.geometry import KeyBoxSet, take_slice
from MedSAMSegmentLib.learning.refinement import MIN_CORRECTED, RefineSettings, refine_from_corrections
from MedSAMSegmentLib.metrics import dice, per_slice_dice
from MedSAMSegmentLib.settings import SegmentationSettings

from .cross_validation import case_group

#: The issue's targets with two corrected slices: the weakest targets gain this much ...
WEAK_GAIN = 0.05
#: ... (targets whose untouched DSC is below this before) ...
WEAK_BELOW = 0.75
#: ... and no case loses more than this.
MOST_LOSS = 0.01


def worst_slices(mask: np.ndarray, reference: np.ndarray, slice_axis: int, slice_range, k: int) -> List[int]:
    """The ``k`` slices of ``slice_range`` (inclusive) with the lowest DSC against ``reference`` (slices empty in
    both are skipped; ties go to the lower index), in slice order."""
    scores = per_slice_dice(mask, reference, slice_axis)
    first, last = slice_range
    candidates = [i for i in range(first, last + 1)
                  if take_slice(mask, slice_axis, i).any() or take_slice(reference, slice_axis, i).any()]
    return sorted(sorted(candidates, key=lambda i: (scores[i], i))[:k])


def untouched_dice(mask: np.ndarray, reference: np.ndarray, slice_axis: int, touched: Sequence[int]) -> float:
    """DSC over every slice but ``touched``."""
    keep = np.ones(mask.shape[slice_axis], dtype=bool)
    keep[list(touched)] = False
    return dice(np.compress(keep, mask, axis=slice_axis), np.compress(keep, reference, axis=slice_axis))


def corrections_protocol(segmenter: VolumeSegmenter, key_boxes: KeyBoxSet, settings: SegmentationSettings,
                         result: SegmentationResult, reference: np.ndarray, ks: Sequence[int] = (1, 2, 3),
                         refine: Optional[RefineSettings] = None) -> List[Dict[str, object]]:
    """For each k of ``ks``: the corrected slices, the untouched slices' DSC before and after the refinement,
    whether the adapted decoder was kept (and with how many anchors), the seconds it took, and per untouched slice
    the run's predicted IoU and the DSC between the refined and the run's mask (``iou``, ``agreement``: what the
    confident-slice check reads, so that its thresholds can be studied without running again), the key slices, and
    the voxel counts of :func:`slice_overlaps` (which slices to refine can be studied the same way). With fewer than
    :data:`MIN_CORRECTED` corrected slices nothing is refined (after = before)."""
    rows = []
    for k in ks:
        touched = worst_slices(result.mask, reference, result.slice_axis, result.slice_range, k)
        before = untouched_dice(result.mask, reference, result.slice_axis, touched)
        row: Dict[str, object] = {"k": k, "corrected": touched, "before": before, "after": before,
                                  "kept": False, "seconds": 0.0}
        if len(touched) >= MIN_CORRECTED:
            corrected = {i: np.asarray(take_slice(reference, result.slice_axis, i), dtype=bool) for i in touched}
            refinement = refine_from_corrections(segmenter, key_boxes, settings, result, corrected,
                                                 refine or RefineSettings())
            untouched = [i for i in sorted(result.boxes) if i not in corrected]
            agreement = per_slice_dice(refinement.result.mask, result.mask, result.slice_axis)
            row.update(after=untouched_dice(refinement.result.mask, reference, result.slice_axis, touched),
                       kept=refinement.kept, anchors=refinement.anchors, seconds=refinement.seconds,
                       held_out=refinement.held_out, iou={i: float(result.iou.get(i, 0.0)) for i in untouched},
                       agreement={i: float(agreement[i]) for i in untouched},
                       keys=[key.slice_index for key in key_boxes.sorted()],
                       overlaps=slice_overlaps(result.mask, refinement.result.mask, reference, result.slice_axis,
                                               touched))
        rows.append(row)
    return rows


def slice_overlaps(before: np.ndarray, after: np.ndarray, reference: np.ndarray, slice_axis: int,
                   touched: Sequence[int]) -> Dict[int, List[int]]:
    """Per slice but ``touched`` that holds any voxel of ``before``, ``after`` or ``reference``: [voxels of
    ``before`` in ``reference``, of ``before``, of ``after`` in ``reference``, of ``after``, of ``reference``].
    From these the untouched DSC of any choice of refined slices follows (:func:`pooled_dice`) without running
    again."""
    counts = {}
    for i in range(before.shape[slice_axis]):
        if i in touched:
            continue
        b, a, r = (np.asarray(take_slice(v, slice_axis, i), dtype=bool) for v in (before, after, reference))
        if b.any() or a.any() or r.any():
            counts[i] = [int((b & r).sum()), int(b.sum()), int((a & r).sum()), int(a.sum()), int(r.sum())]
    return counts


def pooled_dice(overlaps: Mapping[int, Sequence[int]], refined: Iterable[int]) -> float:
    """The untouched DSC (:func:`untouched_dice`) when the slices ``refined`` take the refinement's masks and every
    other slice keeps the run's, from the counts of :func:`slice_overlaps` (1.0 when all are empty)."""
    refined = set(refined)
    inside = masks = truth = 0
    for i, (inside_before, before, inside_after, after, reference) in overlaps.items():
        chosen = i in refined
        inside += inside_after if chosen else inside_before
        masks += after if chosen else before
        truth += reference
    return 1.0 if masks + truth == 0 else 2.0 * inside / (masks + truth)


@dataclass(frozen=True)
class CorrectionRow:
    """One case, spacing and k of ``evaluate --corrections``: the corrected slices, the untouched slices' DSC
    before and after Refine from my edits, whether the adapted decoder was kept, and the refinement's seconds."""

    case: str
    group: str
    spacing: int
    k: int
    corrected: str  # the corrected slices, separated by spaces
    before: float
    after: float
    kept: bool
    seconds: float


def correction_rows(case: str, spacing: int, segmenter: VolumeSegmenter, key_boxes: KeyBoxSet,
                    settings: SegmentationSettings, reference: np.ndarray, ks: Sequence[int]) -> List[CorrectionRow]:
    """Run ``key_boxes`` with ``settings`` (interpolating), then :func:`corrections_protocol` for each k."""
    result = segmenter.segment(key_boxes, settings.with_strategy("interpolate"))
    rows = corrections_protocol(segmenter, key_boxes, settings.with_strategy("interpolate"), result, reference, ks)
    return [CorrectionRow(case, case_group(case), spacing, int(r["k"]), " ".join(map(str, r["corrected"])),
                          float(r["before"]), float(r["after"]), bool(r["kept"]), float(r["seconds"]))
            for r in rows]


def target_lines(before: Dict[str, float], after: Dict[str, float]) -> List[str]:
    """Whether ``after`` (untouched DSC per case) meets the issue's targets against ``before``."""
    changes = {c: after[c] - before[c] for c in before}
    worst = min(changes, key=changes.get)
    weak = [c for c in before if before[c] < WEAK_BELOW]
    lines = [f"mean change {statistics.mean(changes.values()):+.4f} over {len(changes)} cases; largest loss "
             f"{changes[worst]:+.4f} ({worst}): no case lower by more than {MOST_LOSS}: "
             f"{'met' if changes[worst] >= -MOST_LOSS else 'not met'}"]
    if weak:
        gain = statistics.mean(changes[c] for c in weak)
        lines.append(f"weakest targets (untouched DSC below {WEAK_BELOW} before: {', '.join(sorted(weak))}): mean "
                     f"change {gain:+.4f} (target {WEAK_GAIN:+.2f}: {'met' if gain >= WEAK_GAIN else 'not met'})")
    return lines


def write_corrections(rows: Sequence[CorrectionRow], out_dir: str) -> List[str]:
    """Write ``corrections.csv`` (every row) and ``corrections.md`` (per case, per group, the targets) into
    ``out_dir``; returns their paths."""
    csv_path, md_path = os.path.join(out_dir, "corrections.csv"), os.path.join(out_dir, "corrections.md")
    fields = list(CorrectionRow.__dataclass_fields__)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**asdict(row), "before": f"{row.before:.4f}", "after": f"{row.after:.4f}",
                             "seconds": f"{row.seconds:.1f}"})
    lines = ["# Corrections protocol: the k worst slices replaced by the reference, then Refine from my edits", "",
             "DSC of the untouched slices (every slice but the corrected ones) before and after the refinement.", ""]
    for spacing in sorted({r.spacing for r in rows}):
        for k in sorted({r.k for r in rows if r.spacing == spacing}):
            chosen = [r for r in rows if r.spacing == spacing and r.k == k]
            lines += [f"## Key boxes every {spacing} slices, {k} corrected slice{'s' if k > 1 else ''}", "",
                      "| case | group | corrected | before | after | change | adapted decoder | s |",
                      "| --- | --- | --- | ---: | ---: | ---: | --- | ---: |"]
            lines += [f"| {r.case} | {r.group} | {r.corrected} | {r.before:.4f} | {r.after:.4f} | "
                      f"{r.after - r.before:+.4f} | {'kept' if r.kept else 'not kept'} | {r.seconds:.1f} |"
                      for r in chosen]
            lines += ["", "| group | cases | before | after | change | kept |",
                      "| --- | ---: | ---: | ---: | ---: | ---: |"]
            for group in sorted({r.group for r in chosen}) + ["all"]:
                members = [r for r in chosen if group in ("all", r.group)]
                before = statistics.mean(r.before for r in members)
                after = statistics.mean(r.after for r in members)
                lines.append(f"| {group} | {len(members)} | {before:.4f} | {after:.4f} | {after - before:+.4f} | "
                             f"{sum(r.kept for r in members)} |")
            if k >= MIN_CORRECTED:
                lines += [""] + [f"- {line}" for line in target_lines({r.case: r.before for r in chosen},
                                                                      {r.case: r.after for r in chosen})]
            lines.append("")
    with open(md_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return [csv_path, md_path]
