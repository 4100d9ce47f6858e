"""What an evaluation runs, as one frozen dataclass: :class:`EvaluationConfig`.

It holds the core's :class:`~MedSAMSegmentLib.settings.SegmentationSettings` (the accuracy options of our
methods; the modality is chosen per case) and :class:`~MedSAMSegmentLib.settings.ModelSettings` (which model on
which device), plus the evaluation's own choices. It is validated at construction and crosses into the worker
processes as it is (it pickles).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from medsam_batch.executors import ExecutorChoice
from MedSAMSegmentLib.metrics import DEFAULT_NSD_TOLERANCE_MM
from MedSAMSegmentLib.settings import PUBLISHED, ModelSettings, SegmentationSettings

from .methods import METHODS, MODEL_METHODS, RECIPE_METHODS
from .resumable import PieceSettings, model_fingerprint
from .simulate import DEFAULT_MARGIN

DEFAULT_SPACINGS = (3, 5, 10)
NSD_TOLERANCE_MM = DEFAULT_NSD_TOLERANCE_MM
RECIPE_MODES = ("shared", "full", "skip")


@dataclass(frozen=True)
class EvaluationConfig:
    """One evaluation.

    ``methods`` picks from :data:`methods.METHODS` (kept in the registry's order). ``recipe`` is ``shared``
    (reuse the engine's embeddings when numerically the same), ``full`` (the recipe encodes every slice itself,
    every run) or ``skip``. ``segmentation`` sets the accuracy options of ``interpolate``, ``propagate`` and
    ``every_slice`` (e.g. ``SegmentationSettings(**PUBLISHED)``); ``model`` names the model and its numeric path.
    ``executor`` says where the cases run (:class:`medsam_batch.executors.ExecutorChoice`: local worker processes,
    ``auto`` one per core on a CPU (:func:`runner.evaluation_workers`), or Ray actors). ``montage_spacing`` None
    picks 5 when run, else the middle spacing. ``corrections`` (k values) adds the corrections protocol
    (:mod:`corrections`) after each interpolating run of our engine. ``piece`` bounds how long one run goes on
    (:mod:`resumable`: finished cases are recorded in ``out_dir`` and skipped by the next run of these settings).
    """

    cases_json: str
    spacings: Tuple[int, ...] = DEFAULT_SPACINGS
    methods: Tuple[str, ...] = METHODS
    out_dir: str = "evaluation"
    margin: float = DEFAULT_MARGIN
    jitter: float = 0
    seed: int = 0
    case_filter: Optional[Tuple[str, ...]] = None
    recipe: str = "shared"
    segmentation: SegmentationSettings = field(default_factory=SegmentationSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    montage_method: str = "interpolate"
    montage_spacing: Optional[int] = None
    n_worst: int = 12
    executor: ExecutorChoice = field(default_factory=ExecutorChoice)
    command: Optional[str] = None
    corrections: Tuple[int, ...] = ()
    piece: PieceSettings = field(default_factory=PieceSettings)

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
        if self.recipe not in RECIPE_MODES:
            raise ValueError(f"recipe must be shared, full or skip, not {self.recipe!r}")
        spacings = tuple(sorted({int(s) for s in self.spacings}))
        if not spacings or spacings[0] < 1:
            raise ValueError(f"key-slice spacings must be positive integers, got {list(spacings)}")
        chosen = set(self.methods)
        methods = tuple(m for m in METHODS if m in chosen and not (self.recipe == "skip" and m in RECIPE_METHODS))
        montage_spacing = self.montage_spacing
        if montage_spacing is None:
            montage_spacing = 5 if 5 in spacings else spacings[len(spacings) // 2]
        object.__setattr__(self, "spacings", spacings)
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "montage_spacing", int(montage_spacing))
        corrections = tuple(sorted({int(k) for k in self.corrections}))
        if corrections and (corrections[0] < 1 or "interpolate" not in methods):
            raise ValueError("--corrections: give k of 1 or more, with the interpolate method run")
        object.__setattr__(self, "corrections", corrections)
        if self.case_filter is not None:
            object.__setattr__(self, "case_filter", tuple(self.case_filter))
        if not isinstance(self.segmentation, SegmentationSettings):
            raise TypeError("segmentation must be a SegmentationSettings (see accuracy_settings)")
        if not isinstance(self.model, ModelSettings):
            raise TypeError("model must be a ModelSettings")
        if not isinstance(self.piece, PieceSettings):
            raise TypeError("piece must be a PieceSettings")

    def without(self, *methods: str) -> EvaluationConfig:
        """This configuration less ``methods``."""
        return dataclasses.replace(self, methods=tuple(m for m in self.methods if m not in methods))

    def records_settings(self) -> Dict[str, Any]:
        """What decides a case's record (:mod:`resumable`): every field but where the cases come from and where
        the outputs go, how the cases are spread over processes, how long a piece runs and how many worst slices
        the report shows; the model's weights, device and numeric path only when a model runs."""
        settings: Dict[str, Any] = {name: getattr(self, name) for name in (
            "spacings", "methods", "margin", "jitter", "seed", "recipe", "segmentation", "montage_method",
            "montage_spacing", "corrections")}
        if any(m in MODEL_METHODS + RECIPE_METHODS for m in self.methods):
            settings["model"] = model_fingerprint(self.model)
        return settings

    def options_note(self) -> str:
        """The report's line naming our methods' accuracy options."""
        chosen = self.segmentation
        return "our methods' options: " + ", ".join(f"{name}={getattr(chosen, name)}" for name in PUBLISHED) + (
            " (the defaults)" if chosen == SegmentationSettings() else "")


def accuracy_settings(options: Optional[Mapping[str, str]] = None) -> SegmentationSettings:
    """:class:`SegmentationSettings` with the accuracy options ``options`` (names of :data:`PUBLISHED`) and the
    other fields at their defaults; a ValueError names an unknown option."""
    overrides = dict(options or {})
    unknown = set(overrides) - set(PUBLISHED)
    if unknown:
        raise ValueError(f"unknown accuracy option(s) {sorted(unknown)}; choose from {', '.join(PUBLISHED)}")
    return SegmentationSettings(**overrides)
