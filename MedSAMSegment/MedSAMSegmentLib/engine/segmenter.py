""":class:`VolumeSegmenter`: one normalised volume and one model, segmented again and again as boxes move."""

from __future__ import annotations

import time
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from ..geometry import Box, KeyBoxSet, validate_key_boxes
from ..models import SliceModel
from ..settings import SegmentationSettings
from .cache import EmbeddingCache, editing_cache
from .decoding import MaskAndIoU, SliceDecoder
from .encoding import SliceEncoder
from .memory import default_batch_size
from .results import CancelCheck, ProgressCallback, SegmentationResult, SliceCallback, flag_slices
from .strategies import Run, one_shot_cache_bytes, segment_guided, segment_interpolated, segment_propagated
from .views import Region, resolve_zoom


class VolumeSegmenter:
    """Segments one normalised volume with one model; keeps embeddings and decoder results between calls.

    ``volume_u8``: uint8, 3D (or 4D with 3 or 4 colour channels last), sliced along ``slice_axis``. ``cache``
    (default: a new in-memory one) may be shared between segmenters; ``batch_size`` (default: from the device's
    free memory) is the number of slice views per encoder call.
    """

    def __init__(
        self,
        model: SliceModel,
        volume_u8: np.ndarray,
        slice_axis: int,
        cache: Optional[EmbeddingCache] = None,
        batch_size: Optional[int] = None,
    ) -> None:
        if volume_u8.dtype != np.uint8:
            raise TypeError("VolumeSegmenter takes a uint8 volume; normalise it with intensity.normalise_volume")
        if volume_u8.ndim == 4 and volume_u8.shape[-1] in (3, 4):
            pass  # a colour volume: slices are (H, W, 3)
        elif volume_u8.ndim != 3:
            raise ValueError(f"a volume must be 3D, got shape {volume_u8.shape}")
        batch_size = max(1, int(batch_size or default_batch_size(model)))
        if cache is None:
            cache = editing_cache(one_shot_cache_bytes(batch_size))  # a run's chunks always fit in memory
        self.encoder = SliceEncoder(model, volume_u8, slice_axis, cache, batch_size)
        self.decoder = SliceDecoder(self.encoder)

    @property
    def model(self) -> SliceModel:
        return self.encoder.model

    @property
    def volume(self) -> np.ndarray:
        return self.encoder.volume

    @property
    def slice_axis(self) -> int:
        return self.encoder.slice_axis

    @property
    def slice_size(self) -> Tuple[int, int]:
        """(rows, columns) of a slice."""
        return self.encoder.slice_size

    @property
    def n_slices(self) -> int:
        return int(self.volume.shape[self.slice_axis])

    @property
    def cache(self) -> EmbeddingCache:
        return self.encoder.cache

    @property
    def batch_size(self) -> int:
        """Slice views per encoder call; halved when a batch runs out of memory."""
        return self.encoder.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.encoder.batch_size = max(1, int(value))

    @property
    def encoded_views(self) -> int:
        """Slice views (whole slices and crops) encoded so far by this segmenter."""
        return self.encoder.encoded

    def slice_image(self, index: int, region: Region = None) -> np.ndarray:
        """The uint8 pixels of slice ``index``, or of its crop ``region``."""
        return self.encoder.image(index, region)

    def embedding(self, index: int, region: Region = None) -> np.ndarray:
        """The image embedding of slice ``index`` (or its crop ``region``), encoded now when it is not cached."""
        return self.encoder.embedding(index, region)

    def ensure_embeddings(
        self,
        indices: Iterable[int],
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        regions: Optional[Dict[int, Region]] = None,
    ) -> int:
        """Encode, in batches, the slices among ``indices`` whose embeddings are not cached; returns how many.

        ``regions`` gives a slice's crop; slices not in it are encoded whole."""
        regions = regions or {}
        return self.encoder.encode([(s, regions.get(s)) for s in indices], progress, cancel)

    def decode(self, boxes: Dict[int, Box], regions: Optional[Dict[int, Region]] = None) -> Dict[int, MaskAndIoU]:
        """Masks and predicted IoU for ``{slice: box}``, as published: one view per slice (the whole slice unless
        ``regions`` gives a crop that holds the box), no second view. A slice whose box and view were decoded
        recently is not decoded again."""
        return self.decoder.decode(boxes, zoom="off", retry="off", regions=regions).masks

    def segment(
        self,
        key_boxes: KeyBoxSet,
        settings: SegmentationSettings,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        on_slice: Optional[SliceCallback] = None,
    ) -> SegmentationResult:
        """Segment the volume from key boxes with ``settings``' strategy and accuracy options (``mr_rule`` and the
        intensity settings were applied when the volume was normalised).

        ``progress(done, total, message)`` follows the slices, ``on_slice(index, mask)`` gets each slice's final
        mask as soon as it is known; raises :class:`~.results.Cancelled` when ``cancel()`` turns true, and
        ValueError for key boxes along another axis."""
        if key_boxes.slice_axis != self.slice_axis:
            raise ValueError(
                f"key boxes lie along axis {key_boxes.slice_axis} but this segmenter slices along {self.slice_axis}"
            )
        keys = validate_key_boxes(key_boxes, self.volume.shape[:3])
        settings = resolve_zoom(settings, keys, self.slice_size, self.model.input_size)
        started = time.perf_counter()
        encoded_before = self.encoded_views
        run = Run(self.encoder, self.decoder, settings, SegmentationResult.empty(self.volume.shape, self.slice_axis),
                  progress, cancel, on_slice)
        if settings.strategy == "interpolate" and settings.guide != "off":
            result = segment_guided(run, keys)
        elif settings.strategy == "interpolate":
            result = segment_interpolated(run, keys)
        else:
            result = segment_propagated(run, keys)
        result.flagged = flag_slices(result)
        result.encoded = self.encoded_views - encoded_before
        result.seconds = time.perf_counter() - started
        return result
