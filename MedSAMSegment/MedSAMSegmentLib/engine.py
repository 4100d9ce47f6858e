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
  key slices are walked from the nearer one). One key box is enough to segment a whole structure.
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

STRATEGIES = ("interpolate", "propagate")
#: Predicted IoU below this flags a slice for review.
LOW_IOU = 0.6
#: A slice whose mask area differs from both neighbours by more than this factor is flagged for review.
AREA_JUMP = 2.0

#: Slices decoded together in an interpolated run.
DECODE_CHUNK = 4

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
    encoded: int = 0  # slices whose image embedding was computed in this call
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
        self._keys: Dict[int, str] = {}
        self._decoded: Dict[int, Tuple[Box, np.ndarray, float]] = {}

    @property
    def n_slices(self) -> int:
        return int(self.volume.shape[self.slice_axis])

    # -- embeddings ---------------------------------------------------------------------------------------
    def slice_image(self, index: int) -> np.ndarray:
        return take_slice(self.volume, self.slice_axis, index)

    def _key(self, index: int) -> str:
        if index not in self._keys:
            self._keys[index] = EmbeddingCache.key(self.model.fingerprint, self.slice_image(index))
        return self._keys[index]

    def ensure_embeddings(
        self,
        indices: Iterable[int],
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
    ) -> int:
        """Encode, in batches, the slices among ``indices`` whose embeddings are not cached; returns how many."""
        missing = [s for s in indices if self.cache.get(self._key(s)) is None]
        done = 0
        while done < len(missing):
            _check_cancel(cancel)
            batch = missing[done : done + self.batch_size]
            try:
                embeddings = self.model.encode([self.slice_image(s) for s in batch])
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                self._recover_from_out_of_memory(exc)
                continue
            array = embeddings.float().cpu().numpy()
            for s, emb in zip(batch, array):
                self.cache.put(self._key(s), emb)
            done += len(batch)
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

    def embedding(self, index: int) -> np.ndarray:
        value = self.cache.get(self._key(index))
        if value is None:
            self.ensure_embeddings([index])
            value = self.cache.get(self._key(index))
        assert value is not None
        return value

    # -- decoding -----------------------------------------------------------------------------------------
    def decode(self, boxes: Dict[int, Box]) -> Dict[int, Tuple[np.ndarray, float]]:
        """Masks and IoU for ``{slice: box}``; reuses the result of a slice whose box is unchanged."""
        import torch

        out: Dict[int, Tuple[np.ndarray, float]] = {}
        todo = []
        for s, box in boxes.items():
            previous = self._decoded.get(s)
            if previous is not None and previous[0] == tuple(box):
                out[s] = (previous[1], previous[2])
            else:
                todo.append(s)
        for start in range(0, len(todo), max(self.batch_size, 8)):
            batch = todo[start : start + max(self.batch_size, 8)]
            embeddings = torch.from_numpy(np.stack([self.embedding(s) for s in batch]))
            logits, iou = self.model.decode(embeddings, np.array([boxes[s] for s in batch]), self.slice_size)
            for s, lg, score in zip(batch, logits, iou):
                mask = lg > 0
                self._decoded[s] = (tuple(boxes[s]), mask, float(score))
                out[s] = (mask, float(score))
        self.last_recomputed = todo
        return out

    # -- strategies ---------------------------------------------------------------------------------------
    def segment(
        self,
        key_boxes: KeyBoxSet,
        strategy: str = "interpolate",
        propagate_margin: float = 3.0,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        on_slice: Optional[SliceCallback] = None,
    ) -> SegmentationResult:
        """Segment the volume from key boxes. Raises :class:`Cancelled` when ``cancel()`` turns true."""
        if key_boxes.slice_axis != self.slice_axis:
            raise ValueError(
                f"key boxes lie along axis {key_boxes.slice_axis} but this segmenter slices along {self.slice_axis}"
            )
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        keys = validate_key_boxes(key_boxes, self.volume.shape[:3])
        started = time.perf_counter()
        if strategy == "interpolate":
            result = self._segment_interpolated(keys, progress, cancel, on_slice)
        else:
            result = self._segment_propagated(keys, propagate_margin, progress, cancel, on_slice)
        result.flagged = flag_slices(result)
        result.seconds = time.perf_counter() - started
        return result

    def _empty_result(self) -> SegmentationResult:
        return SegmentationResult(
            mask=np.zeros(self.volume.shape[:3], dtype=bool), slice_axis=self.slice_axis, slice_range=(0, 0)
        )

    def _store(self, result: SegmentationResult, s: int, box: Box, mask: np.ndarray, iou: float) -> None:
        selector: List[object] = [slice(None)] * 3
        selector[self.slice_axis] = s
        result.mask[tuple(selector)] = mask
        result.boxes[s] = tuple(box)
        result.iou[s] = iou

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
            result.encoded += self.ensure_embeddings(batch, cancel=cancel)
            _check_cancel(cancel)
            decoded = self.decode({s: boxes[s] for s in batch})
            result.recomputed.extend(self.last_recomputed)
            for s in batch:
                mask, iou = decoded[s]
                self._store(result, s, boxes[s], mask, iou)
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
        # Each key owns the slices up to the midpoint towards its neighbours, and everything beyond the ends.
        walks: List[Tuple[int, int, int]] = []  # (start slice, step, last slice allowed)
        for n, key in enumerate(ordered):
            low_limit = 0 if n == 0 else (key_slices[n - 1] + key.slice_index) // 2 + 1
            high_limit = self.n_slices - 1 if n == len(ordered) - 1 else (key.slice_index + key_slices[n + 1]) // 2
            walks.append((key.slice_index, -1, low_limit))
            walks.append((key.slice_index, +1, high_limit))
        estimated = sum(abs(last - start) for start, _, last in walks) + len(ordered)
        done = 0

        def report() -> None:
            if progress:
                progress(min(done, estimated), estimated, "segmenting slices")

        key_masks: Dict[int, np.ndarray] = {}
        for key in ordered:
            _check_cancel(cancel)
            result.encoded += self.ensure_embeddings([key.slice_index], cancel=cancel)
            mask, iou = self.decode({key.slice_index: key.box})[key.slice_index]
            result.recomputed.extend(self.last_recomputed)
            self._store(result, key.slice_index, key.box, mask, iou)
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
                result.encoded += self.ensure_embeddings(ahead, cancel=cancel)
                mask, iou = self.decode({s: box})[s]
                result.recomputed.extend(self.last_recomputed)
                self._store(result, s, box, mask, iou)
                if on_slice:
                    on_slice(s, mask)
                done += 1
                report()
                previous = mask
                s += step
        covered = sorted(result.boxes)
        result.slice_range = (covered[0], covered[-1])
        return result


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


def segment_volume(
    model: SliceModel,
    volume_u8: np.ndarray,
    key_boxes: KeyBoxSet,
    strategy: str = "interpolate",
    cache: Optional[EmbeddingCache] = None,
    batch_size: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    on_slice: Optional[SliceCallback] = None,
) -> SegmentationResult:
    """One-shot convenience: a :class:`VolumeSegmenter` for one call."""
    segmenter = VolumeSegmenter(model, volume_u8, key_boxes.slice_axis, cache=cache, batch_size=batch_size)
    return segmenter.segment(key_boxes, strategy=strategy, progress=progress, cancel=cancel, on_slice=on_slice)

