"""What an evaluation produces: one :class:`Row` per case, method and spacing, the worst slices for the montage,
and the :class:`EvaluationReport` holding them; :func:`summarise` reduces rows to the tables' numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from MedSAMSegmentLib.geometry import Box

CSV_FIELDS = (
    "case", "modality", "method", "spacing", "dsc", "nsd", "boxes_drawn", "contours_drawn", "slices_segmented",
    "slices_encoded", "seconds", "seconds_cold", "flagged",
)


@dataclass
class Row:
    case: str
    modality: str
    method: str
    spacing: int
    dsc: float
    nsd: float
    boxes_drawn: int
    contours_drawn: int
    slices_segmented: int
    slices_encoded: int = 0
    seconds: float = 0.0
    seconds_cold: float = 0.0
    flagged: int = 0

    def as_dict(self) -> Dict[str, object]:
        return {name: getattr(self, name) for name in CSV_FIELDS}


@dataclass
class WorstSlice:
    dsc: float
    case: str
    method: str
    spacing: int
    slice_index: int
    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    box: Optional[Box]


@dataclass
class EvaluationReport:
    rows: List[Row] = field(default_factory=list)
    worst: List[WorstSlice] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: str = ""
    notes: List[str] = field(default_factory=list)
    corrections: list = field(default_factory=list)  # corrections.CorrectionRow, with --corrections


def summarise(rows: Sequence[Row], method: str, spacing: int) -> Optional[Dict[str, float]]:
    selected = [r for r in rows if r.method == method and r.spacing == spacing]
    if not selected:
        return None
    dsc = np.array([r.dsc for r in selected])
    nsd = np.array([r.nsd for r in selected])
    return {
        "n": len(selected),
        "dsc_mean": float(dsc.mean()), "dsc_median": float(np.median(dsc)),
        "nsd_mean": float(nsd.mean()), "nsd_median": float(np.median(nsd)),
        "boxes": float(np.mean([r.boxes_drawn for r in selected])),
        "contours": float(np.mean([r.contours_drawn for r in selected])),
        "slices": float(np.mean([r.slices_segmented for r in selected])),
        "seconds": float(np.sum([r.seconds for r in selected])),
        "seconds_cold": float(np.sum([r.seconds_cold for r in selected])),
    }
