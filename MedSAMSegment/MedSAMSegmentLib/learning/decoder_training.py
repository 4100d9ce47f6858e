"""Training the last stage of LiteMedSAM's mask decoder on cached image embeddings: what Refine from my edits
(:mod:`refinement`, one target) and ``medsam-segment finetune`` (:mod:`finetune`, a cohort) share.

The stage trained is the small network that turns the mask token into the per-pixel mask weights (SAM's
``output_hypernetworks_mlps[0]``, the *head*). The image encoder, the prompt encoder and the decoder's transformer
stay fixed, so for each view and box the mask token and the upscaled image features are computed once
(:func:`head_example`) and a training step costs milliseconds: the mask's low-res logits are
``head(token) @ features`` (:func:`head_logits`). The loss is BCE + Dice (:func:`bce_dice`), the loss MedSAM was
fine-tuned with, taken in the decoder's own low-res frame.

Qt-free; torch is imported when a function here runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from ..engine import VolumeSegmenter
from ..engine.views import Region, first_view, other_view, shift_box
from ..geometry import Box
from ..models import SliceModel, box_prompt_decode


class NotTrainableError(ValueError):
    """The model's decoder cannot be trained here (only LiteMedSAM's can)."""


def require_trainable(model: SliceModel, what: str = "Refine from my edits") -> None:
    """Raise :class:`NotTrainableError` unless ``model`` is a LiteMedSAM whose decoder head can be trained."""
    if not all(hasattr(model, name) for name in ("net", "model_boxes", "resized_shape", "view_logits")):
        raise NotTrainableError(f"{what} works with LiteMedSAM; the {model.name or 'chosen'} model's decoder cannot "
                                "be adapted here: choose the LiteMedSAM model")


@dataclass(frozen=True)
class TrainingView:
    """One view of a slice to learn from: its cached image embedding, its box in view pixels, the target mask."""

    slice_index: int
    embedding: np.ndarray  # (256, 64, 64) float32
    box: Box
    target: np.ndarray  # bool, the view's size


class HeadExample(NamedTuple):
    """One training view's fixed tensors (one row per box along the first axis) and whether it is an anchor."""

    slice_index: int
    tokens: object  # (J, 256) mask tokens
    features: object  # (J, 32, rows, cols) upscaled features, the padding cut off
    target: object  # (J, rows, cols) the mask area-resized to the decoder's low-res frame
    anchor: bool


def mask_features(model: SliceModel, embeddings, boxes):
    """SAM's mask decoder up to its last stage, without gradients: ``(mask token (B, 256), upscaled image
    features (B, 32, 256, 256))`` for embeddings (B, 256, 64, 64) and boxes (B, 1, 4) in model pixels. The mask's
    low-res logits are ``hypernetwork(token) @ features`` (:func:`head_logits`)."""
    import torch

    prompt_encoder, decoder = model.net.prompt_encoder, model.net.mask_decoder
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=None, boxes=boxes, masks=None)
        tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        source = embeddings + dense
        position = torch.repeat_interleave(prompt_encoder.get_dense_pe(), tokens.shape[0], dim=0)
        batch, channels, height, width = source.shape
        hidden, source = decoder.transformer(source, position, tokens)
        source = source.transpose(1, 2).reshape(batch, channels, height, width)
        return hidden[:, 1, :], decoder.output_upscaling(source)


def head_logits(hypernetwork, tokens, features):
    """Low-res logits (B, 1, H, W) from mask tokens (B, 256) and upscaled features (B, 32, H, W)."""
    batch, channels, height, width = features.shape
    weights = hypernetwork(tokens)  # (B, 32)
    return (weights[:, None, :] @ features.reshape(batch, channels, height * width)).reshape(batch, 1, height, width)


def trainable_head(model: SliceModel):
    """A copy of ``model``'s decoder head, in training mode, with gradients on; ``model`` is not changed."""
    head = copy.deepcopy(model.net.mask_decoder.output_hypernetworks_mlps[0]).train()
    for parameter in head.parameters():
        parameter.requires_grad_(True)
    return head


class AdaptedModel(SliceModel):
    """``base`` with the last stage of its mask decoder replaced by ``hypernetwork`` (the image encoder, its
    fingerprint and so the cached embeddings are the base model's); ``adapted_to`` completes "mask decoder adapted
    to ..." in its description. Decodes in PyTorch."""

    def __init__(self, base: SliceModel, hypernetwork, adapted_to: str) -> None:
        require_trainable(base)
        self.base = base
        self.mask_decoder = copy.deepcopy(base.net.mask_decoder).eval()
        self.mask_decoder.output_hypernetworks_mlps[0] = hypernetwork.eval()
        for name in ("name", "fingerprint", "device", "device_description", "precision", "input_size"):
            setattr(self, name, getattr(base, name))
        self.acceleration = f"{base.acceleration}, mask decoder adapted to {adapted_to} (PyTorch)"

    def encode(self, slices):
        return self.base.encode(slices)

    def move_to(self, device: str) -> None:
        self.base.move_to(device)
        self.mask_decoder.to(self.base.device)
        self.device, self.device_description = self.base.device, self.base.device_description

    def decode(self, embeddings, boxes, original_size):
        import torch

        net = SimpleNamespace(prompt_encoder=self.base.net.prompt_encoder, mask_decoder=self.mask_decoder)
        with torch.inference_mode():
            logits, iou = self.base.view_logits(lambda e, b: box_prompt_decode(net, e, b), embeddings, boxes,
                                                original_size)
        return logits.float().cpu().numpy(), iou.float().cpu().numpy()


def training_views(segmenter: VolumeSegmenter, boxes: Dict[int, Box], masks: Dict[int, np.ndarray],
                   zoom: str) -> List[TrainingView]:
    """The views a run decodes each slice of ``masks`` in (its first view under ``zoom``, and the whole slice after
    a crop when ``zoom`` is ``best`` or ``union``), with the mask cut to each; ``boxes`` holds each slice's box.
    ``zoom="size"`` must have been resolved for the target first (:func:`engine.views.target_zoom`)."""
    if zoom == "size":
        raise ValueError("zoom 'size' is decided per target: resolve it with engine.views.target_zoom first")
    slice_size, input_size = segmenter.slice_size, segmenter.model.input_size
    views = []
    for index in sorted(masks):
        box = boxes[index]
        regions: List[Region] = [first_view(box, zoom, slice_size, input_size)]
        if regions[0] is not None and zoom in ("best", "union"):
            regions.append(other_view(box, regions[0], slice_size, input_size))
        for region in regions:
            target = masks[index] if region is None else region.cut(masks[index])
            views.append(TrainingView(index, segmenter.embedding(index, region), shift_box(box, region),
                                      np.ascontiguousarray(target, dtype=bool)))
    return views


def head_example(model: SliceModel, view: TrainingView, jitters: int, jitter: float, rng: np.random.Generator,
                 anchor: bool = False) -> HeadExample:
    """The fixed tensors of ``view`` seen with ``jitters`` boxes: its own and ``jitters - 1`` moved by up to
    ``jitter`` view pixels per side (drawn from ``rng``)."""
    import torch

    boxes = np.repeat(np.asarray([view.box], dtype=np.float32), jitters, axis=0)
    boxes[1:] = jitter_boxes(boxes[1:], view.target.shape, jitter, rng)
    embeddings = torch.from_numpy(np.repeat(np.asarray(view.embedding, dtype=np.float32)[None], jitters, axis=0))
    model_boxes = model.model_boxes(boxes, view.target.shape)
    tokens, features = mask_features(model, embeddings.to(model.device), model_boxes)
    # The loss is taken in the decoder's own low-res frame (the view resized to 256 on its longest side, no
    # padding): the target is area-resized to it once, so a step never resizes logits.
    rows, cols = model.resized_shape(view.target.shape)
    target = torch.from_numpy(view.target[None, None].astype(np.float32))
    target = torch.nn.functional.interpolate(target, size=(rows, cols), mode="area")[:, 0]
    features = features[..., :rows, :cols].contiguous()
    return HeadExample(view.slice_index, tokens, features, target.expand(jitters, -1, -1).to(model.device), anchor)


def jitter_boxes(boxes: np.ndarray, size: Tuple[int, int], amount: float, rng: np.random.Generator) -> np.ndarray:
    """``boxes`` (N, 4) with each side moved by up to ``amount`` pixels, kept inside an image of ``size`` and at
    least one pixel wide and high."""
    moved = boxes + rng.uniform(-amount, amount, size=boxes.shape).astype(np.float32)
    rows, cols = size
    moved[:, [0, 2]] = np.clip(moved[:, [0, 2]], 0, cols - 1)
    moved[:, [1, 3]] = np.clip(moved[:, [1, 3]], 0, rows - 1)
    moved[:, 2:] = np.maximum(moved[:, 2:], moved[:, :2] + 1)
    return moved


def bce_dice(logits, targets):
    """BCE + soft Dice (smoothed by 1) of logits (B, H, W) against targets in [0, 1] of the same shape."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, targets)
    probabilities = logits.sigmoid()
    overlap = (probabilities * targets).flatten(1).sum(1)
    total = probabilities.flatten(1).sum(1) + targets.flatten(1).sum(1)
    return bce + (1 - (2 * overlap + 1) / (total + 1)).mean()


def example_dice(head, example: HeadExample) -> float:
    """Hard DSC, in the low-res frame, of ``head``'s mask (logits > 0) for ``example``'s first box against its
    target (> 0.5); 1.0 when both are empty."""
    import torch

    with torch.no_grad():
        predicted = head_logits(head, example.tokens[:1].float(), example.features[:1].float())[0, 0] > 0
    target = example.target[0] > 0.5
    total = int(predicted.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & target).sum()) / total


def examples_for(model: SliceModel, views: Sequence[TrainingView], jitters: int, jitter: float,
                 rng: np.random.Generator, anchor: bool = False) -> List[HeadExample]:
    """:func:`head_example` of each view."""
    return [head_example(model, view, jitters, jitter, rng, anchor) for view in views]


def spread(indices: Sequence[int], count: int) -> List[int]:
    """Up to ``count`` of ``indices`` (sorted), evenly spread from the first to the last."""
    if count <= 0 or not indices:
        return []
    return [indices[int(j)] for j in np.unique(np.linspace(0, len(indices) - 1, count).round())]
