"""The worst slices of a run, cropped around the target for the montage (:func:`plots.plot_worst_slices`)."""

from __future__ import annotations

from typing import List

import numpy as np
from MedSAMSegmentLib import metrics
from MedSAMSegmentLib.engine import Crop, shift_box
from MedSAMSegmentLib.geometry import take_slice

from .records import WorstSlice


def worst_slices(case_name, method, spacing, volume_u8, reference, mask, axis, boxes, per_case=2) -> List[WorstSlice]:
    """The ``per_case`` worst slices (by DSC) among those where reference or prediction is non-empty."""
    if volume_u8 is None:
        return []
    per_slice = metrics.per_slice_dice(mask, reference, axis)
    other = tuple(a for a in range(3) if a != axis)
    involved = np.flatnonzero(reference.any(axis=other) | mask.any(axis=other))
    order = sorted(involved.tolist(), key=lambda s: per_slice[s])[:per_case]
    out = []
    for s in order:
        ref2 = take_slice(reference, axis, s)
        pred2 = take_slice(mask, axis, s)
        img2 = take_slice(volume_u8, axis, s)
        box = boxes.get(s)
        region = crop_region(ref2 | pred2, box, img2.shape[:2])
        out.append(WorstSlice(float(per_slice[s]), case_name, method, spacing, int(s), img2[region].copy(),
                              ref2[region].copy(), pred2[region].copy(),
                              None if box is None else shift_box(box, Crop.from_slices(*region))))
    return out


def crop_region(mask2d, box, shape, pad=20):
    """A square ``(rows, columns)`` region around ``mask2d`` and ``box`` with ``pad`` pixels, inside ``shape``."""
    rows = np.flatnonzero(mask2d.any(axis=1))
    cols = np.flatnonzero(mask2d.any(axis=0))
    r0, r1 = (rows[0], rows[-1]) if rows.size else (0, shape[0] - 1)
    c0, c1 = (cols[0], cols[-1]) if cols.size else (0, shape[1] - 1)
    if box is not None:
        c0, r0 = min(c0, int(box[0])), min(r0, int(box[1]))
        c1, r1 = max(c1, int(np.ceil(box[2]))), max(r1, int(np.ceil(box[3])))
    size = max(r1 - r0, c1 - c0) + 2 * pad
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    r0, c0 = max(rc - size // 2, 0), max(cc - size // 2, 0)
    return slice(r0, min(r0 + size, shape[0])), slice(c0, min(c0 + size, shape[1]))
