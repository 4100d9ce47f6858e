"""Every second slice inside long targets (``slices="alternate"``, or the default ``auto`` when interpolating):
which slices the model does not read, and how they are filled from their two neighbours' masks.

A filled slice lies halfway between two slices the model read, so its mask is the shape halfway between theirs:
the zero level of the mean of their signed distance maps (shape-based interpolation). Where that is not safe (a
neighbour's mask is empty, or the two masks do not overlap) the model reads the slice after all.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set

import numpy as np

from ..geometry import Box
from ..settings import SegmentationSettings

#: Targets spanning fewer slices than this (first to last key slice, inclusive) are read on every slice.
MIN_TARGET_SLICES = 10


def skipped_slices(key_slices: Sequence[int], settings: SegmentationSettings) -> Set[int]:
    """The slices an ``alternate`` run leaves to filling: between the first and last key slice, those an odd number
    of slices after the first that are not key slices. None unless ``settings.reads_alternate``, or for a target
    spanning fewer than :data:`MIN_TARGET_SLICES`. Both neighbours of a skipped slice are read by the model."""
    if not settings.reads_alternate or not key_slices:
        return set()
    first, last = min(key_slices), max(key_slices)
    if last - first + 1 < MIN_TARGET_SLICES:
        return set()
    keys = set(key_slices)
    return {s for s in range(first + 1, last, 2) if s not in keys}


def reads_ahead(guessed: List[int], key_slices: Sequence[int], settings: SegmentationSettings) -> List[int]:
    """Of the slices guessed past the newest key box (nearest first, the farthest where the next key box is
    expected), those an ``alternate`` run would read if the next key box lands on the farthest."""
    if not settings.reads_alternate or not guessed or not key_slices:
        return list(guessed)
    skipped = skipped_slices(sorted(set(key_slices) | {guessed[-1]}), settings)
    return [s for s in guessed if s not in skipped]


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance to the mask's boundary in pixels: negative inside, positive outside."""
    from scipy import ndimage  # here, not at import: Slicer imports the engine at start-up

    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return outside - inside


def halfway_mask(below: np.ndarray, above: np.ndarray) -> Optional[np.ndarray]:
    """The shape halfway between two neighbouring slices' boolean masks (where the mean of their signed distances is
    negative); ``None`` when either is empty or they do not overlap, where halfway is no safe guess.

    Equal masks give the same mask back. Distances are computed in the box holding both masks plus a pixel, which
    gives the same values as over the whole slice."""
    if not below.any() or not above.any() or not (below & above).any():
        return None
    rows, cols = np.nonzero(below | above)
    r0, r1 = max(int(rows.min()) - 1, 0), min(int(rows.max()) + 2, below.shape[0])
    c0, c1 = max(int(cols.min()) - 1, 0), min(int(cols.max()) + 2, below.shape[1])
    window = (slice(r0, r1), slice(c0, c1))
    mean = signed_distance(below[window]) + signed_distance(above[window])
    result = np.zeros(below.shape, dtype=bool)
    result[window] = mean < 0
    return result


def halfway_masks(skipped: Set[int], masks: Dict[int, np.ndarray]) -> Dict[int, Optional[np.ndarray]]:
    """``{skipped slice: halfway_mask(its two neighbours)}`` from the masks of the slices read."""
    return {s: halfway_mask(masks[s - 1], masks[s + 1]) for s in sorted(skipped)}


def filled_iou(iou: Dict[int, float], index: int) -> float:
    """The confidence a filled slice reports: the lower of its neighbours' predicted IoU."""
    return min(iou[index - 1], iou[index + 1])


def boxes_to_read(skipped: Set[int], halfway: Dict[int, Optional[np.ndarray]],
                  boxes: Dict[int, Box]) -> Dict[int, Box]:
    """The skipped slices that the model reads after all (no safe halfway mask), with their interpolated boxes."""
    return {s: boxes[s] for s in sorted(skipped) if halfway.get(s) is None}
