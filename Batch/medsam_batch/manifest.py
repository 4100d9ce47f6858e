"""The batch manifest: one row per case, read and checked completely before any model work.

CSV (a header row, then one row per case) or JSON (a list of objects, or ``{"cases": [...]}``), with the keys:

* ``image`` (required): the image file or DICOM folder;
* ``boxes`` (required): one or more key-box files (box JSON, Slicer ``.mrk.json`` ROIs or RECIST lines); in CSV
  separated by ``;``, in JSON a list or one string;
* ``name``: the case's name (default: the image's file name without its extensions); names must be unique;
* ``output``: the mask file (default ``<name>.nii.gz``); relative paths are inside the batch's output folder;
* ``segment``: the segment name in a ``.seg.nrrd`` output (default ``MedSAM``);
* any field of :class:`~MedSAMSegmentLib.settings.SegmentationSettings` (``modality``, ``strategy``, ``zoom``, ...;
  ``window`` as ``LEVEL WIDTH``): this case's value, overriding the command's. An empty CSV cell keeps the
  command's.

Relative input paths are relative to the manifest's folder. Every problem is refused with one line naming the row
(:class:`ManifestError`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from MedSAMSegmentLib.io import MASK_EXTENSIONS, InputError
from MedSAMSegmentLib.settings import SegmentationSettings, SettingsError

#: Keys a manifest row may have besides the settings' fields.
CASE_KEYS = ("image", "boxes", "name", "output", "segment")
REQUIRED_KEYS = ("image", "boxes")
SETTING_KEYS = tuple(f.name for f in dataclasses.fields(SegmentationSettings))


class ManifestError(InputError):
    """A manifest that cannot be run; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class BatchCase:
    """One case of a batch: its inputs, where its mask goes, and the settings it runs with."""

    name: str
    image: str
    boxes: Tuple[str, ...]
    output: str
    segment: str = "MedSAM"
    settings: SegmentationSettings = field(default_factory=SegmentationSettings)
    row: int = 0  # the manifest row (1 = the first case), for messages

    def input_bytes(self) -> int:
        """The image's size on disk (a DICOM folder: its files), to run the largest cases first."""
        if os.path.isdir(self.image):
            return sum(os.path.getsize(os.path.join(self.image, f)) for f in os.listdir(self.image)
                       if os.path.isfile(os.path.join(self.image, f)))
        return os.path.getsize(self.image)


def read_manifest(path: str, out_dir: str, settings: SegmentationSettings) -> List[BatchCase]:
    """The cases of the manifest at ``path`` (CSV or JSON), their outputs under ``out_dir`` and their settings
    ``settings`` with the row's overrides. Raises :class:`ManifestError` for the first problem found: a missing
    column or file, a case without key boxes, a bad setting, two cases with one name or one output."""
    rows = _read_rows(path)
    where = os.path.dirname(os.path.abspath(path))
    cases: List[BatchCase] = []
    for number, row in enumerate(rows, 1):
        cases.append(_case(path, number, row, where, out_dir, settings))
    if not cases:
        raise ManifestError(f"{path}: no cases; add one row per case with at least image and boxes")
    _check_unique(path, cases, "name", "give each case its own 'name'")
    _check_unique(path, cases, "output", "give each case its own 'output'")
    return cases


def _read_rows(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        raise ManifestError(f"manifest {path} does not exist; check the path")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if path.lower().endswith(".json"):
                data = json.load(handle)
                rows = data.get("cases") if isinstance(data, dict) else data
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise ManifestError(f"{path}: a JSON manifest is a list of objects (or {{\"cases\": [...]}}), "
                                        "one per case")
                columns = sorted({key for row in rows for key in row})
            else:
                reader = csv.DictReader(handle)
                columns = [c.strip() for c in (reader.fieldnames or [])]
                rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
                        for row in reader]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ManifestError(f"manifest {path} cannot be read ({exc}); give a CSV with a header row or a JSON "
                            "list") from None
    missing = [key for key in REQUIRED_KEYS if key not in columns]
    if missing:
        raise ManifestError(f"{path}: no {', '.join(repr(k) for k in missing)} column; a manifest needs image and "
                            f"boxes (optional: name, output, segment, and settings such as modality)")
    unknown = [key for key in columns if key not in CASE_KEYS + SETTING_KEYS]
    if unknown:
        raise ManifestError(f"{path}: unknown column {unknown[0]!r}; use {', '.join(CASE_KEYS)} or a setting "
                            f"({', '.join(SETTING_KEYS)})")
    return rows


def _case(path: str, number: int, row: Dict[str, Any], where: str, out_dir: str,
          base: SegmentationSettings) -> BatchCase:
    label = f"{path} row {number}"
    image = _text(row.get("image"))
    if not image:
        raise ManifestError(f"{label}: no image; give the image file or DICOM folder")
    image = _resolve(where, image)
    name = _text(row.get("name")) or _stem(image)
    label = f"{path} row {number} (case {name!r})"
    if not os.path.exists(image):
        raise ManifestError(f"{label}: image {image} does not exist; fix the path")
    boxes = _box_paths(row.get("boxes"))
    if not boxes:
        raise ManifestError(f"{label}: no key-box file; give one or more in 'boxes' (separated by ';' in a CSV)")
    boxes = tuple(_resolve(where, b) for b in boxes)
    for box_path in boxes:
        if not os.path.isfile(box_path):
            raise ManifestError(f"{label}: key-box file {box_path} does not exist; fix the path")
    output = _text(row.get("output")) or f"{name}.nii.gz"
    output = os.path.normpath(output if os.path.isabs(output) else os.path.join(out_dir, output))
    if not output.lower().endswith(MASK_EXTENSIONS):
        raise ManifestError(f"{label}: output {output}: use one of {', '.join(MASK_EXTENSIONS)}")
    try:
        settings = dataclasses.replace(base, **_overrides(row))
    except (SettingsError, ValueError, TypeError) as exc:
        raise ManifestError(f"{label}: {exc}") from None
    return BatchCase(name, image, boxes, output, _text(row.get("segment")) or "MedSAM", settings, number)


def _overrides(row: Dict[str, Any]) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for f in dataclasses.fields(SegmentationSettings):
        raw = row.get(f.name)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        if f.name == "window":
            parts = raw.replace(",", " ").split() if isinstance(raw, str) else list(raw)
            if len(parts) != 2:
                raise SettingsError(f"window {raw!r}: give LEVEL WIDTH, e.g. 40 400")
            values[f.name] = (float(parts[0]), float(parts[1]))
        elif f.metadata["argparse"].get("type") is float:
            values[f.name] = float(raw)
        else:
            values[f.name] = str(raw).strip()
    return values


def _box_paths(value: Any) -> List[str]:
    if value is None:
        return []
    items: Sequence[Any] = value if isinstance(value, list) else str(value).split(";")
    return [str(item).strip() for item in items if str(item).strip()]


def _check_unique(path: str, cases: Sequence[BatchCase], attribute: str, fix: str) -> None:
    seen: Dict[str, BatchCase] = {}
    for case in cases:
        key = getattr(case, attribute)
        key = os.path.normcase(key) if attribute == "output" else key
        if key in seen:
            raise ManifestError(f"{path} rows {seen[key].row} and {case.row} have the same {attribute} "
                                f"{getattr(case, attribute)!r}; {fix}")
        seen[key] = case


def _text(value: Optional[Any]) -> str:
    return "" if value is None else str(value).strip()


def _resolve(where: str, path: str) -> str:
    path = os.path.expanduser(path)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(where, path))


def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    for extension in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd", ".npz", ".png", ".jpg", ".jpeg"):
        if base.lower().endswith(extension):
            return base[: -len(extension)]
    return base
