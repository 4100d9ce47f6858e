"""The methods an evaluation compares, in one registry: name -> :class:`Method` (its kind, its label in the
README table, whether it depends on the key-slice spacing, and the function that runs it on one case).

=====================  =====================================================================================
``interpolate``        ours: :func:`MedSAMSegmentLib.pipeline.make_segmenter` + ``segment(strategy=
                       "interpolate")``, the path of ``medsam-segment segment``
``propagate``          ours, ``strategy="propagate"``
``every_slice``        our engine with the annotator's box on every target slice (box-prompting upper bound)
``recipe``             the published LiteMedSAM per-slice recipe (:class:`baselines.PublishedRecipe`) with the
                       key boxes interpolated
``recipe_every_slice`` the published recipe with the box on every target slice (the goal reference)
``filled_boxes``       the interpolated key boxes filled, no model
``tight_boxes``        tight key boxes (each key slice's own mask box, no margin) interpolated and filled, no
                       model
``tight_every_slice``  every slice's own mask box filled (a perfect annotator drawing every slice), no model
``contours``           the reference contour on the key slices, filled between by ITK's morphological contour
                       interpolation (Slicer's "Fill between slices"): the manual workflow; costs contours
=====================  =====================================================================================

A runner takes the case being evaluated (:class:`per_case.CaseRun`: the reference, the annotator's boxes on every
slice, and the engine and recipe runs prepared for the case) and one spacing's key boxes, and returns an
:class:`Outcome`; :mod:`per_case` scores it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
from MedSAMSegmentLib.geometry import KeyBoxSet, interpolate_boxes

from . import baselines, simulate

if TYPE_CHECKING:
    from .per_case import CaseRun

#: Kinds of method: ``model`` runs our engine, ``recipe`` the published recipe, ``free`` no model.
MODEL, RECIPE, FREE = "model", "recipe", "free"


@dataclass(frozen=True)
class Outcome:
    """One method's result on one case at one spacing, before scoring."""

    mask: np.ndarray
    boxes_drawn: int
    contours_drawn: int
    slices: int
    encoded: int = 0
    seconds: float = 0.0
    cold: Optional[float] = None  # None: the same as ``seconds``
    flagged: int = 0
    boxes: Optional[Mapping[int, object]] = None  # the boxes shown in the worst-slice montage


@dataclass(frozen=True)
class Method:
    name: str
    kind: str
    label: str
    run: Callable[[CaseRun, KeyBoxSet], Outcome]
    spacing_free: bool = False  # run once per case and reported at every spacing


def _span(keys: KeyBoxSet) -> int:
    """Slices the model-free methods fill: from the first to the last key slice."""
    key_slices = [k.slice_index for k in keys.boxes]
    return key_slices[-1] - key_slices[0] + 1


def _ours(strategy: str, every_slice: bool = False) -> Callable[[CaseRun, KeyBoxSet], Outcome]:
    def run(case: CaseRun, keys: KeyBoxSet) -> Outcome:
        boxes = case.every if every_slice else keys
        result, seconds, cold, n_slices = case.engine_run(boxes, strategy)
        return Outcome(result.mask, len(boxes.boxes), 0, n_slices, result.encoded, seconds, cold,
                       len(result.flagged), result.boxes)

    return run


def _recipe(every_slice: bool = False) -> Callable[[CaseRun, KeyBoxSet], Outcome]:
    def run(case: CaseRun, keys: KeyBoxSet) -> Outcome:
        boxes = case.every if every_slice else keys
        result, seconds, cold, n_slices = case.recipe.run(boxes)
        return Outcome(result.mask, len(boxes.boxes), 0, n_slices, 0, seconds, cold, 0, result.boxes)

    return run


def _filled_boxes(case: CaseRun, keys: KeyBoxSet) -> Outcome:
    t0 = time.perf_counter()
    mask = baselines.filled_boxes(case.reference.shape, keys)
    seconds = time.perf_counter() - t0
    return Outcome(mask, len(keys.boxes), 0, _span(keys), seconds=seconds, boxes=interpolate_boxes(keys.boxes))


def _tight_boxes(case: CaseRun, keys: KeyBoxSet) -> Outcome:
    t0 = time.perf_counter()
    tight = simulate.tight_boxes(case.reference, case.axis)
    tight_keys = KeyBoxSet(case.axis, [type(k)(k.slice_index, tight[k.slice_index], "tight") for k in keys.boxes])
    mask = baselines.filled_boxes(case.reference.shape, tight_keys)
    seconds = time.perf_counter() - t0
    return Outcome(mask, len(keys.boxes), 0, _span(keys), seconds=seconds,
                   boxes=interpolate_boxes(tight_keys.boxes))


def _tight_every_slice(case: CaseRun, keys: KeyBoxSet) -> Outcome:
    t0 = time.perf_counter()
    mask = baselines.tight_boxes_filled(case.reference, case.axis)
    seconds = time.perf_counter() - t0
    n_present = int(case.present.size)
    return Outcome(mask, n_present, 0, n_present, seconds=seconds,
                   boxes=simulate.tight_boxes(case.reference, case.axis))


def _contours(case: CaseRun, keys: KeyBoxSet) -> Outcome:
    t0 = time.perf_counter()
    key_slices = [k.slice_index for k in keys.boxes]
    mask = baselines.contours_interpolated(case.reference, case.axis, key_slices)
    return Outcome(mask, 0, len(key_slices), _span(keys), seconds=time.perf_counter() - t0)


#: Every method, in the order of the tables.
REGISTRY: Dict[str, Method] = {m.name: m for m in (
    Method("interpolate", MODEL, "**ours: interpolate** (default)", _ours("interpolate")),
    Method("propagate", MODEL, "ours: propagate", _ours("propagate")),
    Method("every_slice", MODEL, "ours, box on every slice", _ours("interpolate", every_slice=True),
           spacing_free=True),
    Method("recipe", RECIPE, "published recipe, interpolated boxes", _recipe()),
    Method("recipe_every_slice", RECIPE, "published recipe, box on every slice", _recipe(every_slice=True),
           spacing_free=True),
    Method("filled_boxes", FREE, "given boxes filled (no model)", _filled_boxes),
    Method("tight_boxes", FREE, "tight boxes filled (no model)", _tight_boxes),
    Method("tight_every_slice", FREE, "tight box on every slice filled (no model)", _tight_every_slice,
           spacing_free=True),
    Method("contours", FREE, "contours + morphological interpolation (manual)", _contours),
)}


def names_of(kind: Optional[str] = None) -> Tuple[str, ...]:
    """The methods' names (of one kind), in the registry's order."""
    return tuple(name for name, method in REGISTRY.items() if kind is None or method.kind == kind)


METHODS = names_of()
MODEL_METHODS = names_of(MODEL)
RECIPE_METHODS = names_of(RECIPE)
FREE_METHODS = names_of(FREE)
#: Methods that do not depend on the key-slice spacing (run once per case, reported at every spacing).
SPACING_FREE = tuple(name for name, method in REGISTRY.items() if method.spacing_free)
METHOD_LABELS = {name: method.label for name, method in REGISTRY.items()}
