"""Refine from my edits: adapt a copy of LiteMedSAM's mask decoder to the slices the expert corrected, and segment
the other slices again with it.

After a run the expert corrects some slices (paints, erases, or accepts a slice as it is). Each corrected slice is
a labelled example of exactly this target on this scanner, and its image embedding is already cached.
:func:`refine_from_corrections` adapts the last stage of a per-session copy of the mask decoder (the small network
that turns the mask token into the per-pixel mask weights, SAM's ``output_hypernetworks_mlps[0]``) with BCE + Dice,
the loss MedSAM was fine-tuned with; the image encoder, the prompt encoder and the decoder's transformer stay
fixed, so their outputs are computed once per view and each step costs milliseconds. Then it decodes the other
slices again with the adapted decoder, each with the box and the options the run used. The corrected slices are
never changed.

It protects itself twice. By leave-one-out: each corrected slice in turn is held out of the training and decoded
with a decoder adapted to the others; an adaptation (then trained on all corrected slices) is kept only when the
held-out slices' mean DSC against the expert's masks rises and none of them falls by more than
:data:`FOLD_TOLERANCE`. And, with :attr:`RefineSettings.free_first` (off by default), by the run's confident
slices: the expert corrects the worst slices, which need not
resemble the rest, so a decoder adapted freely to them may undo what the run did well. The free adaptation is
kept only when, on the untouched slices the run was confident of (predicted IoU at least
:attr:`RefineSettings.confident_iou`), its masks agree with the run's (mean DSC at least
:attr:`RefineSettings.agreement`). Otherwise the adaptation is made again with anchors: untouched slices trained
to keep the run's masks beside the corrected ones, under the same leave-one-out check. When neither holds the
result is the original run with the expert's slices, and :attr:`Refinement.kept` is False.

Which adaptation is tried, and where it is applied, follows where the expert corrected (the defaults of
:class:`RefineSettings`): corrections inside the target get the free adaptation over every untouched slice;
corrections next to its ends get the anchored one, applied only between the key boxes around them.

Qt-free; torch is imported when a refinement runs.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..engine import CancelCheck, ProgressCallback, SegmentationResult, VolumeSegmenter, check_cancel, flag_slices
from ..engine.views import refine_to_box, resolve_zoom
from ..geometry import Box, KeyBoxSet, put_slice, take_slice
from ..metrics import dice
from ..models import SliceModel
from ..settings import SegmentationSettings
from .decoder_training import (
    AdaptedModel,
    HeadExample,
    NotTrainableError,
    TrainingView,
    bce_dice,
    examples_for,
    head_logits,
    require_trainable,
    spread,
    trainable_head,
    training_views,
)

#: Corrected slices needed: leave-one-out needs one to train on and one to hold out.
MIN_CORRECTED = 2
#: Untouched slices decoded again per cancel check.
REDECODE_CHUNK = 8
#: A held-out corrected slice may lose at most this much DSC with the adapted decoder.
FOLD_TOLERANCE = 0.01
#: ``interior_free``: a corrected slice is inside the target when it lies at least this share of the key boxes'
#: range ...
INSIDE_SHARE = 0.2
#: ... and at least this many slices from both of its ends.
INSIDE_SLICES = 2


class RefinementError(ValueError):
    """The corrections cannot refine this run; the message names the problem and what to do."""


@dataclass(frozen=True)
class RefineSettings:
    """How the decoder's last stage is adapted: ``steps`` Adam steps of ``learning_rate`` over every training
    view, each view seen with ``jitters`` boxes (the run's box and boxes moved by up to ``jitter`` view pixels per
    side), seeded by ``seed``.

    With ``free_first``, the decoder is first adapted to the corrected slices alone, and that is kept when the
    untouched slices with a predicted IoU of at least ``confident_iou`` keep a mean DSC of at least
    ``agreement`` with the run's masks (or there are none). Otherwise ``anchors`` untouched slices, evenly
    spread, are trained to keep the run's own masks, with ``anchor_weight`` times the corrected slices' weight,
    so that a correction of the worst slices does not unlearn what the decoder did well (0: no anchors).

    With ``interior_free``, the free adaptation is tried first when every corrected slice lies inside the target
    (:func:`corrections_inside`: away from the first and last key box), and the anchored one otherwise or when the
    free one fails its leave-one-out check. The decision reads only where the expert corrected, not the model's
    confidence: slices corrected at the target's ends teach a decoder the ends' shapes, which it then applies to
    the body; slices corrected inside show what the model gets wrong about the target itself.

    With ``anchored_near``, an anchored adaptation decodes again only the untouched slices near the corrections
    (:func:`slices_near`: between the key boxes on either side of each corrected slice), and the run's masks stay
    elsewhere; a free adaptation still decodes every untouched slice. Both are on by default (docs/accuracy.md,
    "Where the corrections lie")."""

    steps: int = 100
    learning_rate: float = 3e-4
    jitters: int = 4
    jitter: float = 2.0
    seed: int = 0
    anchors: int = 6
    anchor_weight: float = 1.0
    free_first: bool = False
    interior_free: bool = True
    anchored_near: bool = True
    confident_iou: float = 0.9
    agreement: float = 0.9

    def __post_init__(self) -> None:
        if (self.steps < 1 or not self.learning_rate > 0 or self.jitters < 1 or self.jitter < 0 or self.anchors < 0
                or self.anchor_weight < 0 or not 0 <= self.confident_iou <= 1 or not 0 <= self.agreement <= 1):
            raise RefinementError("refine settings: give steps >= 1, a positive learning rate, jitters >= 1, "
                                  "jitter, anchors and anchor weight >= 0, and a confident IoU and an agreement "
                                  "between 0 and 1")


@dataclass
class Refinement:
    """What :func:`refine_from_corrections` did. ``result`` holds the mask to write (the corrected slices as the
    expert left them); ``held_out`` maps each corrected slice to its DSC with the original decoder and with the
    decoder adapted to the other corrected slices (in the adaptation kept, or the last one tried); ``kept`` says
    whether an adapted decoder was used, ``anchors`` how many of the run's own slices it was anchored to (None: not
    kept); ``agreement`` is the free adaptation's agreement on the run's confident slices, when it was measured;
    ``message`` is one line for the user."""

    result: SegmentationResult
    kept: bool
    held_out: Dict[int, Tuple[float, float]]
    trained_on: List[int]
    seconds: float
    message: str
    anchors: Optional[int] = None
    agreement: Optional[float] = None


def _require_trainable(model: SliceModel) -> None:
    try:
        require_trainable(model)
    except NotTrainableError as exc:
        raise RefinementError(str(exc)) from None


class _Examples:
    """The fixed part of the training data (:func:`decoder_training.head_example` of each corrected view, with
    ``settings.jitters`` boxes), and ``anchors``: views of untouched slices whose targets are the run's own masks
    (one box each)."""

    def __init__(self, model: SliceModel, views: Sequence[TrainingView], settings: RefineSettings,
                 anchors: Sequence[TrainingView] = ()) -> None:
        rng = np.random.default_rng(settings.seed)
        self.items = examples_for(model, views, settings.jitters, settings.jitter, rng)
        self.items += examples_for(model, anchors, 1, 0.0, rng, anchor=True)


def adapt_decoder(model: SliceModel, views: Sequence[TrainingView], settings: Optional[RefineSettings] = None,
                  progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None):
    """A copy of ``model``'s last decoder stage trained on ``views`` (no anchors; see the module); ``model`` is not
    changed. Raises :class:`RefinementError` for a model without a trainable decoder."""
    _require_trainable(model)
    settings = settings or RefineSettings()
    return _train(model, _Examples(model, views, settings).items, settings, progress, cancel)


def _train(model: SliceModel, items: Sequence[HeadExample], settings: RefineSettings,
           progress: Optional[ProgressCallback], cancel: Optional[CancelCheck]):
    import torch

    torch.manual_seed(settings.seed)
    hypernetwork = trainable_head(model)
    optimiser = torch.optim.Adam(hypernetwork.parameters(), lr=settings.learning_rate)
    corrected = [item for item in items if not item.anchor]
    anchors = [item for item in items if item.anchor]
    with torch.enable_grad():
        for step in range(settings.steps):
            check_cancel(cancel)
            optimiser.zero_grad()
            total = 0.0
            for group, weight in ((corrected, 1.0), (anchors, settings.anchor_weight)):
                for item in group:
                    logits = head_logits(hypernetwork, item.tokens, item.features)[:, 0]
                    loss = bce_dice(logits, item.target) * (weight / len(group))
                    loss.backward()
                    total += float(loss.detach())
            optimiser.step()
            if progress is not None:
                progress(step + 1, settings.steps, f"adapting the decoder to the corrected slices (loss {total:.4f})")
    return hypernetwork.eval()


def refine_from_corrections(
    segmenter: VolumeSegmenter,
    key_boxes: KeyBoxSet,
    settings: SegmentationSettings,
    result: SegmentationResult,
    corrected: Dict[int, np.ndarray],
    refine: Optional[RefineSettings] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
) -> Refinement:
    """Adapt the decoder to the expert's ``corrected`` slices (``{slice index: bool mask of the slice's size}``,
    along the run's slice axis) of ``result`` (a run of ``segmenter`` with ``key_boxes`` and ``settings``), check
    it by leave-one-out, and decode the other slices again with it when it holds (see the module); ``refine``
    defaults to :class:`RefineSettings`'s defaults. ``result`` and
    the model are not changed. Raises :class:`RefinementError` with one line when fewer than
    :data:`MIN_CORRECTED` corrected slices lie between the first and last key box or a mask's shape is wrong,
    and :class:`~.engine.Cancelled` when ``cancel()`` turns true."""
    started = time.perf_counter()
    _require_trainable(segmenter.model)
    for index, mask in corrected.items():
        if np.shape(mask) != segmenter.slice_size:
            raise RefinementError(f"corrected slice {index} has shape {np.shape(mask)}, not the slice's "
                                  f"{segmenter.slice_size}: give each corrected slice as a mask of the whole slice")
    settings = resolve_zoom(settings, key_boxes, segmenter.slice_size, segmenter.model.input_size)  # as run
    corrected = {int(i): np.asarray(m, dtype=bool) for i, m in corrected.items()}
    usable = sorted(i for i in corrected if i in result.boxes)
    if len(usable) < MIN_CORRECTED:
        raise RefinementError(f"{len(usable)} corrected slice(s) lie between the first and last key box; correct at "
                              f"least {MIN_CORRECTED} slices there (each is held out in turn to check the refinement)")
    model = segmenter.model
    refine = refine or RefineSettings()
    untouched = [i for i in sorted(result.boxes) if i not in corrected]
    free_first = refine.free_first or (refine.interior_free and corrections_inside(usable, result.slice_range))
    stages = [0] if free_first else []
    if refine.anchors > 0 or not stages:
        stages.append(refine.anchors)
    corrected_items = _Examples(model, training_views(segmenter, result.boxes, {i: corrected[i] for i in usable},
                                                      settings.zoom), refine).items
    rounds = len(stages) * (len(usable) + 1)
    # An anchored adaptation decodes only these slices again (None: every untouched slice).
    near = slices_near(usable, [key.slice_index for key in key_boxes.sorted()]) if refine.anchored_near else None

    def step_progress(round_index):
        if progress is None:
            return None
        return lambda done, total, message: progress(round_index * total + done, rounds * total, message)

    original = {held: _decoded_dice(segmenter, None, result.boxes[held], held, corrected[held], settings)
                for held in usable}  # the run's own decoder on each held-out slice: the same for every stage
    tried: List[_Stage] = []
    chosen: Optional[_Stage] = None
    for stage, anchor_count in enumerate(stages):
        anchor_masks = {i: np.asarray(take_slice(result.mask, result.slice_axis, i), dtype=bool)
                        for i in spread(untouched, anchor_count)}
        anchor_views = training_views(segmenter, result.boxes, anchor_masks, settings.zoom)
        items = corrected_items + _Examples(model, (), refine, anchor_views).items
        first_round = stage * (len(usable) + 1)
        outcome = _Stage(anchor_count)
        tried.append(outcome)
        for offset, held in enumerate(usable):
            hypernetwork = _train(model, [item for item in items if item.slice_index != held], refine,
                                  step_progress(first_round + offset), cancel)
            outcome.held_out[held] = (
                original[held],
                _decoded_dice(segmenter, AdaptedModel(model, hypernetwork, f"{len(usable) - 1} corrected slices"),
                              result.boxes[held], held, corrected[held], settings))
        if not outcome.holds_out():
            continue
        hypernetwork = _train(model, items, refine, step_progress(first_round + len(usable)), cancel)
        adapted_model = AdaptedModel(model, hypernetwork, f"{len(usable)} corrected slices")
        adapted = VolumeSegmenter(adapted_model, segmenter.volume, segmenter.slice_axis, cache=segmenter.cache,
                                  batch_size=segmenter.batch_size)
        outcome.refined = _decode_again(adapted, result, corrected, settings, cancel,
                                        only=near if anchor_count > 0 else None)
        if anchor_count == 0 and refine.free_first and stage < len(stages) - 1:
            outcome.agreement = confident_agreement(outcome.refined, result, untouched, refine.confident_iou)
            if outcome.agreement is not None and outcome.agreement < refine.agreement:
                continue  # the free decoder undid confident slices: adapt again with anchors
        chosen = outcome
        break
    return _account(chosen, tried, result, corrected, usable, time.perf_counter() - started)


@dataclass
class _Stage:
    """One adaptation tried: its anchor count, the held-out DSC pairs, and (when it held) the re-decoded run."""

    anchors: int
    held_out: Dict[int, Tuple[float, float]] = field(default_factory=dict)
    refined: Optional[SegmentationResult] = None
    agreement: Optional[float] = None

    def means(self) -> Tuple[float, float]:
        return (statistics.mean(before for before, _ in self.held_out.values()),
                statistics.mean(after for _, after in self.held_out.values()))

    def holds_out(self) -> bool:
        """The leave-one-out check: the held-out mean rises and no held-out slice falls by more than the
        tolerance."""
        before, after = self.means()
        return after > before and all(a >= b - FOLD_TOLERANCE for b, a in self.held_out.values())


def _account(chosen: Optional[_Stage], tried: List[_Stage], result: SegmentationResult,
             corrected: Dict[int, np.ndarray], usable: List[int], seconds: float) -> Refinement:
    """The :class:`Refinement` of the ``chosen`` stage (None: none held, the run is kept)."""
    shown = chosen or tried[-1]
    before, after = shown.means()
    if chosen is not None:
        refined = chosen.refined
        anchored = f" and {chosen.anchors} of the run's own slices" if chosen.anchors else ""
        message = (f"refined {len(refined.recomputed)} untouched slices with a decoder adapted to {len(usable)} "
                   f"corrected slices{anchored} (held out in turn: mean DSC {before:.3f} -> {after:.3f})")
    else:
        refined = copy.copy(result)
        refined.mask = result.mask.copy()
        message = (f"kept the original masks: adapted to the other corrected slices, the decoder did not improve "
                   f"each held-out one (mean DSC {before:.3f} -> {after:.3f}); your slices are kept")
    for index, mask in corrected.items():
        put_slice(refined.mask, refined.slice_axis, index, mask)
    agreements = [stage.agreement for stage in tried if stage.agreement is not None]
    return Refinement(refined, chosen is not None, shown.held_out, usable, seconds, message,
                      anchors=None if chosen is None else chosen.anchors,
                      agreement=agreements[0] if agreements else None)


def corrections_inside(corrected: Sequence[int], slice_range: Tuple[int, int]) -> bool:
    """Whether every slice of ``corrected`` lies inside the key boxes' ``slice_range`` (inclusive): at least
    :data:`INSIDE_SHARE` of the range and :data:`INSIDE_SLICES` slices from both of its ends."""
    first, last = slice_range
    margin = max(INSIDE_SLICES, INSIDE_SHARE * (last - first))
    return bool(corrected) and all(min(index - first, last - index) >= margin for index in corrected)


def slices_near(corrected: Sequence[int], key_slices: Sequence[int]) -> Set[int]:
    """The slices between the key slices on either side of each corrected slice (inclusive; for a corrected slice
    on a key slice, the key slices before and after it; past the first or last key slice, from that key slice)."""
    keys = sorted(set(key_slices))
    near: Set[int] = set()
    for index in corrected:
        below = [k for k in keys if k < index]
        above = [k for k in keys if k > index]
        near.update(range(below[-1] if below else index, (above[0] if above else index) + 1))
    return near


def confident_agreement(refined: SegmentationResult, result: SegmentationResult, untouched: Sequence[int],
                        confident_iou: float) -> Optional[float]:
    """Mean DSC between ``refined`` and ``result`` over the ``untouched`` slices the run predicted with an IoU
    of at least ``confident_iou`` (None when there are none)."""
    confident = [i for i in untouched if result.iou.get(i, 0.0) >= confident_iou]
    if not confident:
        return None
    return statistics.mean(dice(take_slice(refined.mask, refined.slice_axis, i),
                                take_slice(result.mask, result.slice_axis, i)) for i in confident)


def _decode_again(adapted: VolumeSegmenter, result: SegmentationResult, corrected: Dict[int, np.ndarray],
                  settings: SegmentationSettings, cancel: Optional[CancelCheck],
                  only: Optional[Set[int]] = None) -> SegmentationResult:
    """``result`` with every untouched slice (of ``only``, when given) decoded again with ``adapted``, each with the
    box the run gave it (boxes are not walked again: a changed mask never moves another slice's box)."""
    refined = copy.copy(result)
    refined.mask, refined.iou = result.mask.copy(), dict(result.iou)
    todo = sorted(i for i in result.boxes if i not in corrected and (only is None or i in only))
    for start in range(0, len(todo), REDECODE_CHUNK):
        check_cancel(cancel)
        chunk = {i: result.boxes[i] for i in todo[start : start + REDECODE_CHUNK]}
        for index, (mask, iou) in adapted.decoder.decode(chunk, zoom=settings.zoom, retry=settings.retry).masks.items():
            put_slice(refined.mask, refined.slice_axis, index,
                      refine_to_box(mask, chunk[index]) if settings.refine == "box" else mask)
            refined.iou[index] = iou
    refined.recomputed, refined.encoded, refined.filled = todo, 0, []
    refined.flagged = flag_slices(refined)
    return refined


def _decoded_dice(segmenter: VolumeSegmenter, model: Optional[SliceModel], box: Box, index: int,
                  target: np.ndarray, settings: SegmentationSettings) -> float:
    """DSC against ``target`` of slice ``index`` decoded as the run decodes it, with ``model`` (None: the run's)."""
    if model is not None:
        segmenter = VolumeSegmenter(model, segmenter.volume, segmenter.slice_axis, cache=segmenter.cache,
                                    batch_size=segmenter.batch_size)
    mask = segmenter.decoder.decode({index: box}, zoom=settings.zoom, retry=settings.retry).masks[index][0]
    return dice(mask, target)
