"""The one path from an image and key boxes to a segmentation, shared by the command line, the evaluation and
Slicer: normalise intensities, build a :class:`~engine.VolumeSegmenter`, run the chosen strategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import intensity
from .engine import (
    CancelCheck,
    EmbeddingCache,
    ProgressCallback,
    SegmentationResult,
    SliceCallback,
    VolumeSegmenter,
)
from .geometry import KeyBoxSet
from .models import SliceModel


@dataclass(frozen=True)
class SegmentationSettings:
    """What a user chooses besides the boxes."""

    strategy: str = "interpolate"
    modality: str = "auto"
    window: Optional[Sequence[float]] = None
    propagate_margin: float = 3.0


def normalised_volume(array: np.ndarray, settings: SegmentationSettings, is_colour: bool = False) -> np.ndarray:
    """The uint8 volume the model sees. Colour images are taken as they are (they must be 8-bit)."""
    if is_colour:
        if array.dtype != np.uint8:
            raise intensity.IntensityError("colour images must be 8-bit; convert the image to greyscale first")
        return array
    return intensity.normalise_volume(array, settings.modality, settings.window)


def make_segmenter(
    model: SliceModel,
    array: np.ndarray,
    slice_axis: int,
    settings: SegmentationSettings = SegmentationSettings(),
    cache: Optional[EmbeddingCache] = None,
    batch_size: Optional[int] = None,
    is_colour: bool = False,
) -> VolumeSegmenter:
    """A segmenter for one image along one slice axis, ready for repeated runs with changing boxes."""
    volume_u8 = normalised_volume(array, settings, is_colour)
    return VolumeSegmenter(model, volume_u8, slice_axis, cache=cache, batch_size=batch_size)


def run_segmentation(
    model: SliceModel,
    array: np.ndarray,
    key_boxes: KeyBoxSet,
    settings: SegmentationSettings = SegmentationSettings(),
    cache: Optional[EmbeddingCache] = None,
    batch_size: Optional[int] = None,
    is_colour: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    on_slice: Optional[SliceCallback] = None,
) -> SegmentationResult:
    """Segment ``array`` (``[k, j, i]``, any intensities) from key boxes; see :mod:`engine` for the strategies."""
    segmenter = make_segmenter(model, array, key_boxes.slice_axis, settings, cache, batch_size, is_colour)
    return segmenter.segment(
        key_boxes,
        strategy=settings.strategy,
        propagate_margin=settings.propagate_margin,
        progress=progress,
        cancel=cancel,
        on_slice=on_slice,
    )
