"""Fine-tune LiteMedSAM's mask decoder on a cohort of revised cases (``medsam-segment finetune``).

Each case is an image and its reference mask (a segmentation the expert revised). From each case
:func:`case_views` takes up to :attr:`FinetuneSettings.slices_per_case` slices holding the target, evenly spread,
each with the box an annotator would draw (the mask's bounding box plus ``margin`` pixels, or such boxes
interpolated between key slices), in the views a run decodes it in. :func:`split_for_validation` holds out every
``validation_every``-th case whole (or, with fewer cases, every ``validation_every``-th slice of each case).
:func:`fine_tune` trains the last stage of the mask decoder (the head, :mod:`decoder_training`) on the rest with
BCE + Dice for ``epochs`` epochs and keeps the epoch whose head gives the held-out slices the best mean DSC. The
image encoder, so every cached embedding, stays the bundled model's.

:func:`save_fine_tuned` writes a complete LiteMedSAM checkpoint (``--checkpoint``, the Slicer effect and
``batch`` take it as they take ``lite_medsam.pth``) whose provenance (the base weights, the cases and their
files' SHA-256, the settings, the loss curve, the validation) travels inside it; :func:`checkpoint_provenance`
reads it back. The file is tensors and one JSON string: it loads with ``torch.load(weights_only=True)``.

Qt-free; torch is imported when a function here runs.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine import CancelCheck, ProgressCallback, VolumeSegmenter, check_cancel
from ..engine.views import target_zoom
from ..geometry import KeyBox, KeyBoxSet, box_from_mask, interpolate_boxes, take_slice
from ..models import SliceModel
from ..models.checkpoints import PROVENANCE_KEY, load_checkpoint
from ..settings import option
from .decoder_training import (
    HeadExample,
    TrainingView,
    bce_dice,
    example_dice,
    head_example,
    head_logits,
    require_trainable,
    spread,
    trainable_head,
    training_views,
)

#: The decoder head's parameter names in a LiteMedSAM state dict start with this.
HEAD_PREFIX = "mask_decoder.output_hypernetworks_mlps.0."
#: A slice takes part when its reference mask has at least this many pixels.
MIN_TARGET_PIXELS = 4
#: Where a training slice's box comes from (``FinetuneSettings.boxes``).
BOX_SOURCES = ("annotator", "interpolated")
#: What the validation holds out (``FinetuneSettings.hold_out``).
HOLD_OUTS = ("cases", "slices")


class FinetuneError(ValueError):
    """The cases or settings cannot be fine-tuned on; the message names the problem and what to do."""


@dataclass(frozen=True)
class FinetuneSettings:
    """``epochs`` passes over the training slices in steps of ``views_per_step`` views, Adam with ``learning_rate``;
    up to ``slices_per_case`` slices per case, each boxed (``boxes``: ``annotator``, its mask's bounding box plus
    ``margin`` pixels; ``interpolated``, such boxes every ``key_spacing`` target slices interpolated between) and
    seen with ``jitters`` boxes (its own and boxes moved by up to ``jitter`` pixels per side); every
    ``validation_every``-th slice of a case is held out; ``seed`` fixes the jitter and the order. Raises
    :class:`FinetuneError` for a value out of range."""

    epochs: int = option(10, "passes over the training slices", type=int)
    learning_rate: float = option(1e-4, "Adam's learning rate", type=float)
    views_per_step: int = option(16, "views per training step", type=int)
    slices_per_case: int = option(8, "slices taken from each case, evenly spread", type=int)
    margin: float = option(3.0, "pixels added around each mask's bounding box to make its box", type=float)
    boxes: str = option("annotator", "each training slice's box: annotator (its mask's box + margin) or "
                        "interpolated (boxes every --key-spacing target slices, interpolated between, as a run "
                        "gets them)", BOX_SOURCES)
    key_spacing: int = option(5, "with --boxes interpolated: target slices between key boxes", type=int)
    jitters: int = option(2, "boxes each training view is seen with (its own and moved ones)", type=int)
    jitter: float = option(3.0, "pixels a moved box's sides move at most", type=float)
    validation_every: int = option(4, "every Nth case (or slice of a case) is held out for validation", type=int)
    hold_out: str = option("cases", "what the epoch is chosen on: whole cases held out (cases; slices of each case "
                           "with fewer cases than --validation-every) or slices of every case (slices)", HOLD_OUTS)
    seed: int = option(0, "seed of the jitter and the order", type=int)

    def __post_init__(self) -> None:
        if (self.epochs < 1 or not self.learning_rate > 0 or self.views_per_step < 1 or self.slices_per_case < 2
                or self.margin < 0 or self.jitters < 1 or self.jitter < 0 or self.validation_every < 2):
            raise FinetuneError("finetune settings: give epochs >= 1, a positive learning rate, views per step >= 1, "
                                "slices per case >= 2, margin and jitter >= 0, jitters >= 1 and validation every "
                                ">= 2")
        if self.hold_out not in HOLD_OUTS:
            raise FinetuneError(f"--hold-out {self.hold_out!r}: use one of {', '.join(HOLD_OUTS)}")
        if self.boxes not in BOX_SOURCES or self.key_spacing < 1:
            raise FinetuneError(f"--boxes {self.boxes!r}: use one of {', '.join(BOX_SOURCES)}, with a key spacing "
                                ">= 1")


@dataclass(frozen=True)
class CaseViews:
    """One case's training and validation views (slices of the slice axis named in each view)."""

    name: str
    train: List[TrainingView]
    validation: List[TrainingView]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    validation_dice: float


@dataclass
class FineTuned:
    """What :func:`fine_tune` made: the head of the best epoch (``best_epoch``; 0 would be the base head, which is
    never returned), the held-out slices' mean DSC with the base head and with it, the curve, and counts."""

    head: object
    best_epoch: int
    base_validation_dice: float
    validation_dice: float
    history: List[EpochRecord] = field(default_factory=list)
    train_examples: int = 0
    validation_examples: int = 0
    seconds: float = 0.0

    @property
    def improved(self) -> bool:
        return self.validation_dice > self.base_validation_dice


def target_slices(reference: np.ndarray, slice_axis: int) -> List[int]:
    """The slices along ``slice_axis`` where ``reference`` holds at least :data:`MIN_TARGET_PIXELS` pixels."""
    axes = tuple(a for a in range(reference.ndim) if a != slice_axis)
    counts = np.count_nonzero(reference, axis=axes)
    return [int(i) for i in np.flatnonzero(counts >= MIN_TARGET_PIXELS)]


def case_views(name: str, segmenter: VolumeSegmenter, reference: np.ndarray, settings: FinetuneSettings,
               zoom: str, box_sizes: str) -> CaseViews:
    """The views of one case (``segmenter`` holds its image; ``reference`` its mask, the same shape) to train and
    validate on, under the run's ``zoom`` and ``box_sizes`` (interpolated boxes are sized as a run sizes them);
    encodes what the segmenter's cache does not hold. Raises :class:`FinetuneError` when the mask's shape differs
    from the image's or it holds no target."""
    if reference.shape != segmenter.volume.shape[:3]:
        raise FinetuneError(f"case {name}: the reference mask's shape {reference.shape} differs from the image's "
                            f"{segmenter.volume.shape[:3]}; give the mask drawn on that image")
    axis = segmenter.slice_axis
    targets = target_slices(reference, axis)
    slices = spread(targets, settings.slices_per_case)
    if not slices:
        raise FinetuneError(f"case {name}: the reference mask is empty; give cases whose label holds the target "
                            "(check label_values)")
    masks = {i: np.asarray(take_slice(reference, axis, i), dtype=bool) for i in slices}
    if settings.boxes == "interpolated":
        keys = sorted(set(targets[:: settings.key_spacing]) | {targets[-1]})
        drawn = [KeyBox(i, box_from_mask(np.asarray(take_slice(reference, axis, i)), settings.margin)) for i in keys]
        boxes = interpolate_boxes(drawn, box_sizes)
    else:
        boxes = {i: box_from_mask(mask, settings.margin) for i, mask in masks.items()}
    held = set(slices[settings.validation_every // 2 :: settings.validation_every]) if len(slices) > 1 else set()
    zoom = target_zoom(zoom, KeyBoxSet(axis, [KeyBox(i, boxes[i]) for i in slices]), segmenter.slice_size,
                       segmenter.model.input_size)  # a run decides once per target, as here
    views = training_views(segmenter, boxes, masks, zoom)
    return CaseViews(name, [v for v in views if v.slice_index not in held],
                     [v for v in views if v.slice_index in held])


def examples_of(model: SliceModel, cases: Sequence[CaseViews], settings: FinetuneSettings
                ) -> Tuple[List[HeadExample], List[HeadExample]]:
    """Training examples (``jitters`` boxes each) and validation examples (the annotator's box only) of
    ``cases``; features are kept in half precision (a view of 256 x 256 takes 4 MB per box)."""
    rng = np.random.default_rng(settings.seed)

    def compact(example: HeadExample) -> HeadExample:
        return example._replace(features=example.features.half())

    train = [compact(head_example(model, v, settings.jitters, settings.jitter, rng)) for c in cases for v in c.train]
    validation = [compact(head_example(model, v, 1, 0.0, rng)) for c in cases for v in c.validation]
    return train, validation


def split_for_validation(examples: Dict[str, Tuple[List[HeadExample], List[HeadExample]]],
                         settings: FinetuneSettings) -> Tuple[List[HeadExample], List[HeadExample], str]:
    """``(training, validation, what was held out)`` from each case's ``(training, validation)`` examples (in the
    cases' order). With ``hold_out="cases"`` and at least ``validation_every`` cases, every
    ``validation_every``-th case is held out whole (a check on cases not trained on, as a new case will be);
    otherwise each case's held-out slices are."""
    names = list(examples)
    if settings.hold_out == "cases" and len(names) >= settings.validation_every:
        held = set(names[settings.validation_every // 2 :: settings.validation_every])
        train = [e for name in names if name not in held for part in examples[name] for e in part]
        validation = [e for name in names if name in held for part in examples[name] for e in part]
        return train, validation, f"{len(held)} held-out case(s)"
    train = [e for name in names for e in examples[name][0]]
    validation = [e for name in names for e in examples[name][1]]
    return train, validation, "held-out slices of the training cases"


def fine_tune(model: SliceModel, train: Sequence[HeadExample], validation: Sequence[HeadExample],
              settings: Optional[FinetuneSettings] = None, progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelCheck] = None) -> FineTuned:
    """Train a copy of ``model``'s decoder head on ``train`` and keep the epoch best on ``validation`` (see the
    module); ``model`` is not changed. Raises :class:`FinetuneError` when either set is empty."""
    import torch

    require_trainable(model, "finetune")
    settings = settings or FinetuneSettings()
    if not train or not validation:
        raise FinetuneError(f"{len(train)} training and {len(validation)} validation views: give more cases, or "
                            "cases whose targets span more slices")
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    head = trainable_head(model)
    optimiser = torch.optim.Adam(head.parameters(), lr=settings.learning_rate)
    base = _mean_dice(head, validation)
    best, best_state, best_epoch, history = base, None, 0, []
    steps_per_epoch = -(-len(train) // settings.views_per_step)
    total = settings.epochs * steps_per_epoch
    for epoch in range(1, settings.epochs + 1):
        order, losses = rng.permutation(len(train)), []
        for step, start in enumerate(range(0, len(train), settings.views_per_step)):
            check_cancel(cancel)
            batch = [train[i] for i in order[start : start + settings.views_per_step]]
            optimiser.zero_grad()
            with torch.enable_grad():
                for example in batch:
                    logits = head_logits(head, example.tokens, example.features.float())[:, 0]
                    loss = bce_dice(logits, example.target) / len(batch)
                    loss.backward()
                    losses.append(float(loss.detach()) * len(batch))
            optimiser.step()
            if progress is not None:
                progress((epoch - 1) * steps_per_epoch + step + 1, total,
                         f"fine-tuning, epoch {epoch}/{settings.epochs} (loss {np.mean(losses):.4f})")
        score = _mean_dice(head, validation)
        history.append(EpochRecord(epoch, float(np.mean(losses)), score))
        if best_state is None or score > best:
            best, best_state, best_epoch = score, copy.deepcopy(head.state_dict()), epoch
    head.load_state_dict(best_state)
    return FineTuned(head.eval(), best_epoch, base, best, history, len(train), len(validation),
                     time.perf_counter() - started)


def _mean_dice(head, examples: Sequence[HeadExample]) -> float:
    head.eval()
    score = float(np.mean([example_dice(head, example) for example in examples]))
    head.train()
    return score


def fine_tuned_state(model: SliceModel, head) -> Dict[str, object]:
    """``model``'s complete state dict with the decoder head's weights replaced by ``head``'s."""
    state = {name: value.detach().clone() for name, value in model.net.state_dict().items()}
    for name, value in head.state_dict().items():
        if HEAD_PREFIX + name not in state:
            raise FinetuneError(f"the head's parameter {name} is not in the model: fine-tune a LiteMedSAM")
        state[HEAD_PREFIX + name] = value.detach().clone()
    return state


def save_fine_tuned(path: str, model: SliceModel, head, provenance: Dict[str, object]) -> None:
    """Write the checkpoint of ``model`` with ``head`` and ``provenance`` (JSON-serialisable) to ``path``
    atomically: a file already there is replaced only once the new one is complete."""
    import torch

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FinetuneError(f"cannot write {path}: the folder {folder} does not exist; create it or choose another")
    partial = f"{path}.partial"
    try:
        torch.save({"model": fine_tuned_state(model, head), PROVENANCE_KEY: json.dumps(provenance, sort_keys=True)},
                   partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def checkpoint_provenance(path: str) -> Optional[Dict[str, object]]:
    """The provenance :func:`save_fine_tuned` stored in the checkpoint at ``path`` (None for other checkpoints)."""
    return load_checkpoint(path)[1]
