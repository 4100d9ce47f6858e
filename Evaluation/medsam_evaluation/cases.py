"""The cases of a study: ``cases.json`` loading, where the development data is found, cases grouped by image.

A ``cases.json`` is a list (or ``{"cases": [...]}``) of entries with ``name``, ``image``, ``label`` (paths
relative to the file), optional ``label_values``, ``modality`` (``CT``, ``MR`` or ``auto``), ``slice_axis``,
``target`` and ``group`` (the kind of scan and target, for leave-one-group-out checks; default: the group its name
starts with, :func:`cross_validation.case_group`). A study may take several such files (the shared development set
and ``Evaluation/devset``); their case names must not repeat.

Where the data is (:func:`default_cases_json`), first found wins: the ``--cases`` given; ``cases.json`` in the
folder named by the environment variable :data:`SHARED_DATA_VARIABLE`; ``../shared/data/cases.json`` relative to
the current working directory; else none (the benchmark then uses the bundled demo lesion).
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .cross_validation import case_group

#: The environment variable naming the folder that holds the development set's ``cases.json``.
SHARED_DATA_VARIABLE = "MEDSAM_SHARED_DATA"
#: The development set's folder relative to the current working directory (a checkout beside ``shared/``).
SHARED_DATA_RELATIVE = os.path.join("..", "shared", "data")


@dataclass(frozen=True)
class Case:
    name: str
    image: str
    label: str
    label_values: Optional[List[int]]
    modality: str
    slice_axis: int
    target: str = ""
    group: str = ""


def load_cases(cases_json: Union[str, Sequence[str]], case_filter: Optional[Sequence[str]] = None) -> List[Case]:
    """Cases from one ``cases.json`` or several, in the order given; ``case_filter`` keeps names matching any
    pattern (glob or substring).

    Raises ValueError when no case is selected or a name repeats across the files."""
    files = [cases_json] if isinstance(cases_json, str) else list(cases_json)
    cases: List[Case] = []
    for path in files:
        cases += _cases_of(path, case_filter)
    names = [case.name for case in cases]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"case names repeat across {', '.join(files)}: {', '.join(repeated)}; rename them")
    if not cases:
        raise ValueError(f"no cases selected from {', '.join(files)} (filter {list(case_filter or [])})")
    return cases


def _cases_of(cases_json: str, case_filter: Optional[Sequence[str]]) -> List[Case]:
    with open(cases_json, encoding="utf-8") as handle:
        entries = json.load(handle)
    if isinstance(entries, dict):
        entries = entries.get("cases", [])
    base = os.path.dirname(os.path.abspath(cases_json))
    cases = []
    for entry in entries:
        name = entry["name"]
        if case_filter and not any(fnmatch.fnmatch(name, p) or p in name for p in case_filter):
            continue
        cases.append(
            Case(
                name=name,
                image=os.path.join(base, entry["image"]),
                label=os.path.join(base, entry["label"]),
                label_values=entry.get("label_values"),
                modality=entry.get("modality", "auto"),
                slice_axis=int(entry.get("slice_axis", 0)),
                target=entry.get("target", ""),
                group=entry.get("group") or case_group(name),
            )
        )
    return cases


def find_case(cases_json: str, case_name: str) -> Case:
    """The case named ``case_name`` in ``cases_json`` (an input error when it is not there)."""
    from MedSAMSegmentLib.io import InputError

    matches = [c for c in load_cases(cases_json) if c.name == case_name]
    if not matches:
        raise InputError(f"case {case_name!r} is not in {cases_json}")
    return matches[0]


def default_cases_json(explicit: Union[None, str, Sequence[str]] = None) -> Union[None, str, Sequence[str]]:
    """The ``cases.json`` to use: ``explicit`` (one path or several) when given, else the development set's (see
    the module's text) when one is found, else None."""
    if explicit:
        return explicit
    candidates = [os.environ.get(SHARED_DATA_VARIABLE, ""), os.path.join(os.getcwd(), SHARED_DATA_RELATIVE)]
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "cases.json")):
            return os.path.normpath(os.path.abspath(os.path.join(folder, "cases.json")))
    return None


def modality_setting(case: Case, array: np.ndarray) -> str:
    """The ``--modality`` a user would pick: 8-bit CT (MedSAM ``.npz``) is already windowed, so ``none``."""
    modality = (case.modality or "auto").upper()
    if modality == "CT" and array.dtype == np.uint8:
        return "none"
    if modality in ("CT", "MR"):
        return modality
    return "auto"


def image_groups(cases: Sequence[Case]) -> List[List[int]]:
    """Indices of ``cases`` grouped by image file (several targets drawn on one scan), in order of first
    appearance; each group is evaluated on one cache."""
    groups: Dict[str, List[int]] = {}
    for index, case in enumerate(cases):
        groups.setdefault(os.path.realpath(case.image), []).append(index)
    return list(groups.values())


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
