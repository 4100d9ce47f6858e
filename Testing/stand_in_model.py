"""The one small deterministic model for plumbing tests (cache, worker, effect, strategies), where the model's
answer only has to be predictable. Everything about accuracy uses the real LiteMedSAM."""

from __future__ import annotations

import numpy as np
import torch
from MedSAMSegmentLib.models import SliceModel


class StandInModel(SliceModel):
    """Encodes a slice as itself (one channel, float); decodes a box by ``rule``:

    * ``"bright"``: the pixels inside the box (ends inclusive) brighter than 127;
    * ``"inner"``: the box itself shrunk by one pixel on every side, whatever the pixels.

    Counts ``encoded`` slices and ``decoded`` calls and keeps the ``encoded_shapes``; ``fail_after_decodes=n``
    raises ``RuntimeError`` at the call after ``n`` decodes (a model failing mid-run).
    """

    name = "stand-in"
    device = "cpu"
    device_description = "CPU (test model)"

    def __init__(self, rule: str = "bright", fail_after_decodes: int = -1) -> None:
        if rule not in ("bright", "inner"):
            raise ValueError(f"unknown rule {rule!r}")
        self.rule = rule
        self.fingerprint = f"stand-in:{rule}"
        self.encoded = 0
        self.decoded = 0
        self.encoded_shapes = []
        self.fail_after_decodes = fail_after_decodes

    def encode(self, slices):
        self.encoded += len(slices)
        self.encoded_shapes.extend(np.shape(s) for s in slices)
        return torch.from_numpy(np.stack([np.asarray(s, dtype=np.float32) for s in slices]))[:, None]

    def decode(self, embeddings, boxes, original_size):
        if 0 <= self.fail_after_decodes <= self.decoded:
            raise RuntimeError("simulated model failure")
        self.decoded += 1
        rows, cols = original_size
        logits = np.full((len(boxes), rows, cols), -1.0, dtype=np.float32)
        for n, (embedding, box) in enumerate(zip(embeddings, boxes)):
            if self.rule == "inner":
                x0, y0, x1, y1 = box
                logits[n, int(np.ceil(y0)) + 1 : int(y1), int(np.ceil(x0)) + 1 : int(x1)] = 1.0
            else:
                image = embedding[0].numpy()
                x0, y0, x1, y1 = (int(round(v)) for v in box)
                inside = np.zeros(original_size, dtype=bool)
                inside[y0 : y1 + 1, x0 : x1 + 1] = True
                logits[n][inside & (image > 127)] = 1.0
        return logits, np.full(len(boxes), 0.9, dtype=np.float32)
