"""Which slices the expert corrected since MedSAM wrote a segment (for Refine from my edits), without Qt.

After the effect writes a run, it keeps a :class:`WrittenRun`: the segment's voxels as they were right after the
write (read back, so the editor's masking and overwrite settings are included), with the run's key boxes and
settings. Later, :meth:`WrittenRun.corrections` compares the segment as it is now: every slice of the run whose
voxels differ from what MedSAM wrote is a corrected slice, as are the slices corrected for an earlier refinement of
the same run (the expert's work is never forgotten until the next Segment). After a refinement, a slice counts as
what MedSAM wrote when it matches the run's write or any refinement's, so undoing a refinement does not turn the
slices it had segmented again into corrections. Slices outside the run are never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Tuple

import numpy as np

from ..geometry import KeyBoxSet, take_slice
from ..service import ModelSpec
from ..settings import SegmentationSettings
from .key_box_nodes import RunTarget


@dataclass(frozen=True)
class WrittenRun:
    """What one Segment (or refinement) wrote into one segment: the target (volume, segmentation, segment), the
    volume token, geometry, key boxes, model and settings of the run, and ``written``, the segment's voxels (bool
    ``[k, j, i]``) right after the write. ``corrected`` holds the slices corrected before an earlier refinement,
    ``earlier`` what the run and earlier refinements wrote."""

    target: RunTarget
    token: str
    ijk_to_world: np.ndarray
    key_boxes: KeyBoxSet
    model: ModelSpec
    settings: SegmentationSettings
    slice_range: Tuple[int, int]
    written: np.ndarray
    corrected: FrozenSet[int] = field(default_factory=frozenset)
    earlier: Tuple[np.ndarray, ...] = ()

    @classmethod
    def of(cls, prepared, target: RunTarget, slice_range: Tuple[int, int], written: np.ndarray) -> WrittenRun:
        """What a run prepared as ``prepared`` (an :class:`effect.PreparedRun`) wrote into ``target``:
        ``written`` is the segment read back right after the write (copied)."""
        return cls(target, prepared.token, np.asarray(prepared.ijk_to_world, dtype=float), prepared.key_boxes,
                   prepared.model, prepared.settings, tuple(slice_range), np.array(written, dtype=bool))

    @property
    def volume_node_id(self) -> str:
        return self.target.volume_id

    @property
    def slice_axis(self) -> int:
        return self.key_boxes.slice_axis

    def edited_slices(self, current: np.ndarray) -> FrozenSet[int]:
        """The run's slices whose voxels in ``current`` (the segment now) differ from every write of MedSAM's."""
        if np.shape(current) != self.written.shape:
            raise ValueError(f"the segment's shape {np.shape(current)} is not the volume's {self.written.shape} "
                             "of the run; press Segment again")
        first, last = self.slice_range
        writes = (self.written, *self.earlier)
        return frozenset(i for i in range(first, last + 1)
                         if not any(np.array_equal(take_slice(current, self.slice_axis, i),
                                                   take_slice(write, self.slice_axis, i)) for write in writes))

    def corrections(self, current: np.ndarray) -> Dict[int, np.ndarray]:
        """{slice index: the slice in ``current``} for every slice edited since the write and every slice
        corrected for an earlier refinement of this run."""
        current = np.asarray(current, dtype=bool)
        touched = self.edited_slices(current) | self.corrected
        return {i: np.array(take_slice(current, self.slice_axis, i)) for i in sorted(touched)}

    def after(self, written: np.ndarray, corrected) -> WrittenRun:
        """This run after a refinement wrote ``written`` with the expert's ``corrected`` slices kept."""
        return WrittenRun(self.target, self.token, self.ijk_to_world, self.key_boxes, self.model, self.settings,
                          self.slice_range, np.array(written, dtype=bool),
                          self.corrected | frozenset(int(i) for i in corrected), (self.written, *self.earlier))
