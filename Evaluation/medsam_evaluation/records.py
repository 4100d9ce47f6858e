"""What an evaluation produces: one :class:`Row` per case, method and spacing, the worst slices for the montage,
and the :class:`EvaluationReport` holding them; :func:`summarise` reduces rows to the tables' numbers;
:func:`case_payload` and :func:`case_outcome` are a finished case's record (:mod:`resumable`) and back."""

from __future__ import annotations

import base64
import dataclasses
import io
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
    device: Optional[str] = None  # where the model ran, as the records say
    cases_left: int = 0  # cases not yet recorded when a piece stopped at its bound (no outputs written then)


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


def _arrays_text(**arrays: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _arrays_of(text: str) -> Dict[str, np.ndarray]:
    with np.load(io.BytesIO(base64.b64decode(text))) as arrays:
        return {name: arrays[name] for name in arrays.files}


def case_payload(rows: Sequence[Row], worst: Sequence[WorstSlice], seconds: float, corrections: Sequence[Any],
                 device: Optional[str]) -> Dict[str, Any]:
    """A finished case as JSON types: its rows, its worst slices (their pixels compressed, in base64), its
    seconds, its correction rows and the model's device; :func:`case_outcome` gives them back exactly."""
    return {
        "case": rows[0].case if rows else "",
        "rows": [row.as_dict() for row in rows],
        "worst": [{"dsc": w.dsc, "case": w.case, "method": w.method, "spacing": w.spacing,
                   "slice_index": w.slice_index, "box": None if w.box is None else [float(v) for v in w.box],
                   "pixels": _arrays_text(image=w.image, reference=w.reference, prediction=w.prediction)}
                  for w in worst],
        "seconds": seconds,
        "corrections": [dataclasses.asdict(row) for row in corrections],
        "device": device,
    }


def case_outcome(record: Dict[str, Any]) -> Tuple[List[Row], List[WorstSlice], float, list, Optional[str]]:
    """``(rows, worst slices, seconds, correction rows, device)`` of a record :func:`case_payload` made."""
    from .corrections import CorrectionRow

    rows = [Row(**values) for values in record["rows"]]
    worst = []
    for w in record["worst"]:
        pixels = _arrays_of(w["pixels"])
        worst.append(WorstSlice(w["dsc"], w["case"], w["method"], w["spacing"], w["slice_index"], pixels["image"],
                                pixels["reference"], pixels["prediction"],
                                None if w["box"] is None else tuple(w["box"])))
    corrections = [CorrectionRow(**values) for values in record["corrections"]]
    return rows, worst, record["seconds"], corrections, record.get("device")
