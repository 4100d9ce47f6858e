"""Boxes to masks: batched decoding of slice views, a memory of recent decodes, and the second-view policy.

A slice is decoded first in one view (the whole slice, or a crop under ``zoom``, :mod:`.views`). It is decoded
again in the other view when ``zoom`` is ``best`` or ``union`` and the first view was a crop, or when
``retry="zoom"`` and its predicted IoU is below :data:`RETRY_IOU`; ``union`` keeps the union of the two masks,
the others the mask with the higher predicted IoU.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..geometry import Box
from .encoding import SliceEncoder
from .views import Region, first_view, other_view, paste, shift_box, view_shape

#: Boxes given to the decoder at once (at least; the encoder's batch when larger), and slices a guided run's walks
#: advance together (docs/speed.md).
DECODE_BATCH = 2
#: Decoded masks remembered per slice (box, crop and options -> mask bits).
DECODED_PER_SLICE = 4
#: ``retry="zoom"`` decodes again slices whose predicted IoU is below this.
RETRY_IOU = 0.5

#: A slice's mask (bool, the slice's size) and the model's predicted IoU.
MaskAndIoU = Tuple[np.ndarray, float]
#: Slices grouped by their view's output size (None: the slice's own size); the decoder takes one size a call.
BySize = Dict[Optional[Tuple[int, int]], List[int]]


@dataclass(frozen=True)
class Decoded:
    """What one :meth:`SliceDecoder.decode` call gives: ``masks`` for every slice asked for, and ``recomputed``,
    the slices whose decoder ran (the others were remembered)."""

    masks: Dict[int, MaskAndIoU]
    recomputed: List[int]


def second_view(zoom: str, retry: str, region: Region, score: float) -> Optional[str]:
    """How a slice decoded in ``region`` with predicted IoU ``score`` uses its other view: ``union`` (union of the
    masks), ``best`` (the mask with the higher predicted IoU) or None (no second view)."""
    if zoom in ("best", "union") and region is not None:
        return zoom
    if retry == "zoom" and score < RETRY_IOU:
        return "best"
    return None


class SliceDecoder:
    """Decodes boxes on the slices of ``encoder``'s volume, remembering the last :data:`DECODED_PER_SLICE` results
    of each slice (by box, view and options), so a box moved back or decoded again costs no decoder run."""

    def __init__(self, encoder: SliceEncoder) -> None:
        self.encoder = encoder
        # slice -> {(box, crop, retry, zoom): (packed mask bits, predicted IoU)}, oldest first
        self._remembered: Dict[int, OrderedDict[tuple, Tuple[np.ndarray, float]]] = {}

    def decode(self, boxes: Dict[int, Box], *, zoom: str, retry: str,
               regions: Optional[Dict[int, Region]] = None) -> Decoded:
        """Masks and predicted IoU for ``{slice: box}`` with the ``zoom`` and ``retry`` options.

        ``regions`` gives a slice's first view (it must hold the box); slices not in it get :func:`.first_view`.
        Embeddings that are not cached are encoded now."""
        slice_size, input_size = self.encoder.slice_size, self.encoder.model.input_size
        regions = {s: (regions[s] if regions and s in regions else first_view(box, zoom, slice_size, input_size))
                   for s, box in boxes.items()}
        out: Dict[int, MaskAndIoU] = {}
        todo: BySize = {}
        for s, box in boxes.items():
            remembered = self._remembered.get(s, {}).get(_memory_key(box, regions[s], zoom, retry))
            if remembered is not None:
                bits, score = remembered
                out[s] = (np.unpackbits(bits, count=slice_size[0] * slice_size[1]).reshape(slice_size).astype(bool),
                          score)
            else:
                todo.setdefault(view_shape(regions[s]), []).append(s)
        recomputed = [s for group in todo.values() for s in group]
        first = self._decode_by_size(boxes, regions, todo)
        # The other view (crop <-> whole slice) of the slices that need one, encoded and decoded in batches too.
        how: Dict[int, str] = {}
        others: Dict[int, Region] = {}
        for s, (_, score) in first.items():
            choice = second_view(zoom, retry, regions[s], score)
            if choice is None:
                continue
            other = other_view(boxes[s], regions[s], slice_size, input_size)
            if other != regions[s]:
                how[s], others[s] = choice, other
        self.encoder.encode(list(others.items()))
        other_todo: BySize = {}
        for s, other in others.items():
            other_todo.setdefault(view_shape(other), []).append(s)
        second = self._decode_by_size(boxes, others, other_todo)
        for s, (mask, score) in first.items():
            if s in second:
                again, again_score = second[s]
                if how[s] == "union":
                    mask, score = mask | again, max(score, again_score)
                elif again_score > score:
                    mask, score = again, again_score
            memory = self._remembered.setdefault(s, OrderedDict())
            memory[_memory_key(boxes[s], regions[s], zoom, retry)] = (np.packbits(mask), score)
            while len(memory) > DECODED_PER_SLICE:
                memory.popitem(last=False)
            out[s] = (mask, score)
        return Decoded(out, recomputed)

    def _decode_by_size(self, boxes: Dict[int, Box], regions: Dict[int, Region], groups: BySize
                        ) -> Dict[int, MaskAndIoU]:
        """Decode ``{output size: slices}`` in chunks of :data:`DECODE_BATCH` boxes (or the encoder's batch)."""
        chunk = max(self.encoder.batch_size, DECODE_BATCH)
        decoded: Dict[int, MaskAndIoU] = {}
        for size, group in groups.items():
            for start in range(0, len(group), chunk):
                decoded.update(self._decode_chunk(boxes, regions, group[start : start + chunk], size))
        return decoded

    def _decode_chunk(self, boxes: Dict[int, Box], regions: Dict[int, Region], chunk: List[int],
                      size: Optional[Tuple[int, int]]) -> Dict[int, MaskAndIoU]:
        """One decoder call for slices whose views share the output ``size``; masks pasted back to slice size."""
        import torch

        slice_size = self.encoder.slice_size
        embeddings = torch.from_numpy(np.stack([self.encoder.embedding(s, regions[s]) for s in chunk]))
        local = [shift_box(boxes[s], regions[s]) for s in chunk]
        logits, iou = self.encoder.model.decode(embeddings, np.array(local), size or slice_size)
        return {s: (paste(lg > 0, regions[s], slice_size), float(score)) for s, lg, score in zip(chunk, logits, iou)}


def _memory_key(box: Box, region: Region, zoom: str, retry: str) -> tuple:
    return (tuple(float(v) for v in box), region, retry, zoom)
