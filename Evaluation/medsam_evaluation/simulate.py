"""A simulated annotator: key boxes (and contours) drawn from a reference mask, for the evaluation.

The annotator works along ``slice_axis``. With key-slice spacing ``N`` they draw a box on every N-th slice from
the first to the last slice holding the target, and always on the last one. Each box is that slice's mask
bounding box plus ``margin`` pixels, optionally grown further by a random 0..``jitter`` pixels on each side
(independently per side, as MedSAM's training jittered its boxes), drawn from a seeded generator so that runs
are reproducible, and clipped to the slice.

A key slice without target voxels (a target with a gap along the slice axis) moves to the nearest slice that
holds the target and is not already a key slice; the annotator would not draw a box on nothing.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from MedSAMSegmentLib.geometry import Box, KeyBox, KeyBoxSet, box_from_mask, check_axis, slice_shape, take_slice

DEFAULT_MARGIN = 3.0


def target_slices(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """Sorted indices of the slices along ``slice_axis`` that hold at least one target voxel."""
    check_axis(slice_axis)
    other = tuple(a for a in range(mask.ndim) if a != slice_axis)
    return np.flatnonzero(np.asarray(mask).astype(bool).any(axis=other))


def key_slice_indices(first: int, last: int, spacing: int) -> List[int]:
    """``first, first + N, ...`` up to ``last``, with ``last`` always included."""
    if spacing < 1:
        raise ValueError(f"key-slice spacing must be at least 1, got {spacing}")
    if last < first:
        raise ValueError(f"last slice {last} comes before first slice {first}")
    indices = list(range(first, last + 1, spacing))
    if indices[-1] != last:
        indices.append(last)
    return indices


def choose_key_slices(mask: np.ndarray, slice_axis: int, spacing: int) -> List[int]:
    """The key slices the annotator draws on (see the module docstring), sorted."""
    present = target_slices(mask, slice_axis)
    if present.size == 0:
        raise ValueError("the reference mask is empty: there is nothing to draw boxes on")
    present_set = set(int(s) for s in present)
    chosen: List[int] = []
    for s in key_slice_indices(int(present[0]), int(present[-1]), spacing):
        if s not in present_set:
            candidates = [p for p in present if int(p) not in chosen]
            if not candidates:
                continue
            s = int(min(candidates, key=lambda p: (abs(int(p) - s), int(p))))
        if s not in chosen:
            chosen.append(s)
    return sorted(chosen)


def jitter_box(
    box: Sequence[float], jitter: float, rng: np.random.Generator, shape_2d: Optional[tuple] = None
) -> Box:
    """Grow each side of ``box`` outwards by an independent random integer 0..``jitter`` pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if jitter > 0:
        shifts = rng.integers(0, int(jitter) + 1, size=4)
        x0, y0, x1, y1 = x0 - shifts[0], y0 - shifts[1], x1 + shifts[2], y1 + shifts[3]
    if shape_2d is not None:
        rows, cols = shape_2d
        x0, y0 = max(x0, 0.0), max(y0, 0.0)
        x1, y1 = min(x1, cols - 1.0), min(y1, rows - 1.0)
    return (x0, y0, x1, y1)


def annotator_box(
    mask_2d: np.ndarray, margin: float = DEFAULT_MARGIN, jitter: float = 0, rng: Optional[np.random.Generator] = None
) -> Optional[Box]:
    """The box an annotator draws on one slice: mask bbox + margin (+ jitter), clipped; None if empty."""
    box = box_from_mask(mask_2d, 0.0)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    box = (x0 - margin, y0 - margin, x1 + margin, y1 + margin)
    if jitter > 0 and rng is None:
        raise ValueError("jitter needs a random generator (pass rng or use simulate_key_boxes(seed=...))")
    return jitter_box(box, jitter if rng is not None else 0, rng, mask_2d.shape)


def simulate_key_boxes(
    mask: np.ndarray,
    slice_axis: int,
    spacing: int,
    margin: float = DEFAULT_MARGIN,
    jitter: float = 0,
    seed: Optional[int] = 0,
) -> KeyBoxSet:
    """Key boxes every ``spacing`` slices over the target, as :class:`geometry.KeyBoxSet`."""
    mask = np.asarray(mask).astype(bool)
    rng = np.random.default_rng(seed)
    boxes = []
    for s in choose_key_slices(mask, slice_axis, spacing):
        box = annotator_box(take_slice(mask, slice_axis, s), margin, jitter, rng)
        boxes.append(KeyBox(s, box, f"simulated key box, slice {s}"))
    return KeyBoxSet(slice_axis, boxes)


def every_slice_boxes(
    mask: np.ndarray, slice_axis: int, margin: float = DEFAULT_MARGIN, jitter: float = 0, seed: Optional[int] = 0
) -> KeyBoxSet:
    """A key box on every slice that holds the target (the "box on every slice" upper bound)."""
    mask = np.asarray(mask).astype(bool)
    rng = np.random.default_rng(seed)
    boxes = []
    for s in target_slices(mask, slice_axis):
        s = int(s)
        boxes.append(KeyBox(s, annotator_box(take_slice(mask, slice_axis, s), margin, jitter, rng), f"slice {s}"))
    return KeyBoxSet(slice_axis, boxes)


def tight_boxes(mask: np.ndarray, slice_axis: int) -> Dict[int, Box]:
    """Each target slice's own mask bounding box (no margin): what a perfect annotator would draw."""
    mask = np.asarray(mask).astype(bool)
    out: Dict[int, Box] = {}
    for s in target_slices(mask, slice_axis):
        out[int(s)] = box_from_mask(take_slice(mask, slice_axis, int(s)), 0.0)
    return out


def box_in_slice(box: Sequence[float], volume_shape: Sequence[int], slice_axis: int) -> bool:
    """Whether a box lies inside a slice of the volume."""
    rows, cols = slice_shape(volume_shape, slice_axis)
    x0, y0, x1, y1 = box
    return 0 <= x0 <= x1 <= cols - 1 and 0 <= y0 <= y1 <= rows - 1
