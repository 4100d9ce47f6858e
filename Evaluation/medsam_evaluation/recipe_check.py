"""The published recipe's runs in an evaluation, sharing the engine's work only where checked to be the same.

The recipe reuses the engine's embeddings only when a check on the case's first target slice shows that its own
encoder gives the same embedding (``recipe="shared"``, the default); otherwise, or with ``recipe="full"``, it
encodes every slice itself. Likewise it decodes its boxes through the engine's batched decoder only when, on the
case's first, middle and last target slices, that gives the recipe's own masks (at most :data:`SAME_MASK_PIXELS`
of a mask's pixels differ); then the recipe's seconds count its own encoder and decoder times per slice, measured
on those slices.
"""

from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

import numpy as np
from MedSAMSegmentLib.geometry import KeyBoxSet, interpolate_boxes, put_slice, take_slice

from . import baselines
from .methods import RECIPE_METHODS

#: Relative L2 difference below which the recipe's embedding counts as the engine's (numerically the same).
SAME_EMBEDDING_TOLERANCE = 1e-5
#: The recipe's boxes are decoded by the engine's batched decoder when, on sample slices, at most this fraction of
#: the recipe's mask pixels differ (the decoders' logits agree within 2e-5: a pixel changes side only at |logit|
#: below that).
SAME_MASK_PIXELS = 1e-3


def make_recipe_runner(model, methods: Sequence[str]) -> Optional[baselines.PublishedRecipe]:
    """The published recipe on ``model``'s network, warmed up once (its input is always 256x256, so one call
    serves every case's timed encoder call); None when no recipe method runs."""
    if model is None or not any(m in RECIPE_METHODS for m in methods):
        return None
    runner = baselines.PublishedRecipe(net=model.net, device=model.device)
    runner.encode(np.zeros((runner.image_size,) * 2, dtype=np.uint8))
    return runner


class RecipeRun:
    """The recipe on one case: its embeddings (own or the engine's, per the check) and its decoder path."""

    def __init__(self, recipe_runner, model, volume_u8: np.ndarray, axis: int, cache, batch_size, first: int,
                 last: int, mode: str, every: KeyBoxSet, present: np.ndarray) -> None:
        # The recipe sees the published intensities; for CT (and wherever the rules agree) its slices are the
        # engine's own pixels, so the shared cache already holds their embeddings.
        from MedSAMSegmentLib.engine import VolumeSegmenter

        self.runner = recipe_runner
        self.volume_u8 = volume_u8
        self.segmenter = VolumeSegmenter(model, volume_u8, axis, cache=cache, batch_size=batch_size)
        self.embeddings, self.encode_per_slice = recipe_embeddings(recipe_runner, self.segmenter, volume_u8, axis,
                                                                   first, last, mode)
        self.decode_per_slice: Optional[float] = None  # set when the engine's decoder gives the recipe's masks
        if self.embeddings is not None and len(self.embeddings) > 1:  # the engine's embeddings serve it
            self.decode_per_slice = recipe_decoder_check(recipe_runner, self.segmenter, self.embeddings, every,
                                                         present)

    def run(self, keys: KeyBoxSet):
        """``(result, seconds, cold seconds, slices segmented)`` of the recipe with ``keys``."""
        t0 = time.perf_counter()
        if self.decode_per_slice is not None:
            result = recipe_by_engine(self.segmenter, keys)
            seconds = time.perf_counter() - t0
            n_slices = len(result.boxes)
            return result, seconds, n_slices * (self.encode_per_slice + self.decode_per_slice), n_slices
        result = self.runner.segment_volume(self.volume_u8, keys, embeddings=self.embeddings)
        seconds = time.perf_counter() - t0
        n_slices = len(result.boxes)
        if self.embeddings is None:  # "full": it encoded every slice itself
            return result, seconds, seconds, n_slices
        cold = result.decode_seconds + n_slices * self.encode_per_slice
        return result, seconds, cold, n_slices


def recipe_embeddings(recipe_runner, segmenter, volume_u8, axis, first, last, mode):
    """``(embeddings dict or None, recipe encoder seconds per slice)``.

    Encodes the first target slice with the recipe (timed); in ``shared`` mode, when that embedding equals the
    engine's embedding of the same pixels (``segmenter`` holds the recipe's uint8 volume), the engine's embeddings
    serve the recipe for every slice. Otherwise the recipe keeps its own
    (``shared``: encoded once per slice and reused across spacings; ``full``: None, it encodes every run).
    """
    import torch

    slice_u8 = take_slice(volume_u8, axis, first)
    t0 = time.perf_counter()  # the runner was warmed up once at its one input shape (256x256)
    embedding, new_size, original_size = recipe_runner.encode(slice_u8)
    per_slice = time.perf_counter() - t0
    if mode == "full":
        return None, per_slice
    embeddings: Dict[int, tuple] = {first: (embedding, new_size, original_size)}
    if segmenter is not None:
        engine_embedding = segmenter.embedding(first)
        ours = embedding[0].cpu().numpy()
        difference = float(np.linalg.norm(ours - engine_embedding) / max(np.linalg.norm(ours), 1e-12))
        if difference <= SAME_EMBEDDING_TOLERANCE:
            segmenter.ensure_embeddings(range(first, last + 1))  # batched, on the engine's encoder path
            for s in range(first, last + 1):
                tensor = torch.from_numpy(np.ascontiguousarray(segmenter.embedding(s)))[None]
                embeddings[s] = (tensor.to(recipe_runner.device), new_size, original_size)
    return embeddings, per_slice


def recipe_decoder_check(recipe_runner, segmenter, embeddings, every: KeyBoxSet, present) -> Optional[float]:
    """The recipe's decoder seconds per slice (median of its own calls) when the engine's batched decoder gives
    its masks on the first, middle and last target slices (:data:`SAME_MASK_PIXELS`); None when it does not."""
    boxes = {k.slice_index: k.box for k in every.boxes}
    samples = sorted({int(present[0]), int(present[len(present) // 2]), int(present[-1])})
    ours = segmenter.decode({s: boxes[s] for s in samples})
    times = []
    for s in samples:
        embedding, new_size, original_size = embeddings[s]
        recipe_runner.decode(embedding, boxes[s], new_size, original_size)  # warm-up at this shape
        t0 = time.perf_counter()
        mask, _ = recipe_runner.decode(embedding, boxes[s], new_size, original_size)
        times.append(time.perf_counter() - t0)
        differing = int(np.count_nonzero(mask != ours[s][0]))
        if differing > SAME_MASK_PIXELS * max(int(mask.sum()), 1):
            return None
    return float(np.median(times))


def recipe_by_engine(segmenter, keys: KeyBoxSet) -> baselines.RecipeResult:
    """The recipe's result for ``keys`` (interpolated boxes, whole slices, published intensities) decoded in
    batches by ``segmenter``, whose embeddings and decoder were checked to give the recipe's own."""
    boxes = interpolate_boxes(keys.boxes)
    t0 = time.perf_counter()
    decoded = segmenter.decode(boxes)
    mask = np.zeros(segmenter.volume.shape[:3], dtype=bool)
    for s, (slice_mask, _) in decoded.items():
        put_slice(mask, keys.slice_axis, s, slice_mask)
    return baselines.RecipeResult(mask, {s: iou for s, (_, iou) in decoded.items()}, boxes, 0.0,
                                  time.perf_counter() - t0)
