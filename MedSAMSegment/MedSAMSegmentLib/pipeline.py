"""The one path from an image and key boxes to a segmentation, shared by the command line, the evaluation and
Slicer: normalise intensities, build a :class:`~engine.VolumeSegmenter`, run the chosen strategy."""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from . import intensity
from .engine import CancelCheck, EmbeddingCache, ProgressCallback, SegmentationResult, SliceCallback, VolumeSegmenter
from .geometry import KeyBoxSet, take_slice
from .models import SliceModel
from .settings import PUBLISHED, SegmentationSettings

__all__ = ["PUBLISHED", "SegmentationSettings", "make_segmenter", "normalised_volume", "segment_with",
           "uniform_slices", "warn_uniform_slices"]


def normalised_volume(array: np.ndarray, settings: SegmentationSettings, is_colour: bool = False) -> np.ndarray:
    """The uint8 volume the model sees. Colour images are taken as they are (they must be 8-bit)."""
    if is_colour:
        if array.dtype != np.uint8:
            raise intensity.IntensityError("colour images must be 8-bit; convert the image to greyscale first")
        return array
    return intensity.normalise_volume(array, settings.modality, settings.window, mr_rule=settings.mr_rule)


def make_segmenter(
    model: SliceModel,
    array: np.ndarray,
    slice_axis: int,
    settings: Optional[SegmentationSettings] = None,
    cache: Optional[EmbeddingCache] = None,
    batch_size: Optional[int] = None,
    is_colour: bool = False,
) -> VolumeSegmenter:
    """A segmenter for one image along one slice axis, ready for repeated runs with changing boxes."""
    volume_u8 = normalised_volume(array, settings or SegmentationSettings(), is_colour)
    return VolumeSegmenter(model, volume_u8, slice_axis, cache=cache, batch_size=batch_size)


def segment_with(
    segmenter: VolumeSegmenter,
    key_boxes: KeyBoxSet,
    settings: SegmentationSettings,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    on_slice: Optional[SliceCallback] = None,
) -> SegmentationResult:
    """The one call every path makes: ``settings``' strategy and accuracy options on a segmenter built for them."""
    warn_uniform_slices(segmenter.volume, key_boxes)
    return segmenter.segment(key_boxes, settings, progress=progress, cancel=cancel, on_slice=on_slice)


def uniform_slices(volume_u8: np.ndarray, key_boxes: KeyBoxSet) -> list:
    """Slices between the first and last key box (that exist) whose normalised pixels all have one value."""
    first, last = key_boxes.slice_range
    n_slices = volume_u8.shape[key_boxes.slice_axis]
    found = []
    for s in range(max(first, 0), min(last, n_slices - 1) + 1):
        pixels = take_slice(volume_u8, key_boxes.slice_axis, s)
        if pixels.min() == pixels.max():
            found.append(s)
    return found


def warn_uniform_slices(volume_u8: np.ndarray, key_boxes: KeyBoxSet) -> None:
    """Warn once when boxed slices hold a single intensity: the model has nothing to see there."""
    found = uniform_slices(volume_u8, key_boxes)
    if found:
        shown = ", ".join(str(s) for s in found[:10]) + (" ..." if len(found) > 10 else "")
        warnings.warn(f"{len(found)} slice(s) to segment have a single intensity after normalisation (slice {shown}); "
                      "their masks are guesses - check the image and the intensity setting (--modality, --window)",
                      stacklevel=2)
