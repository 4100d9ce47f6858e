"""The three ways from key boxes to a box on every slice, each filling a :class:`Run`'s result.

* :func:`segment_interpolated` (``strategy="interpolate"``, ``guide="off"``): boxes linearly interpolated between
  key slices; every slice from the first to the last key slice is segmented, a chunk of slices at a time.
* :func:`segment_guided` (``interpolate`` with a ``guide``): key slices first, then walks from each key slice
  towards the middle of its gap, each slice's box made from its interpolated box and the previous slice's mask
  box + ``propagate_margin`` (``mask``: the mask box alone; ``mean``: their mean; ``union``: the box holding
  both; ``auto``: the union where the interpolated box is small in model pixels, the interpolated box elsewhere).
  Where the mask vanishes the interpolated boxes take over.
* Under ``slices="alternate"`` both interpolated strategies skip every second slice of long targets and fill it
  from its neighbours' masks at the end (:mod:`.alternate`); the guided walks step over the skipped slices.
* :func:`segment_propagated` (``strategy="propagate"``): MedSAM's 3D scheme. From each key box, walk outwards
  slice by slice with the previous slice's mask box + ``propagate_margin``, stopping where the mask vanishes and
  at the midpoint towards the next key slice. With two or more key boxes the outermost ones bound the walks; a
  single key box walks both ways to the ends of the volume. Under ``zoom``, a walked slice between key slices
  takes the crop of its interpolated box when the walked box fits it at the same scale, so the crops ahead are
  encoded in batches and shared with ``interpolate`` runs over the same boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..geometry import Box, KeyBoxSet, box_from_mask, interpolate_boxes, take_slice
from ..models.hardware import EMBEDDING_BYTES
from ..settings import SegmentationSettings
from .alternate import boxes_to_read, filled_iou, halfway_masks, skipped_slices
from .decoding import DECODE_BATCH, MaskAndIoU, SliceDecoder
from .encoding import SliceEncoder, View
from .results import CancelCheck, ProgressCallback, SegmentationResult, SliceCallback, check_cancel
from .views import Region, combine_boxes, first_view, refine_to_box, zoom_region

#: Slices encoded and decoded together in an interpolated run (at least; the encoder's batch when larger).
DECODE_CHUNK = 4


def one_shot_cache_bytes(batch_size: int) -> int:
    """Memory an embedding cache needs for a run that is not edited afterwards (the command line).

    Interpolated and propagated runs encode and decode a chunk of slices at a time, each slice at most in two
    views (``zoom``'s crop and the whole slice): two chunks' embeddings are all that is read again. Keeping
    every embedding instead (for later box edits, as Slicer does) costs 4 MiB a slice: 400 MiB for 100 slices.
    """
    return 2 * max(int(batch_size), DECODE_CHUNK, DECODE_BATCH) * 2 * EMBEDDING_BYTES


@dataclass
class Run:
    """One segmentation run: the volume's encoder and decoder, the run's settings and callbacks, and the result
    the strategy fills."""

    encoder: SliceEncoder
    decoder: SliceDecoder
    settings: SegmentationSettings
    result: SegmentationResult
    progress: Optional[ProgressCallback] = None
    cancel: Optional[CancelCheck] = None
    on_slice: Optional[SliceCallback] = None

    def view(self, box: Box) -> Region:
        """The view ``box`` is decoded in first under the run's ``zoom``."""
        return first_view(box, self.settings.zoom, self.encoder.slice_size, self.encoder.model.input_size)

    def encode(self, order: Sequence[int], boxes: Dict[int, Box]) -> None:
        """Encode the first views of the slices ``order`` (in that order) for their ``boxes``."""
        self.encoder.encode([(s, self.view(boxes[s])) for s in order], cancel=self.cancel)

    def decode(self, boxes: Dict[int, Box], regions: Optional[Dict[int, Region]] = None) -> Dict[int, MaskAndIoU]:
        """Masks and IoU for ``{slice: box}`` with the run's options; the slices decoded go to ``recomputed``."""
        decoded = self.decoder.decode(boxes, zoom=self.settings.zoom, retry=self.settings.retry, regions=regions)
        self.result.recomputed.extend(decoded.recomputed)
        return decoded.masks

    def keep(self, index: int, box: Box, mask: np.ndarray, iou: float) -> np.ndarray:
        """Put a slice's mask (refined under ``refine="box"``) into the result, tell ``on_slice``; returns it."""
        if self.settings.refine == "box":
            mask = refine_to_box(mask, box)
        self.result.add_slice(index, box, mask, iou)
        if self.on_slice:
            self.on_slice(index, mask)
        return mask

    def report(self, done: int, total: int) -> None:
        if self.progress:
            self.progress(done, total, "segmenting slices")

    def fill_skipped(self, boxes: Dict[int, Box], skipped: Set[int]) -> None:
        """Fill the ``skipped`` slices (``slices="alternate"``) halfway between their neighbours' masks; the model
        reads those where that is no safe guess. Call once every other slice between the key slices is kept."""
        if not skipped:
            return
        axis = self.result.slice_axis
        read = {n for s in skipped for n in (s - 1, s + 1)}
        halfway = halfway_masks(skipped, {n: take_slice(self.result.mask, axis, n) for n in read})
        filled = {s: (mask, filled_iou(self.result.iou, s)) for s, mask in halfway.items() if mask is not None}
        to_read = boxes_to_read(skipped, halfway, boxes)
        if to_read:
            check_cancel(self.cancel)
            self.encode(sorted(to_read), to_read)
            filled.update(self.decode(to_read))
        for s in sorted(filled):
            self.keep(s, boxes[s], *filled[s])
        self.result.filled = sorted(set(filled) - set(to_read))
        self.report(len(boxes), len(boxes))


def segment_interpolated(run: Run, keys: KeyBoxSet) -> SegmentationResult:
    """Interpolated boxes on every slice between the first and last key slice."""
    boxes = interpolate_boxes(keys.boxes, run.settings.box_sizes)
    run.result.slice_range = (min(boxes), max(boxes))
    skipped = skipped_slices([k.slice_index for k in keys.boxes], run.settings)
    order = [s for s in sorted(boxes) if s not in skipped]
    # Decode a few slices together even when encoding one at a time (batched decoding is cheaper per box),
    # while the first masks still reach on_slice long before the volume is done.
    step = max(run.encoder.batch_size, DECODE_CHUNK)
    for start in range(0, len(order), step):
        check_cancel(run.cancel)
        batch = order[start : start + step]
        run.encode(batch, boxes)
        check_cancel(run.cancel)
        decoded = run.decode({s: boxes[s] for s in batch})
        for s in batch:
            run.keep(s, boxes[s], *decoded[s])
        run.report(start + len(batch), len(boxes))
    run.fill_skipped(boxes, skipped)
    return run.result


def segment_guided(run: Run, keys: KeyBoxSet) -> SegmentationResult:
    """Key slices first, then walks from each key slice towards the middle of its gap (``guide``)."""
    guide, margin = run.settings.guide, run.settings.propagate_margin
    slice_size, input_size = run.encoder.slice_size, run.encoder.model.input_size
    boxes = interpolate_boxes(keys.boxes, run.settings.box_sizes)
    key_slices = sorted(k.slice_index for k in keys.boxes)
    run.result.slice_range = (min(boxes), max(boxes))
    skipped = skipped_slices(key_slices, run.settings)
    done = 0

    def segment_batch(batch: Dict[int, Box]) -> Dict[int, np.ndarray]:
        nonlocal done
        check_cancel(run.cancel)
        run.encode(sorted(batch), batch)
        decoded = run.decode(batch)
        masks = {s: run.keep(s, batch[s], *decoded[s]) for s in sorted(batch)}
        done += len(batch)
        run.report(done, len(boxes))
        return masks

    # Walks (and key slices) go in groups, so that the embeddings read again stay a few chunks' worth.
    group = max(run.encoder.batch_size, DECODE_BATCH)
    previous: Dict[int, np.ndarray] = {}
    for start in range(0, len(key_slices), group):
        previous.update(segment_batch({s: boxes[s] for s in key_slices[start : start + group]}))
    # One walk per side of each gap, over the slices it reads: [slices still to walk, previous mask or None]
    walks: List[list] = []
    for a, b in zip(key_slices, key_slices[1:]):
        middle = (a + b) // 2
        for slices, mask in ((range(a + 1, middle + 1), previous[a]), (range(b - 1, middle, -1), previous[b])):
            slices = [s for s in slices if s not in skipped]
            if slices:
                walks.append([slices, mask])
    while walks:
        remaining = []
        for start in range(0, len(walks), group):
            members = walks[start : start + group]
            batch = {}
            for slices, mask in members:
                s = slices[0]
                guided = None if mask is None else box_from_mask(mask, margin)
                how = guide
                if guide == "auto":
                    how = "union" if zoom_region(boxes[s], slice_size, input_size) is not None else "off"
                if guided is None or how == "off":
                    batch[s] = boxes[s]
                else:
                    batch[s] = combine_boxes(boxes[s], guided, how, slice_size)
            masks = segment_batch(batch)
            for walk in members:
                slices, mask = walk
                # Where the mask vanishes the walk goes on with the interpolated boxes only.
                walk[1] = masks[slices[0]] if mask is not None and masks[slices[0]].any() else None
                if len(slices) > 1:
                    walk[0] = slices[1:]
                    remaining.append(walk)
        walks = remaining
    run.fill_skipped(boxes, skipped)
    return run.result


def segment_propagated(run: Run, keys: KeyBoxSet) -> SegmentationResult:
    """Masks propagated outwards from each key box (MedSAM's 3D scheme; see the module docstring)."""
    margin = run.settings.propagate_margin
    ordered = keys.sorted()
    key_slices = [k.slice_index for k in ordered]
    single = len(ordered) == 1
    # Each key owns the slices up to the midpoint towards its neighbours; the outermost keys bound the walks,
    # except that a single key walks to the ends of the volume.
    n_slices = int(run.encoder.volume.shape[run.encoder.slice_axis])
    lowest, highest = (0, n_slices - 1) if single else (key_slices[0], key_slices[-1])
    walks: List[Tuple[int, int, int]] = []  # (start slice, step, last slice allowed)
    for n, key in enumerate(ordered):
        low_limit = lowest if n == 0 else (key_slices[n - 1] + key.slice_index) // 2 + 1
        high_limit = highest if n == len(ordered) - 1 else (key.slice_index + key_slices[n + 1]) // 2
        walks.append((key.slice_index, -1, low_limit))
        walks.append((key.slice_index, +1, high_limit))
    walks = [walk for walk in walks if walk[0] != walk[2]]
    # Between key slices the interpolated boxes say where the walk will be: their crops are encoded ahead.
    hints = interpolate_boxes(keys.boxes, run.settings.box_sizes) if not single else {}
    estimated = sum(abs(last - start) for start, _, last in walks) + len(ordered)
    done = 0

    key_masks: Dict[int, np.ndarray] = {}
    run.encode(key_slices, {k.slice_index: k.box for k in ordered})
    for key in ordered:
        check_cancel(run.cancel)
        mask, iou = run.decode({key.slice_index: key.box})[key.slice_index]
        key_masks[key.slice_index] = run.keep(key.slice_index, key.box, mask, iou)
        done += 1
        run.report(min(done, estimated), estimated)
    for start, step, last in walks:
        previous = key_masks[start]
        s = start + step
        while (step > 0 and s <= last) or (step < 0 and s >= last):
            check_cancel(run.cancel)
            box = box_from_mask(previous, margin)
            if box is None:
                break
            _encode_walk_ahead(run, list(range(s, last + step, step))[: run.encoder.batch_size], hints)
            region = _walk_region(run, box, hints.get(s))
            run.encoder.encode([(s, region)], cancel=run.cancel)
            mask, iou = run.decode({s: box}, regions={s: region})[s]
            previous = run.keep(s, box, mask, iou)
            done += 1
            run.report(min(done, estimated), estimated)
            s += step
    covered = sorted(run.result.boxes)
    run.result.slice_range = (covered[0], covered[-1])
    return run.result


def _walk_region(run: Run, box: Box, hint: Optional[Box]) -> Region:
    """A walked slice's view: its interpolated box's crop when that holds ``box`` at the same scale (so it was
    encoded ahead), else the view of ``box`` itself."""
    own = run.view(box)
    if own is None or hint is None:
        return own
    shared = run.view(hint)
    if shared is None or shared.shape != own.shape:
        return own
    return shared if shared.holds(box) else own


def _encode_walk_ahead(run: Run, ahead: List[int], hints: Dict[int, Box]) -> None:
    """Encode, as one batch, what the walk's next slices will most likely need: the whole slices (unless
    ``zoom="auto"`` crops them) and the crops of their interpolated boxes."""
    views: List[View] = []
    for s in ahead:
        crop = run.view(hints[s]) if s in hints else None
        if crop is not None:
            views.append((s, crop))
        # Beyond the key slices a crop depends on the previous slice's mask: none is encoded ahead there.
        if run.settings.zoom in ("off", "best", "union") or (s in hints and crop is None):
            views.append((s, None))
    run.encoder.encode(views, cancel=run.cancel)
