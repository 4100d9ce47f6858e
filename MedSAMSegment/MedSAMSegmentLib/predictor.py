"""The Python API's predictor: settings at construction, prompts at call, as segment-anything's ``SamPredictor``.

>>> predictor = VolumePredictor(load_model("lite"), image.array, slice_axis=0, settings=SegmentationSettings())
>>> result = predictor.predict(key_boxes)          # call again after moving a box: only changed slices rerun

The predictor holds one volume along one slice axis with one model and one :class:`~pipeline.SegmentationSettings`
(whose defaults are the command line's); :meth:`VolumePredictor.predict` takes only the key boxes and callbacks.
It is a :class:`~session.SegmentationSession` that works only when asked; use a session to have the work done
while boxes are still being drawn.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from . import pipeline
from .engine import CancelCheck, EmbeddingCache, ProgressCallback, SegmentationResult, SliceCallback, VolumeSegmenter
from .geometry import GeometryError, KeyBoxSet
from .learning.refinement import Refinement, RefinementError, RefineSettings, refine_from_corrections
from .models import SliceModel
from .session import SegmentationSession


class VolumePredictor:
    """Segments one volume (``[k, j, i]``, any intensities; never modified) along ``slice_axis`` with ``settings``
    (default: the command line's defaults; ``SegmentationSettings(**PUBLISHED)`` for MedSAM's published behaviour).

    The image embeddings and the decoded slices are kept, so each call after the first reruns only the slices
    whose box changed. ``cache`` may be shared between predictors (and kept on disk); ``batch_size`` bounds the
    encoder's batches (default: from the device's free memory).
    """

    def __init__(self, model: SliceModel, volume: np.ndarray, slice_axis: int,
                 settings: Optional[pipeline.SegmentationSettings] = None,
                 cache: Optional[EmbeddingCache] = None, batch_size: Optional[int] = None,
                 is_colour: bool = False) -> None:
        self.settings = settings or pipeline.SegmentationSettings()  # the command line's defaults
        segmenter = pipeline.make_segmenter(model, volume, slice_axis, self.settings, cache, batch_size, is_colour)
        self.session = SegmentationSession(segmenter, self.settings, background=False, preview=False,
                                           speculate=False)
        self._last: Optional[Tuple[KeyBoxSet, SegmentationResult]] = None

    @property
    def segmenter(self) -> VolumeSegmenter:
        return self.session.segmenter

    @property
    def slice_axis(self) -> int:
        return self.session.slice_axis

    def predict(self, key_boxes: KeyBoxSet, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None, on_slice: Optional[SliceCallback] = None) -> SegmentationResult:
        """Segment from ``key_boxes`` (raises ``engine.Cancelled`` when ``cancel()`` turns true)."""
        if key_boxes.slice_axis != self.slice_axis:
            raise GeometryError(f"the key boxes lie along axis {key_boxes.slice_axis} but this predictor slices "
                                f"along axis {self.slice_axis}; make a predictor for that axis")
        self.session.set_boxes(key_boxes)
        self._last = (key_boxes, self.session.result(progress, cancel, on_slice))
        return self._last[1]

    def refine(self, corrected: Dict[int, np.ndarray], refine: Optional[RefineSettings] = None,
               progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None) -> Refinement:
        """Refine from my edits after :meth:`predict`: ``corrected`` maps slice indices (along the slice axis) to
        the expert's masks of those slices; the other slices are decoded again with a decoder adapted to them when
        a leave-one-out check says it helps (:func:`refinement.refine_from_corrections`). Raises
        :class:`~refinement.RefinementError` with one line before any :meth:`predict`, or for corrections it
        cannot use."""
        if self._last is None:
            raise RefinementError("nothing to refine yet: call predict with the key boxes first")
        key_boxes, result = self._last
        return refine_from_corrections(self.segmenter, key_boxes, self.settings, result, corrected,
                                       refine or RefineSettings(), progress, cancel)
