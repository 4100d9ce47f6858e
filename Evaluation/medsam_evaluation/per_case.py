"""One case of an evaluation: read it, prepare the engine and the recipe once, then every method of the
registry (:mod:`methods`) at every spacing, scored against the reference.

Each case's slices are encoded once by the engine and the embeddings are shared by every engine method and
spacing (the engine's ``EmbeddingCache``). ``seconds`` is the wall time of a run with embeddings already
computed; ``seconds_cold`` adds the encoder time of the slices it segmented (measured per case).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Optional

import numpy as np
from MedSAMSegmentLib import io, metrics, pipeline
from MedSAMSegmentLib.geometry import KeyBoxSet

from . import simulate
from .cases import Case, modality_setting
from .config import NSD_TOLERANCE_MM, EvaluationConfig
from .corrections import CorrectionRow, correction_rows
from .crops import worst_slices
from .methods import MODEL_METHODS, RECIPE_METHODS, REGISTRY, Outcome
from .recipe_check import RecipeRun
from .records import Row, WorstSlice


class CaseRun:
    """A case read and prepared: the reference, the annotator's box on every target slice, our segmenter (when a
    model runs) and the recipe (when it runs). The methods' runners read these."""

    def __init__(self, case: Case, config: EvaluationConfig, model, cache, recipe_runner,
                 encode_per_slice: Optional[float]) -> None:
        self.case = case
        volume = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        if reference.shape != volume.shape:
            raise io.InputError(f"case {case.name}: label shape {reference.shape} differs from image {volume.shape}")
        self.reference = reference
        self.spacing_mm = volume.spacing_kji()
        self.axis = axis = case.slice_axis
        self.present = simulate.target_slices(reference, axis)
        if self.present.size == 0:
            raise io.InputError(f"case {case.name}: the reference mask is empty")
        first, last = int(self.present[0]), int(self.present[-1])
        modality = modality_setting(case, volume.array)
        self.settings = dataclasses.replace(config.segmentation, modality=modality)
        self.segmenter = None
        self.encode_per_slice = encode_per_slice
        if model is not None and any(m in MODEL_METHODS + RECIPE_METHODS for m in config.methods):
            self.segmenter = pipeline.make_segmenter(model, volume.array, axis, self.settings, cache=cache,
                                                     batch_size=config.model.batch_size, is_colour=volume.is_colour)
            # The recipe columns see MedSAM's published intensity rule, whatever our defaults are.
            self.volume_u8 = pipeline.normalised_volume(
                volume.array, dataclasses.replace(self.settings, mr_rule="published"), volume.is_colour)
            t0 = time.perf_counter()
            encoded = self.segmenter.ensure_embeddings(range(first, last + 1))
            if encoded or encode_per_slice is None:
                self.encode_per_slice = (time.perf_counter() - t0) / max(encoded, 1)
        else:
            self.volume_u8 = pipeline_free_u8(volume.array, modality)
        self.every = simulate.every_slice_boxes(reference, axis, config.margin, config.jitter, config.seed)
        self.recipe: Optional[RecipeRun] = None
        if recipe_runner is not None and any(m in config.methods for m in RECIPE_METHODS):
            self.recipe = RecipeRun(recipe_runner, model, self.volume_u8, axis, cache, config.model.batch_size,
                                    first, last, config.recipe, self.every, self.present)

    def engine_run(self, keys: KeyBoxSet, strategy: str):
        """``(result, seconds, cold seconds, slices segmented)`` of our engine with ``keys``."""
        t0 = time.perf_counter()
        result = self.segmenter.segment(keys, self.settings.with_strategy(strategy))
        seconds = time.perf_counter() - t0
        n_slices = len(result.boxes)
        cold = seconds + max(n_slices - result.encoded, 0) * self.encode_per_slice
        return result, seconds, cold, n_slices

    def score(self, method: str, spacing: int, outcome: Outcome) -> Row:
        return Row(
            self.case.name, self.case.modality, method, spacing, metrics.dice(outcome.mask, self.reference),
            metrics.normalised_surface_dice(outcome.mask, self.reference, self.spacing_mm, NSD_TOLERANCE_MM),
            outcome.boxes_drawn, outcome.contours_drawn, outcome.slices, outcome.encoded, round(outcome.seconds, 4),
            round(outcome.seconds if outcome.cold is None else outcome.cold, 4), outcome.flagged,
        )


def evaluate_case(case: Case, config: EvaluationConfig, model, cache, recipe_runner, encode_per_slice=None):
    """One case: every method at every spacing of ``config``, and the corrections protocol when asked; returns
    ``(rows, worst slices, encoder seconds per slice, correction rows)``. ``encode_per_slice`` is the encoder time
    measured on an earlier case of the same image, used when this case's slices are all in ``cache`` already."""
    run = CaseRun(case, config, model, cache, recipe_runner, encode_per_slice)
    rows: List[Row] = []
    worst: List[WorstSlice] = []
    corrected: List[CorrectionRow] = []
    spacing_free: Dict[str, Row] = {}
    for spacing in config.spacings:
        keys = simulate.simulate_key_boxes(run.reference, run.axis, spacing, config.margin, config.jitter,
                                           config.seed)
        for name in config.methods:
            method = REGISTRY[name]
            if method.spacing_free and name in spacing_free:
                rows.append(dataclasses.replace(spacing_free[name], spacing=spacing))
                continue
            outcome = method.run(run, keys)
            rows.append(run.score(name, spacing, outcome))
            if name == config.montage_method and spacing == config.montage_spacing:
                worst.extend(worst_slices(case.name, name, spacing, run.volume_u8, run.reference, outcome.mask,
                                          run.axis, outcome.boxes or {}))
            if method.spacing_free:
                spacing_free[name] = rows[-1]
        if config.corrections and run.segmenter is not None:
            corrected += correction_rows(case.name, spacing, run.segmenter, keys, run.settings, run.reference,
                                         config.corrections)
    return rows, worst, run.encode_per_slice or 0.0, corrected


def pipeline_free_u8(array: np.ndarray, modality: str) -> np.ndarray:
    """The uint8 volume for pictures when no model runs (same normalisation as the pipeline)."""
    from MedSAMSegmentLib import intensity

    if array.ndim == 4:
        return array.astype(np.uint8)
    return intensity.normalise_volume(array, modality)
