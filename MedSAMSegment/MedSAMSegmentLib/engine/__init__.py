"""Volume segmentation: key boxes -> a box per slice -> batched encoding with an embedding cache -> masks.

:class:`VolumeSegmenter` holds one normalised volume and one model, like ``SamPredictor`` holds one image: the
expensive image embeddings are computed once per slice view (in batches, only for slices that carry a box) and
kept, so moving a key box reruns only the decoder of the slices whose box changed. An :class:`EmbeddingCache` with
a directory keeps embeddings on disk between runs, keyed by the model and the exact pixels of the view, so a
different image, slice axis, intensity setting or model can never reuse them.

Modules, one job each:

* :mod:`.segmenter`: :class:`VolumeSegmenter`, composing the parts below for one volume.
* :mod:`.strategies`: ``interpolate`` (with or without ``guide``) and ``propagate``, filling a per-run
  :class:`~.strategies.Run` built from the call's :class:`~MedSAMSegmentLib.settings.SegmentationSettings`.
* :mod:`.encoding`: the slice views' pixels, cache keys and batched encoding.
* :mod:`.lookahead`: the views a run will read, planned from the key boxes so far (encoding ahead).
* :mod:`.decoding`: batched decoding, the memory of recent decodes, the second-view (``zoom``/``retry``) policy.
* :mod:`.views`: whole slice or :class:`Crop`, and the box/crop geometry (the module states both conventions).
* :mod:`.memory`: encoder batch sizes and the out-of-memory fallback.
* :mod:`.cache`: :class:`EmbeddingCache` and its on-disk format.
* :mod:`.results`: :class:`SegmentationResult`, callbacks, :class:`Cancelled`, review flags.

Accuracy options (``off`` is MedSAM's published behaviour; their effect is in ``docs/accuracy.md``):

* ``zoom``: ``auto`` crops a square around a box that is small in model pixels (its longest side below
  :data:`ZOOM_BELOW` of a 256 input) and gives the crop to the model, so the target fills about
  :data:`ZOOM_TARGET` pixels of the input; whole slice for larger boxes. Crops are snapped to a grid so a box
  that moves a little keeps its crop (and its cached embedding). ``best`` decodes a cropped slice on the whole
  slice too and keeps the mask with the higher predicted IoU; ``union`` keeps the union of the two masks.
* ``guide`` (``interpolate`` only): boxes between key slices from the neighbouring masks (:mod:`.strategies`).
* ``retry``: ``zoom`` decodes a slice whose predicted IoU is below :data:`RETRY_IOU` again with the other view
  (a crop around the box if it was whole, the whole slice if it was a crop) and keeps the answer the model
  trusts more (higher predicted IoU).
* ``refine``: ``box`` clips each slice's mask to its box grown by :data:`CLIP_MARGIN` and fills holes per slice.

Importing this package does not import torch.
"""

from .cache import EDITING_MEMORY_BYTES, CacheDirectoryError, EmbeddingCache, editing_cache
from .decoding import DECODE_BATCH, DECODED_PER_SLICE, RETRY_IOU, Decoded, SliceDecoder
from .encoding import SliceEncoder
from .memory import default_batch_size, is_out_of_memory
from .results import (
    AREA_JUMP,
    LOW_IOU,
    CancelCheck,
    Cancelled,
    ProgressCallback,
    SegmentationResult,
    SliceCallback,
    check_cancel,
    flag_slices,
)
from .segmenter import VolumeSegmenter
from .strategies import DECODE_CHUNK, one_shot_cache_bytes
from .views import (
    CLIP_MARGIN,
    ZOOM_BELOW,
    ZOOM_MIN_CROP,
    ZOOM_TARGET,
    Crop,
    Region,
    refine_to_box,
    shift_box,
    zoom_region,
)

__all__ = [
    "CacheDirectoryError", "EDITING_MEMORY_BYTES", "editing_cache",
    "AREA_JUMP", "CLIP_MARGIN", "DECODED_PER_SLICE", "DECODE_BATCH", "DECODE_CHUNK", "LOW_IOU", "RETRY_IOU",
    "ZOOM_BELOW", "ZOOM_MIN_CROP", "ZOOM_TARGET", "CancelCheck", "Cancelled", "Crop", "Decoded", "EmbeddingCache",
    "ProgressCallback", "Region", "SegmentationResult", "SliceCallback", "SliceDecoder", "SliceEncoder",
    "VolumeSegmenter", "check_cancel", "default_batch_size", "flag_slices", "is_out_of_memory",
    "one_shot_cache_bytes", "refine_to_box", "shift_box", "zoom_region",
]
