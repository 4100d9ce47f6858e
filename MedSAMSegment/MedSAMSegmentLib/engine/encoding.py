"""The slice views of one volume as the model sees them: their pixels, cache keys and batched encoding."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import slice_shape, take_slice
from ..models import SliceModel
from .cache import EmbeddingCache
from .memory import batch_size_after_out_of_memory, is_out_of_memory
from .results import CancelCheck, ProgressCallback, check_cancel
from .views import Region, view_image

#: A slice view: (slice index, crop or None for the whole slice).
View = Tuple[int, Region]


class SliceEncoder:
    """Encodes views of the slices of ``volume_u8`` (along ``slice_axis``) with ``model`` into ``cache``.

    ``batch_size`` is the number of views per encoder call; it shrinks (and the model may move to the CPU) when a
    batch runs out of memory (:mod:`.memory`). :attr:`encoded` counts the views encoded so far."""

    def __init__(self, model: SliceModel, volume_u8: np.ndarray, slice_axis: int, cache: EmbeddingCache,
                 batch_size: int) -> None:
        self.model = model
        self.volume = volume_u8
        self.slice_axis = slice_axis
        self.cache = cache
        self.batch_size = batch_size
        #: (rows, columns) of a slice.
        self.slice_size: Tuple[int, int] = slice_shape(volume_u8.shape[:3], slice_axis)
        self.encoded = 0
        self._keys: Dict[View, str] = {}

    def image(self, index: int, region: Region = None) -> np.ndarray:
        """The uint8 pixels of slice ``index`` in the view ``region``."""
        return view_image(take_slice(self.volume, self.slice_axis, index), region)

    def key(self, index: int, region: Region = None) -> str:
        """The cache key of a view (computed once per view)."""
        view = (index, region)
        if view not in self._keys:
            self._keys[view] = EmbeddingCache.key(self.model.fingerprint, self.image(index, region))
        return self._keys[view]

    def encode(self, views: Sequence[View], progress: Optional[ProgressCallback] = None,
               cancel: Optional[CancelCheck] = None) -> int:
        """Encode, in batches in the order given, the views whose embeddings are not cached; returns how many.

        Each batch goes to the cache as soon as it is done. ``progress(done, total, "encoding slices")`` follows
        the batches; ``cancel`` is checked before each (:class:`~.results.Cancelled`)."""
        missing: List[View] = [view for view in dict.fromkeys(views) if self.cache.get(self.key(*view)) is None]
        done = 0
        while done < len(missing):
            check_cancel(cancel)
            batch = missing[done : done + self.batch_size]
            try:
                embeddings = self.model.encode([self.image(*view) for view in batch])
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                self.batch_size = batch_size_after_out_of_memory(self.model, self.batch_size, exc)
                continue
            array = embeddings.float().cpu().numpy()
            for view, embedding in zip(batch, array):
                self.cache.put(self.key(*view), embedding)
            done += len(batch)
            self.encoded += len(batch)
            if progress:
                progress(done, len(missing), "encoding slices")
        return len(missing)

    def embedding(self, index: int, region: Region = None) -> np.ndarray:
        """The embedding of a view, encoded now when it is not cached."""
        value = self.cache.get(self.key(index, region))
        if value is None:
            self.encode([(index, region)])
            value = self.cache.get(self.key(index, region))
        assert value is not None
        return value
