"""What a segmentation run returns and reports: :class:`SegmentationResult`, the callbacks, cancelling, review flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..geometry import Box, put_slice, take_slice

#: Predicted IoU below this flags a slice for review.
LOW_IOU = 0.6
#: A slice whose mask area differs from both neighbours by more than this factor is flagged for review.
AREA_JUMP = 2.0

#: ``progress(done, total, message)``: called as slices are encoded and segmented.
ProgressCallback = Callable[[int, int, str], None]
#: ``cancel()``: polled between batches; True stops the run with :class:`Cancelled`.
CancelCheck = Callable[[], bool]
#: ``on_slice(slice index, mask)``: called with each slice's final mask as soon as it is known.
SliceCallback = Callable[[int, np.ndarray], None]


class Cancelled(RuntimeError):
    """The user cancelled the run; nothing was written."""


def check_cancel(cancel: Optional[CancelCheck]) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is given and returns True."""
    if cancel is not None and cancel():
        raise Cancelled("cancelled by the user; nothing was changed")


@dataclass
class SegmentationResult:
    """The outcome of one run: a full-size mask plus what happened on each slice."""

    mask: np.ndarray  # bool, the volume's shape; True only inside slice_range
    slice_axis: int
    slice_range: Tuple[int, int]  # first and last slice that was segmented (inclusive)
    boxes: Dict[int, Box] = field(default_factory=dict)
    iou: Dict[int, float] = field(default_factory=dict)
    flagged: List[Tuple[int, str]] = field(default_factory=list)
    recomputed: List[int] = field(default_factory=list)  # slices whose decoder ran in this call
    filled: List[int] = field(default_factory=list)  # slices filled from their neighbours' masks (slices=alternate)
    encoded: int = 0  # slice views (whole slices, zoom crops) whose image embedding was computed in this call
    seconds: float = 0.0

    @classmethod
    def empty(cls, volume_shape: Tuple[int, ...], slice_axis: int) -> SegmentationResult:
        """A result with an all-False mask of ``volume_shape`` (its first three axes) and no slices yet."""
        return cls(mask=np.zeros(volume_shape[:3], dtype=bool), slice_axis=slice_axis, slice_range=(0, 0))

    @property
    def slices(self) -> List[int]:
        return sorted(self.boxes)

    def add_slice(self, index: int, box: Box, mask: np.ndarray, iou: float) -> None:
        """Record slice ``index``: its mask goes into :attr:`mask`, its box and predicted IoU beside it."""
        put_slice(self.mask, self.slice_axis, index, mask)
        self.boxes[index] = tuple(box)
        self.iou[index] = iou


def flag_slices(result: SegmentationResult) -> List[Tuple[int, str]]:
    """Slices worth a second look: low predicted IoU, an empty mask, or an area jump against both neighbours."""
    areas = {s: int(take_slice(result.mask, result.slice_axis, s).sum()) for s in result.boxes}
    flagged: List[Tuple[int, str]] = []
    for s in sorted(result.boxes):
        reasons = []
        if result.iou.get(s, 1.0) < LOW_IOU:
            reasons.append(f"low predicted IoU {result.iou[s]:.2f}")
        if areas[s] == 0:
            reasons.append("empty mask")
        neighbours = [areas[n] for n in (s - 1, s + 1) if n in areas and areas[n] > 0]
        if areas[s] > 0 and len(neighbours) == 2:
            ratios = [areas[s] / n for n in neighbours]
            if all(r > AREA_JUMP for r in ratios) or all(r < 1 / AREA_JUMP for r in ratios):
                reasons.append("area differs from both neighbours by more than x2")
        if reasons:
            flagged.append((s, "; ".join(reasons)))
    return flagged
