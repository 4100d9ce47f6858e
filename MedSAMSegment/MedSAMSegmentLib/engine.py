"""Volume segmentation: key boxes -> a box per slice -> batched encoding with an embedding cache -> masks.

:class:`VolumeSegmenter` holds one normalised volume and one model, like ``SamPredictor`` holds one image: the
expensive image embeddings are computed once per slice (in batches, only for slices that carry a box) and kept,
so moving a key box reruns only the decoder of the slices whose box changed. An :class:`EmbeddingCache` with a
directory keeps embeddings on disk between runs, keyed by the model and the exact slice pixels, so a different
image, slice axis, intensity setting or model can never reuse them.

Strategies:

* ``interpolate``: boxes linearly interpolated between key slices; every slice from the first to the last key
  slice is segmented.
* ``propagate``: MedSAM's own 3D scheme. From each key box, walk outwards slice by slice using the previous
  slice's mask box plus a margin, stopping where the mask vanishes and at the next key slice (slices between two
  key slices are walked from the nearer one). With two or more key boxes the outermost ones bound the target, as
  they bound ``interpolate``; a single key box walks both ways until the mask vanishes, so one box is enough to
  segment a whole structure. With ``zoom``, a walked slice between key slices takes the crop of its interpolated
  box when the walked box fits it at the same scale, so the crops of the slices ahead are known, encoded in
  batches and shared with ``interpolate`` runs over the same boxes.

Accuracy options (each measured on the development set, ``docs/accuracy.md``; ``off`` is the published
behaviour):

* ``zoom``: ``auto`` crops a square around a box that is small in model pixels (its longest side below
  :data:`ZOOM_BELOW` of the 256 input) and gives the crop to the model, so the target fills about
  :data:`ZOOM_TARGET` pixels of the input; whole slice for larger boxes. Crops are snapped to a grid so a box
  that moves a little keeps its crop (and its cached embedding).
* ``guide`` (``interpolate`` only): walks from each key slice towards the middle of the gap, each slice's box
  made from the interpolated box and the previous slice's mask box + margin: ``mask`` the mask box alone
  (MedSAM's adrenal study), ``mean`` their mean, ``union`` the box holding both, ``auto`` the union where
  the interpolated box is small in model pixels (the ``zoom`` rule: small targets grow between key slices
  faster than a line follows) and the interpolated box elsewhere; where the mask vanishes the interpolated
  boxes take over.
* ``retry``: ``zoom`` decodes a slice whose predicted IoU is below :data:`RETRY_IOU` again with the other view
  (a crop around the box if it was whole, the whole slice if it was a crop) and keeps the answer the model
  trusts more (higher predicted IoU).
* ``refine``: ``box`` clips each slice's mask to its box grown by :data:`CLIP_MARGIN` and fills holes per slice.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .geometry import Box, KeyBoxSet, box_from_mask, interpolate_boxes, slice_shape, take_slice, validate_key_boxes
from .models import SliceModel
from .settings import SegmentationSettings

#: Predicted IoU below this flags a slice for review.
LOW_IOU = 0.6
#: A slice whose mask area differs from both neighbours by more than this factor is flagged for review.
AREA_JUMP = 2.0

#: Slices decoded together in an interpolated run.
DECODE_CHUNK = 4
#: Boxes given to the decoder at once (at least; the encoder's batch when larger), and slices a guided run's
#: walks advance together. Measured on 2 cores (OpenVINO decoder, 512x512 slices): 57, 48, 47 and 52 ms per box
#: at batches of 1, 2, 4 and 8, each box adding about 60 MB of working memory: 2 is as fast and bounds memory.
DECODE_BATCH = 2
#: Decoded masks remembered per slice (box, crop and options -> mask bits): a box moved back, or the same box
#: in another run over the slice (``evaluate``'s methods share their key boxes), decodes nothing again.
DECODED_PER_SLICE = 4

#: ``retry="zoom"`` decodes again slices whose predicted IoU is below this.
RETRY_IOU = 0.5
#: ``zoom="auto"`` crops around boxes whose longest side is below this many model pixels (of 256) ...
ZOOM_BELOW = 48.0
#: ... so that the box's longest side fills about this many pixels of the model input ...
ZOOM_TARGET = 96.0
#: ... but never crops less than this many slice pixels.
ZOOM_MIN_CROP = 48
#: ``refine="box"`` keeps mask pixels within this many pixels of the box.
CLIP_MARGIN = 2.0

Region = Optional[Tuple[int, int, int, int]]  # (row0, row1, col0, col1) of a crop, end exclusive; None: whole

ProgressCallback = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]
SliceCallback = Callable[[int, np.ndarray], None]


class Cancelled(RuntimeError):
    """The user cancelled the run; nothing was written."""


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
    encoded: int = 0  # slice views (whole slices, zoom crops) whose image embedding was computed in this call
    seconds: float = 0.0

    @property
    def slices(self) -> List[int]:
        return sorted(self.boxes)


class EmbeddingCache:
    """Image embeddings by content key, in memory (LRU bounded by bytes) and optionally on disk.

    Disk entries are written to a temporary file and renamed into place, and carry a SHA-256 of their payload,
    so a crash mid-write or a corrupt file is detected (and recomputed) and two runs can share a directory.
    """

    def __init__(self, directory: Optional[str] = None, max_memory_bytes: int = 1 << 30) -> None:
        self.directory = directory
        self.max_memory_bytes = max_memory_bytes
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_bytes = 0
        self.hits = 0
        self.misses = 0
        if directory:
            os.makedirs(directory, exist_ok=True)

    @staticmethod
    def key(fingerprint: str, slice_2d: np.ndarray) -> str:
        digest = hashlib.sha256()
        digest.update(fingerprint.encode())
        digest.update(repr((slice_2d.shape, str(slice_2d.dtype))).encode())
        digest.update(np.ascontiguousarray(slice_2d).tobytes())
        return digest.hexdigest()[:40]

    def get(self, key: str) -> Optional[np.ndarray]:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        value = self._read_disk(key)
        if value is not None:
            self.hits += 1
            self._remember(key, value)
            return value
        self.misses += 1
        return None

    def put(self, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value, dtype=np.float32)
        self._remember(key, value)
        if self.directory:
            self._write_disk(key, value)

    def clear_memory(self) -> None:
        self._memory.clear()
        self._memory_bytes = 0

    def _remember(self, key: str, value: np.ndarray) -> None:
        if key in self._memory:
            return
        self._memory[key] = value
        self._memory_bytes += value.nbytes
        while self._memory_bytes > self.max_memory_bytes and len(self._memory) > 1:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= old.nbytes

    def _path(self, key: str) -> str:
        return os.path.join(self.directory or "", key[:2], key + ".emb")

    def _write_disk(self, key: str, value: np.ndarray) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        header = repr((value.shape, str(value.dtype))).encode().ljust(64)
        payload = value.tobytes()
        checksum = hashlib.sha256(header + payload).hexdigest().encode()
        handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".emb")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(checksum + header + payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _read_disk(self, key: str) -> Optional[np.ndarray]:
        if not self.directory:
            return None
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        checksum, header, payload = data[:64], data[64:128], data[128:]
        try:
            if hashlib.sha256(header + payload).hexdigest().encode() != checksum:
                raise ValueError("checksum mismatch")
            shape, dtype = eval_header(header)
            value = np.frombuffer(payload, dtype=dtype).reshape(shape).copy()
        except (ValueError, SyntaxError, TypeError):
            try:  # a corrupt entry is removed and recomputed
                os.unlink(path)
            except OSError:
                pass
            return None
        return value


def eval_header(header: bytes) -> Tuple[Tuple[int, ...], str]:
    """Parse the ``((shape), 'dtype')`` header of a disk cache entry without ``eval``."""
    import ast

    shape, dtype = ast.literal_eval(header.decode().strip())
    if dtype != "float32" or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError("bad header")
    return tuple(shape), dtype


#: Bytes of one slice's image embedding (256 x 64 x 64 float32), the unit of the embedding cache's memory.
EMBEDDING_BYTES = 256 * 64 * 64 * 4


def one_shot_cache_bytes(batch_size: int) -> int:
    """Memory an embedding cache needs for a run that is not edited afterwards (the command line).

    Interpolated and propagated runs encode and decode a chunk of slices at a time, each slice at most in two
    views (``zoom``'s crop and the whole slice): two chunks' embeddings are all that is read again. Keeping
    every embedding instead (for later box edits, as Slicer does) costs 4 MiB a slice: 400 MiB for 100 slices.
    """
    return 2 * max(int(batch_size), DECODE_CHUNK, DECODE_BATCH) * 2 * EMBEDDING_BYTES


def default_batch_size(model: SliceModel) -> int:
    """Slices per encoder batch: measured best on the device, bounded by free memory (see ``acceleration``)."""
    from . import acceleration

    return acceleration.encoder_batch_size(model.device, getattr(model, "precision", "fp32"))


class VolumeSegmenter:
    """Segments one normalised volume with one model; keeps embeddings and decoder results between calls."""

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
        self.model = model
        self.volume = volume_u8
        self.slice_axis = slice_axis
        self.cache = cache if cache is not None else EmbeddingCache()
        self.batch_size = max(1, int(batch_size or default_batch_size(model)))
        self.slice_size = slice_shape(volume_u8.shape[:3], slice_axis)
        self._keys: Dict[Tuple[int, Region], str] = {}
        # slice -> {(box, crop, retry, zoom): (packed mask bits, predicted IoU)}, oldest first
        self._decoded: Dict[int, OrderedDict[tuple, Tuple[np.ndarray, float]]] = {}
        self.zoom = "off"
        self.retry = "off"
        #: Slice views (whole slices and crops) encoded so far by this segmenter.
        self.encoded_views = 0

    @property
    def n_slices(self) -> int:
        return int(self.volume.shape[self.slice_axis])

    # -- embeddings ---------------------------------------------------------------------------------------
    def slice_image(self, index: int, region: Region = None) -> np.ndarray:
        image = take_slice(self.volume, self.slice_axis, index)
        if region is None:
            return image
        r0, r1, c0, c1 = region
        return image[r0:r1, c0:c1]

    def _key(self, index: int, region: Region = None) -> str:
        item = (index, region)
        if item not in self._keys:
            self._keys[item] = EmbeddingCache.key(self.model.fingerprint, self.slice_image(index, region))
        return self._keys[item]

    def region_for(self, box: Box) -> Region:
        """The crop the model sees for ``box`` with the current ``zoom`` (None: the whole slice)."""
        if self.zoom == "off":
            return None
        return zoom_region(box, self.slice_size, getattr(self.model, "input_size", 256))

    def _decode_group(self, boxes: Dict[int, Box], regions: Dict[int, Region], group: List[int], size):
        import torch

        embeddings = torch.from_numpy(np.stack([self.embedding(s, regions[s]) for s in group]))
        local = [_shift_box(boxes[s], regions[s]) for s in group]
        logits, iou = self.model.decode(embeddings, np.array(local), size or self.slice_size)
        return {s: (_paste(lg > 0, regions[s], self.slice_size), float(score))
                for s, lg, score in zip(group, logits, iou)}

    def ensure_embeddings(
        self,
        indices: Iterable[int],
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        regions: Optional[Dict[int, Region]] = None,
    ) -> int:
        """Encode, in batches, the slices among ``indices`` whose embeddings are not cached; returns how many.

        ``regions`` gives a slice's crop (see ``zoom``); slices not in it are encoded whole."""
        regions = regions or {}
        return self._encode_items([(s, regions.get(s)) for s in indices], progress, cancel)

    def _encode_items(self, items: List[Tuple[int, Region]], progress: Optional[ProgressCallback],
                      cancel: Optional[CancelCheck]) -> int:
        """Encode, in batches, the (slice, crop) items whose embeddings are not cached; returns how many."""
        missing = [item for item in dict.fromkeys(items) if self.cache.get(self._key(*item)) is None]
        done = 0
        while done < len(missing):
            _check_cancel(cancel)
            batch = missing[done : done + self.batch_size]
            try:
                embeddings = self.model.encode([self.slice_image(*item) for item in batch])
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                self._recover_from_out_of_memory(exc)
                continue
            array = embeddings.float().cpu().numpy()
            for item, emb in zip(batch, array):
                self.cache.put(self._key(*item), emb)
            done += len(batch)
            self.encoded_views += len(batch)
            if progress:
                progress(done, len(missing), "encoding slices")
        return len(missing)

    def _recover_from_out_of_memory(self, exc: BaseException) -> None:
        """Halve the batch; at batch 1 on a GPU move the model to the CPU; on the CPU give up with a clear error."""
        _release_accelerator_memory()
        if self.batch_size > 1:
            self.batch_size = max(1, self.batch_size // 2)
            warnings.warn(f"out of memory on {self.model.device}; retrying with batches of {self.batch_size} slices",
                          ResourceWarning, stacklevel=3)
            return
        if self.model.device != "cpu":
            previous = self.model.device
            self.model.move_to("cpu")
            warnings.warn(f"out of memory on {previous} even one slice at a time; continuing on the CPU",
                          ResourceWarning, stacklevel=3)
            return
        raise MemoryError(f"out of memory encoding one slice on the CPU ({exc}); close other programs") from exc

    def embedding(self, index: int, region: Region = None) -> np.ndarray:
        value = self.cache.get(self._key(index, region))
        if value is None:
            self.ensure_embeddings([index], regions={index: region})
            value = self.cache.get(self._key(index, region))
        assert value is not None
        return value

    # -- decoding -----------------------------------------------------------------------------------------
    def decode(self, boxes: Dict[int, Box], regions: Optional[Dict[int, Region]] = None
               ) -> Dict[int, Tuple[np.ndarray, float]]:
        """Masks and IoU for ``{slice: box}``; reuses the result of a slice whose box (and crop) is unchanged.

        ``regions`` gives a slice's crop (it must hold the box); slices not in it get :meth:`region_for`."""
        out: Dict[int, Tuple[np.ndarray, float]] = {}
        todo: Dict[Region, List[int]] = {}
        regions = {s: (regions[s] if regions and s in regions else self.region_for(box)) for s, box in boxes.items()}
        for s, box in boxes.items():
            remembered = self._decoded.get(s, {}).get(self._decode_key(box, regions[s]))
            if remembered is not None:
                bits, score = remembered
                out[s] = (np.unpackbits(bits, count=self.slice_size[0] * self.slice_size[1])
                          .reshape(self.slice_size).astype(bool), score)
            else:
                # Slices decode together when their crops have one size (the decoder takes one output size).
                size = None if regions[s] is None else (regions[s][1] - regions[s][0], regions[s][3] - regions[s][2])
                todo.setdefault(size, []).append(s)
        self.last_recomputed = [s for group in todo.values() for s in group]
        first = self._decode_grouped(boxes, regions, todo)
        # The other view (crop <-> whole slice) of the slices that need one, encoded and decoded in batches too.
        how: Dict[int, str] = {}
        others: Dict[int, Region] = {}
        for s, (_, score) in first.items():
            if self.zoom in ("best", "union") and regions[s] is not None:
                how[s] = self.zoom
            elif self.retry == "zoom" and score < RETRY_IOU:
                how[s] = "best"
            else:
                continue
            others[s] = zoom_region(boxes[s], self.slice_size, getattr(self.model, "input_size", 256), force=True) \
                if regions[s] is None else None
            if others[s] == regions[s]:
                del how[s], others[s]
        self._encode_items(list(others.items()), None, None)
        other_todo: Dict[Optional[Tuple[int, int]], List[int]] = {}
        for s, other in others.items():
            other_todo.setdefault(None if other is None else (other[1] - other[0], other[3] - other[2]), []).append(s)
        second = self._decode_grouped(boxes, others, other_todo)
        for s, (mask, score) in first.items():
            if s in second:
                again, again_score = second[s]
                if how[s] == "union":
                    mask, score = mask | again, max(score, again_score)
                elif again_score > score:
                    mask, score = again, again_score
            memory = self._decoded.setdefault(s, OrderedDict())
            memory[self._decode_key(boxes[s], regions[s])] = (np.packbits(mask), score)
            while len(memory) > DECODED_PER_SLICE:
                memory.popitem(last=False)
            out[s] = (mask, score)
        return out

    def _decode_key(self, box: Box, region: Region) -> tuple:
        return (tuple(float(v) for v in box), region, self.retry, self.zoom)

    def _decode_grouped(self, boxes: Dict[int, Box], regions: Dict[int, Region],
                        groups: Dict[Optional[Tuple[int, int]], List[int]]) -> Dict[int, Tuple[np.ndarray, float]]:
        """Decode ``{crop size: slices}`` in chunks of :data:`DECODE_BATCH` boxes (or the encoder's batch)."""
        chunk = max(self.batch_size, DECODE_BATCH)
        decoded: Dict[int, Tuple[np.ndarray, float]] = {}
        for size, group in groups.items():
            for start in range(0, len(group), chunk):
                decoded.update(self._decode_group(boxes, regions, group[start : start + chunk], size))
        return decoded

    # -- strategies ---------------------------------------------------------------------------------------
    def segment(
        self,
        key_boxes: KeyBoxSet,
        settings: SegmentationSettings,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        on_slice: Optional[SliceCallback] = None,
    ) -> SegmentationResult:
        """Segment the volume from key boxes with ``settings``' strategy and accuracy options (``mr_rule`` and the
        intensity settings were applied when the volume was normalised). Raises :class:`Cancelled` when ``cancel()``
        turns true.
        """
        if key_boxes.slice_axis != self.slice_axis:
            raise ValueError(
                f"key boxes lie along axis {key_boxes.slice_axis} but this segmenter slices along {self.slice_axis}"
            )
        strategy, guide, propagate_margin = settings.strategy, settings.guide, settings.propagate_margin
        zoom, refine, retry = settings.zoom, settings.refine, settings.retry
        keys = validate_key_boxes(key_boxes, self.volume.shape[:3])
        started = time.perf_counter()
        encoded_before = self.encoded_views
        self.zoom, self.refine, self.retry = zoom, refine, retry
        if strategy == "interpolate" and guide != "off":
            result = self._segment_guided(keys, guide, propagate_margin, progress, cancel, on_slice)
        elif strategy == "interpolate":
            result = self._segment_interpolated(keys, progress, cancel, on_slice)
        else:
            result = self._segment_propagated(keys, propagate_margin, progress, cancel, on_slice)
        result.flagged = flag_slices(result)
        result.encoded = self.encoded_views - encoded_before
        result.seconds = time.perf_counter() - started
        return result

    def _empty_result(self) -> SegmentationResult:
        return SegmentationResult(
            mask=np.zeros(self.volume.shape[:3], dtype=bool), slice_axis=self.slice_axis, slice_range=(0, 0)
        )

    def _store(self, result: SegmentationResult, s: int, box: Box, mask: np.ndarray, iou: float) -> np.ndarray:
        if getattr(self, "refine", "off") == "box":
            mask = refine_to_box(mask, box)
        selector: List[object] = [slice(None)] * 3
        selector[self.slice_axis] = s
        result.mask[tuple(selector)] = mask
        result.boxes[s] = tuple(box)
        result.iou[s] = iou
        return mask

    def _regions(self, boxes: Dict[int, Box]) -> Dict[int, Region]:
        return {s: self.region_for(box) for s, box in boxes.items()}

    def _segment_guided(self, keys, guide, margin, progress, cancel, on_slice) -> SegmentationResult:
        """``guide``: key slices first, then walks from each key slice towards the middle of its gap."""
        boxes = interpolate_boxes(keys.boxes)
        order = sorted(boxes)
        key_slices = sorted(k.slice_index for k in keys.boxes)
        result = self._empty_result()
        result.slice_range = (order[0], order[-1])
        total, done = len(order), 0

        def run(batch_boxes: Dict[int, Box]) -> Dict[int, np.ndarray]:
            nonlocal done
            _check_cancel(cancel)
            self.ensure_embeddings(sorted(batch_boxes), cancel=cancel,
                                                     regions=self._regions(batch_boxes))
            decoded = self.decode(batch_boxes)
            result.recomputed.extend(self.last_recomputed)
            masks = {}
            for s in sorted(batch_boxes):
                masks[s] = self._store(result, s, batch_boxes[s], *decoded[s])
                if on_slice:
                    on_slice(s, masks[s])
            done += len(batch_boxes)
            if progress:
                progress(done, total, "segmenting slices")
            return masks

        # Walks (and key slices) go in groups, so that the embeddings read again stay a few chunks' worth.
        group = max(self.batch_size, DECODE_BATCH)
        previous: Dict[int, np.ndarray] = {}
        for start in range(0, len(key_slices), group):
            previous.update(run({s: boxes[s] for s in key_slices[start : start + group]}))
        # One walk per side of each gap: (current slice, step, last slice of the walk, previous mask or None)
        walks = []
        for a, b in zip(key_slices, key_slices[1:]):
            middle = (a + b) // 2
            if a + 1 <= middle:
                walks.append([a + 1, +1, middle, previous[a]])
            if b - 1 >= middle + 1:
                walks.append([b - 1, -1, middle + 1, previous[b]])
        while walks:
            remaining = []
            for start in range(0, len(walks), group):
                members = walks[start : start + group]
                batch = {}
                for walk in members:
                    s, _, _, mask = walk
                    guided = None if mask is None else box_from_mask(mask, margin)
                    how = guide
                    if guide == "auto":
                        small = zoom_region(boxes[s], self.slice_size, getattr(self.model, "input_size", 256))
                        how = "union" if small is not None else "off"
                    if guided is None or how == "off":
                        batch[s] = boxes[s]
                    else:
                        batch[s] = _combine_boxes(boxes[s], guided, how, self.slice_size)
                masks = run(batch)
                for walk in members:
                    s, step, last, mask = walk
                    # Where the mask vanishes the walk goes on with the interpolated boxes only.
                    walk[3] = masks[s] if mask is not None and masks[s].any() else None
                    if s != last:
                        walk[0] = s + step
                        remaining.append(walk)
            walks = remaining
        return result

    def _segment_interpolated(self, keys, progress, cancel, on_slice) -> SegmentationResult:
        boxes = interpolate_boxes(keys.boxes)
        order = sorted(boxes)
        result = self._empty_result()
        result.slice_range = (order[0], order[-1])
        total = len(order)
        done = 0
        # Decode a few slices together even when encoding one at a time (batched decoding is cheaper per box),
        # while the first masks still reach on_slice long before the volume is done.
        step = max(self.batch_size, DECODE_CHUNK)
        for start in range(0, total, step):
            _check_cancel(cancel)
            batch = order[start : start + step]
            self.ensure_embeddings(batch, cancel=cancel,
                                                     regions=self._regions({s: boxes[s] for s in batch}))
            _check_cancel(cancel)
            decoded = self.decode({s: boxes[s] for s in batch})
            result.recomputed.extend(self.last_recomputed)
            for s in batch:
                mask, iou = decoded[s]
                mask = self._store(result, s, boxes[s], mask, iou)
                if on_slice:
                    on_slice(s, mask)
            done += len(batch)
            if progress:
                progress(done, total, "segmenting slices")
        return result

    def _segment_propagated(self, keys, margin, progress, cancel, on_slice) -> SegmentationResult:
        ordered = keys.sorted()
        result = self._empty_result()
        key_slices = [k.slice_index for k in ordered]
        single = len(ordered) == 1
        # Each key owns the slices up to the midpoint towards its neighbours; the outermost keys bound the walks,
        # except that a single key walks to the ends of the volume.
        lowest, highest = (0, self.n_slices - 1) if single else (key_slices[0], key_slices[-1])
        walks: List[Tuple[int, int, int]] = []  # (start slice, step, last slice allowed)
        for n, key in enumerate(ordered):
            low_limit = lowest if n == 0 else (key_slices[n - 1] + key.slice_index) // 2 + 1
            high_limit = highest if n == len(ordered) - 1 else (key.slice_index + key_slices[n + 1]) // 2
            walks.append((key.slice_index, -1, low_limit))
            walks.append((key.slice_index, +1, high_limit))
        walks = [walk for walk in walks if walk[0] != walk[2]]
        # Between key slices the interpolated boxes say where the walk will be: their crops are encoded ahead.
        hints = interpolate_boxes(keys.boxes) if not single else {}
        estimated = sum(abs(last - start) for start, _, last in walks) + len(ordered)
        done = 0

        def report() -> None:
            if progress:
                progress(min(done, estimated), estimated, "segmenting slices")

        key_masks: Dict[int, np.ndarray] = {}
        self.ensure_embeddings(key_slices, cancel=cancel,
                                                 regions=self._regions({k.slice_index: k.box for k in ordered}))
        for key in ordered:
            _check_cancel(cancel)
            mask, iou = self.decode({key.slice_index: key.box})[key.slice_index]
            result.recomputed.extend(self.last_recomputed)
            mask = self._store(result, key.slice_index, key.box, mask, iou)
            key_masks[key.slice_index] = mask
            if on_slice:
                on_slice(key.slice_index, mask)
            done += 1
            report()
        for start, step, last in walks:
            previous = key_masks[start]
            s = start + step
            while (step > 0 and s <= last) or (step < 0 and s >= last):
                _check_cancel(cancel)
                box = box_from_mask(previous, margin)
                if box is None:
                    break
                ahead = list(range(s, last + step, step))[: self.batch_size]
                self._encode_walk_ahead(ahead, hints, cancel)
                region = self._walk_region(box, hints.get(s))
                self.ensure_embeddings([s], cancel=cancel, regions={s: region})
                mask, iou = self.decode({s: box}, regions={s: region})[s]
                result.recomputed.extend(self.last_recomputed)
                mask = self._store(result, s, box, mask, iou)
                if on_slice:
                    on_slice(s, mask)
                done += 1
                report()
                previous = mask
                s += step
        covered = sorted(result.boxes)
        result.slice_range = (covered[0], covered[-1])
        return result

    def _walk_region(self, box: Box, hint: Optional[Box]) -> Region:
        """A walked slice's crop: its interpolated box's crop when that holds ``box`` at the same scale (so it
        was encoded ahead), else the crop of ``box`` itself."""
        own = self.region_for(box)
        if own is None or hint is None:
            return own
        shared = self.region_for(hint)
        if shared is None or (shared[1] - shared[0], shared[3] - shared[2]) != (own[1] - own[0], own[3] - own[2]):
            return own
        return shared if _box_inside(box, shared) else own

    def _encode_walk_ahead(self, ahead: List[int], hints: Dict[int, Box], cancel) -> None:
        """Encode, as one batch, what the walk's next slices will most likely need: the whole slices (unless
        ``zoom="auto"`` crops them) and the crops of their interpolated boxes."""
        items: List[Tuple[int, Region]] = []
        for s in ahead:
            crop = self.region_for(hints[s]) if s in hints else None
            if crop is not None:
                items.append((s, crop))
            # Beyond the key slices a crop depends on the previous slice's mask: none is encoded ahead there.
            if self.zoom in ("off", "best", "union") or (s in hints and crop is None):
                items.append((s, None))
        self._encode_items(items, None, cancel)

def zoom_region(box: Box, slice_size: Tuple[int, int], input_size: int = 256, force: bool = False) -> Region:
    """The crop for ``zoom="auto"``: None when the box is not small in model pixels, else a square (clipped to
    the slice) around it whose side makes the box about :data:`ZOOM_TARGET` model pixels.

    The side is snapped up to a step of 2**(1/4) and the corner to a grid of 1/8 of the side, so that a box
    moving a little keeps its crop and the crop's cached embedding. ``force`` crops whatever the box's size
    (for ``retry``), still not when the crop would be most of the slice."""
    rows, cols = slice_size
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0 + 1.0, y1 - y0 + 1.0)
    longest = max(rows, cols)
    if side * input_size / longest >= ZOOM_BELOW and not force:
        return None
    wanted = max(side * input_size / ZOOM_TARGET, float(ZOOM_MIN_CROP))
    crop = int(round(2 ** (np.ceil(4 * np.log2(wanted)) / 4)))
    if crop >= 0.75 * longest:
        return None
    grid = max(1, crop // 8)

    def place(centre: float, size: int, extent: int) -> Tuple[int, int]:
        size = min(size, extent)
        start = int(round((centre - size / 2.0) / grid)) * grid
        start = min(max(start, 0), extent - size)
        return start, start + size

    r0, r1 = place((y0 + y1) / 2.0, crop, rows)
    c0, c1 = place((x0 + x1) / 2.0, crop, cols)
    if not _box_inside(box, (r0, r1, c0, c1)):
        return None  # a box that does not fit its crop is segmented on the whole slice
    return (r0, r1, c0, c1)


def _box_inside(box: Box, region: Tuple[int, int, int, int]) -> bool:
    """Whether ``box`` (x0, y0, x1, y1, inclusive pixels) lies inside the crop ``region``."""
    x0, y0, x1, y1 = box
    r0, r1, c0, c1 = region
    return c0 <= x0 and x1 <= c1 - 1 and r0 <= y0 and y1 <= r1 - 1


def _shift_box(box: Box, region: Region) -> Box:
    if region is None:
        return tuple(box)
    r0, _, c0, _ = region
    x0, y0, x1, y1 = box
    return (x0 - c0, y0 - r0, x1 - c0, y1 - r0)


def _paste(mask: np.ndarray, region: Region, slice_size: Tuple[int, int]) -> np.ndarray:
    if region is None:
        return mask
    full = np.zeros(slice_size, dtype=bool)
    r0, r1, c0, c1 = region
    full[r0:r1, c0:c1] = mask
    return full


def _combine_boxes(interpolated: Box, guided: Box, how: str, slice_size: Tuple[int, int]) -> Box:
    """The box of a guided slice from its interpolated box and the previous mask's box (see ``guide``)."""
    rows, cols = slice_size
    a, b = np.asarray(interpolated, dtype=float), np.asarray(guided, dtype=float)
    if how == "mask":
        combined = b
    elif how == "union":
        combined = np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])
    else:
        combined = (a + b) / 2.0
    x0, y0, x1, y1 = combined.tolist()
    return (max(x0, 0.0), max(y0, 0.0), min(x1, cols - 1.0), min(y1, rows - 1.0))


def refine_to_box(mask: np.ndarray, box: Box, margin: float = CLIP_MARGIN) -> np.ndarray:
    """``refine="box"``: the mask inside the box grown by ``margin``, holes filled."""
    from scipy import ndimage

    rows, cols = mask.shape
    x0, y0, x1, y1 = box
    r0, r1 = max(int(np.floor(y0 - margin)), 0), min(int(np.ceil(y1 + margin)), rows - 1)
    c0, c1 = max(int(np.floor(x0 - margin)), 0), min(int(np.ceil(x1 + margin)), cols - 1)
    out = np.zeros_like(mask, dtype=bool)
    out[r0 : r1 + 1, c0 : c1 + 1] = mask[r0 : r1 + 1, c0 : c1 + 1]
    if out.any():
        out = ndimage.binary_fill_holes(out)
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception from torch means the device ran out of memory."""
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def _release_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _check_cancel(cancel: Optional[CancelCheck]) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled by the user; nothing was changed")


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

