"""The corrections protocol: the simulated annotator corrects the k worst slices of a run, then Refine from my
edits re-segments the others.

After the first run the annotator replaces the ``k`` slices with the lowest DSC against the reference (among the
slices the run segmented) by the reference, as an expert correcting the worst slices would. The score is the DSC
of the *untouched* slices (every slice but the corrected ones, over the whole volume) before and after the
refinement, so the corrected slices themselves never count.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from MedSAMSegmentLib.engine import SegmentationResult, VolumeSegmenter
from MedSAMSegmentLib.geometry import KeyBoxSet, take_slice
from MedSAMSegmentLib.metrics import dice, per_slice_dice
from MedSAMSegmentLib.refinement import MIN_CORRECTED, RefineSettings, refine_from_corrections
from MedSAMSegmentLib.settings import SegmentationSettings


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
    confident-slice check reads, so that its thresholds can be studied without running again). With fewer than
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
                       agreement={i: float(agreement[i]) for i in untouched})
        rows.append(row)
    return rows
