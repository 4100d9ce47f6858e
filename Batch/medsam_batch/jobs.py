"""One case of a batch: its fingerprint, its record, and the run that writes its mask.

A case's **fingerprint** is a SHA-256 of everything its mask depends on: the bytes of the image file (every file of
a DICOM folder) and of each key-box file, the settings, the box options and the model's settings (its checkpoint
file's bytes for ViT-B). The **record** ``<out>/.medsam-batch/<name>.json`` holds the fingerprint and the outcome;
it is written (atomically) only after the mask, so a case whose mask exists and whose record's fingerprint matches
is finished, and anything else runs again. A killed batch loses at most the cases in flight.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from MedSAMSegmentLib.session import run_segmentation
from MedSAMSegmentLib.settings import ModelSettings

from .manifest import BatchCase

#: The folder, inside the batch's output folder, that holds the cases' records.
RECORDS = ".medsam-batch"
#: Outcomes of a case.
DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class BoxOptions:
    """How key-box files become boxes, as ``segment`` takes them (``--margin``, ``--line-margin``,
    ``--slice-axis``)."""

    margin: float = 0.0
    line_margin: Optional[float] = None
    slice_axis: Optional[int] = None


@dataclass
class CaseOutcome:
    """What happened to one case: ``status`` (done, skipped, failed), the slices segmented, seconds, the slices
    flagged for review, and the one-line reason of a failure."""

    name: str
    status: str
    output: str = ""
    slices: int = 0
    voxels: int = 0
    seconds: float = 0.0
    flagged: List[int] = field(default_factory=list)
    reason: str = ""
    fingerprint: str = ""


def fingerprint(case: BatchCase, boxes: BoxOptions, model: ModelSettings) -> str:
    """The case's fingerprint (see the module)."""
    digest = hashlib.sha256()
    for path in _files_of(case.image) + list(case.boxes):
        digest.update(os.path.basename(path).encode() + b"\0")
        _hash_file(digest, path)
    if model.checkpoint:
        _hash_file(digest, model.checkpoint)
    model_values = {k: v for k, v in asdict(model).items() if k not in ("batch_size", "checkpoint")}
    described = {"settings": asdict(case.settings), "boxes": asdict(boxes), "model": model_values,
                 "segment": case.segment, "output": os.path.splitext(case.output)[1]}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def record_path(out_dir: str, case: BatchCase) -> str:
    return os.path.join(out_dir, RECORDS, f"{case.name}.json")


def is_finished(out_dir: str, case: BatchCase, case_fingerprint: str) -> bool:
    """Whether the case's mask exists and its record says it was made from these inputs and settings."""
    try:
        with open(record_path(out_dir, case), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return False
    return (record.get("status") == DONE and record.get("fingerprint") == case_fingerprint
            and os.path.isfile(case.output))


def previous_outcome(out_dir: str, case: BatchCase) -> Optional[CaseOutcome]:
    """The outcome recorded for the case by an earlier run, or None."""
    try:
        with open(record_path(out_dir, case), encoding="utf-8") as handle:
            data = json.load(handle)
        return CaseOutcome(**{f.name: data[f.name] for f in dataclasses.fields(CaseOutcome) if f.name in data})
    except (OSError, ValueError, TypeError):
        return None


def write_record(out_dir: str, case: BatchCase, outcome: CaseOutcome) -> None:
    """Write the case's record atomically (a temporary file renamed into place)."""
    folder = os.path.join(out_dir, RECORDS)
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(asdict(outcome), out, indent=1)
        os.replace(tmp, record_path(out_dir, case))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_case(case: BatchCase, model, boxes: BoxOptions, model_settings: ModelSettings, out_dir: str,
             cache_dir: Optional[str] = None) -> CaseOutcome:
    """Segment one case with a loaded ``model`` and write its mask, then its record; a failure is returned as a
    ``failed`` outcome with its one-line reason (and recorded), never raised. ``cache_dir``: embeddings kept on
    disk between runs (not part of the fingerprint: the mask is the same either way)."""
    from MedSAMSegmentLib import io
    from MedSAMSegmentLib.engine import EmbeddingCache, default_batch_size, one_shot_cache_bytes
    from MedSAMSegmentLib.geometry import validate_key_boxes
    from MedSAMSegmentLib.io.error_text import first_line

    started = time.perf_counter()
    case_fingerprint = fingerprint(case, boxes, model_settings)
    try:
        volume = io.read_image(case.image)
        keys = io.read_key_boxes(list(case.boxes), volume, margin=boxes.margin, line_margin=boxes.line_margin,
                                 slice_axis=boxes.slice_axis)
        keys = validate_key_boxes(keys, volume.shape)
        batch_size = model_settings.batch_size or default_batch_size(model)
        cache = EmbeddingCache(cache_dir, max_memory_bytes=one_shot_cache_bytes(batch_size))
        result = run_segmentation(model, volume.array, keys, case.settings, cache=cache,
                                           batch_size=batch_size, is_colour=volume.is_colour)
        io.write_mask(case.output, result.mask, volume, segment_name=case.segment)
        outcome = CaseOutcome(case.name, DONE, case.output, len(result.boxes), int(result.mask.sum()),
                              time.perf_counter() - started, [int(s) for s, _ in result.flagged],
                              fingerprint=case_fingerprint)
    except Exception as exc:  # noqa: BLE001 - a failing case is recorded and the batch goes on
        outcome = CaseOutcome(case.name, FAILED, case.output, seconds=time.perf_counter() - started,
                              reason=first_line(exc), fingerprint=case_fingerprint)
    write_record(out_dir, case, outcome)
    return outcome


def _files_of(image: str) -> List[str]:
    if os.path.isdir(image):
        return sorted(os.path.join(image, name) for name in os.listdir(image)
                      if os.path.isfile(os.path.join(image, name)))
    return [image]


def _hash_file(digest, path: str) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
