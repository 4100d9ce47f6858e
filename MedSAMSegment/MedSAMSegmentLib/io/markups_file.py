"""Slicer markups files (``.mrk.json``): ROIs and lines -> key boxes, and writing ROI/line files.

The format (Slicer's markups schema v1.0.x, as written by ``vtkMRMLMarkupsJsonStorageNode`` and
``vtkMRMLMarkupsROIJsonStorageNode``)::

    {"@schema": ".../markups-schema-v1.0.3.json#",
     "markups": [{"type": "ROI", "coordinateSystem": "LPS", "coordinateUnits": "mm",
                  "roiType": "Box", "center": [x, y, z], "size": [sx, sy, sz],
                  "orientation": [9 numbers, row-major 3x3 whose columns are the ROI's axes],
                  "controlPoints": [{"position": [x, y, z], "positionStatus": "defined", ...}]},
                 {"type": "Line", "coordinateSystem": "LPS", "controlPoints": [{...}, {...}]}]}

Positions, centres and orientation columns are in ``coordinateSystem`` (Slicer writes LPS by default; RAS when
asked); this module converts everything to RAS (``LPS -> RAS`` flips the first two coordinates). The ROI's size
is along its own axes. Nothing here needs Slicer: the command line reads the same files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..geometry import GeometryError, KeyBox, add_margin, slice_shape
from .markup_boxes import DEFAULT_LINE_MARGIN, key_box_from_line, key_box_from_roi

SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class MarkupsFileError(GeometryError):
    """A markups file that cannot be read as key boxes; the message names the file, the problem and the fix."""


@dataclass
class MarkupsROI:
    """A box ROI in RAS: centre, axes (columns of a 3x3 matrix) and size along those axes."""

    center: np.ndarray
    size: np.ndarray
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    name: str = ""

    def object_to_world(self) -> np.ndarray:
        matrix = np.eye(4)
        matrix[:3, :3] = self.axes
        matrix[:3, 3] = self.center
        return matrix

    def corners(self) -> np.ndarray:
        """The 8 corners (8, 3) in RAS."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        return self.center + (signs * (np.asarray(self.size) / 2.0)) @ np.asarray(self.axes).T


@dataclass
class MarkupsLine:
    """A line (e.g. a RECIST diameter) between two RAS points."""

    point_a: np.ndarray
    point_b: np.ndarray
    name: str = ""


Markup = Union[MarkupsROI, MarkupsLine]


def _fail(path: str, message: str) -> MarkupsFileError:
    return MarkupsFileError(f"{path}: {message}")


def _vector(path: str, what: str, value, length: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise _fail(path, f"{what} is not a list of numbers: {value!r}; fix or re-save the file from Slicer") from exc
    if array.size != length or not np.all(np.isfinite(array)):
        raise _fail(path, f"{what} must be {length} finite numbers, got {value!r}; fix or re-save the file from Slicer")
    return array


def _coordinate_flip(path: str, markup: dict, index: int) -> np.ndarray:
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system == "RAS":
        return np.eye(3)
    if system == "LPS":
        return LPS_TO_RAS
    raise _fail(path, f"markup {index}: coordinateSystem {system!r} is neither 'RAS' nor 'LPS'")


def _defined_points(path: str, markup: dict, index: int) -> List[np.ndarray]:
    points = []
    control_points = markup.get("controlPoints") or []
    if not isinstance(control_points, list):
        raise _fail(path, f"markup {index}: 'controlPoints' must be a list, got {control_points!r}")
    for n, point in enumerate(control_points):
        if not isinstance(point, dict):
            raise _fail(path, f"markup {index}: control point {n} is not an object")
        status = point.get("positionStatus", "defined")
        if status != "defined" or "position" not in point:
            continue
        points.append(_vector(path, f"markup {index} control point {n} position", point["position"], 3))
    return points


def read_markups(path: Union[str, os.PathLike]) -> List[Markup]:
    """The ROIs and lines of a ``.mrk.json`` file, in RAS. Other markup types (points, curves, planes) are skipped.

    Raises :class:`MarkupsFileError` for a missing or malformed file, or one with no ROI or line.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError as exc:
        raise _fail(path, "file not found; check the path of the markups file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc}); save the markups again from Slicer as .mrk.json") from exc
    if not isinstance(document, dict) or not isinstance(document.get("markups"), list):
        raise _fail(path, "no 'markups' list; this is not a Slicer markups file (.mrk.json)")
    stem = os.path.basename(path)
    for suffix in (".mrk.json", ".json"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    many = len(document["markups"]) > 1
    found: List[Markup] = []
    skipped: List[str] = []
    for index, markup in enumerate(document["markups"]):
        if not isinstance(markup, dict):
            raise _fail(path, f"markup {index} is not an object")
        kind = str(markup.get("type", ""))
        name = f"{stem}#{index}" if many else stem
        flip = _coordinate_flip(path, markup, index)
        points = _defined_points(path, markup, index)
        if kind == "ROI":
            roi_type = markup.get("roiType", "Box")
            if roi_type not in ("Box", "BoundingBox"):
                raise _fail(path, f"markup {index}: ROI type {roi_type!r} is not a box; use a box ROI")
            if "center" in markup:
                center = _vector(path, f"markup {index} center", markup["center"], 3)
            elif points:
                center = points[0]
            else:
                skipped.append(f"ROI {index} (not placed)")
                continue
            if "size" not in markup:
                raise _fail(path, f"markup {index}: the ROI has no 'size'; re-save it from Slicer 5 or later")
            size = np.abs(_vector(path, f"markup {index} size", markup["size"], 3))
            axes = np.eye(3)
            if "orientation" in markup:
                axes = _vector(path, f"markup {index} orientation", markup["orientation"], 9).reshape(3, 3)
            found.append(MarkupsROI(flip @ center, size, flip @ axes, name))
        elif kind == "Line":
            if len(points) < 2:
                skipped.append(f"line {index} (fewer than 2 placed points)")
                continue
            found.append(MarkupsLine(flip @ points[0], flip @ points[1], name))
        else:
            skipped.append(f"{kind or 'untyped'} markup {index}")
    if not found:
        what = f" (found: {', '.join(skipped)})" if skipped else ""
        raise _fail(
            path, f"no placed ROI or line markups{what}; place a box (ROI) or a diameter line on the target and save"
        )
    return found


def markups_key_boxes(
    markups: Iterable[Markup],
    ras_to_ijk: np.ndarray,
    volume_shape: Sequence[int],
    slice_axis: Optional[int] = None,
    line_margin: float = DEFAULT_LINE_MARGIN,
    margin: float = 0.0,
) -> List[Tuple[int, KeyBox]]:
    """``(slice_axis, KeyBox)`` for each ROI and line; ROIs grow by ``margin`` pixels (clipped to the slice).

    ``slice_axis`` (the command line's ``--slice-axis``) is every markup's when given. Otherwise an ROI's slice axis
    comes from its clearly thinnest side (:func:`markup_boxes.key_box_from_roi`): a file holds no record of the view a
    box was drawn in, and a Box ROI placed with two clicks, saved as Slicer saves it (e.g. size [39.3, 32.4, 32.4]),
    has two equal thin sides and is refused with a one-line error that asks for ``--slice-axis``. A line parallel to
    an image axis takes the slice axis of the ROIs, or of another line, when not given.
    """
    items = list(markups)
    pairs: List[Optional[Tuple[int, KeyBox]]] = [None] * len(items)
    axis = slice_axis
    for n, item in enumerate(items):
        if isinstance(item, MarkupsROI):
            roi_axis, key = key_box_from_roi(
                (0.0, 0.0, 0.0), item.size, item.object_to_world(), ras_to_ijk, volume_shape, slice_axis, item.name
            )
            if margin:
                key = KeyBox(key.slice_index, add_margin(key.box, margin, slice_shape(volume_shape, roi_axis)),
                             key.source)
            pairs[n] = (roi_axis, key)
            axis = roi_axis if axis is None else axis
    pending = [n for n, item in enumerate(items) if isinstance(item, MarkupsLine)]
    ambiguous: List[int] = []
    for n in pending:
        line = items[n]
        try:
            pairs[n] = key_box_from_line(line.point_a, line.point_b, ras_to_ijk, volume_shape, axis, line_margin,
                                         line.name)
            axis = pairs[n][0] if axis is None else axis
        except GeometryError:
            if axis is not None:
                raise
            ambiguous.append(n)
    for n in ambiguous:
        line = items[n]
        # Raises the geometry module's "ambiguous" error when no other markup fixed the axis.
        pairs[n] = key_box_from_line(line.point_a, line.point_b, ras_to_ijk, volume_shape, axis, line_margin,
                                     line.name)
    return [p for p in pairs if p is not None]


def read_markups_key_boxes(
    path: Union[str, os.PathLike],
    ras_to_ijk: np.ndarray,
    volume_shape: Sequence[int],
    slice_axis: Optional[int] = None,
    line_margin: float = DEFAULT_LINE_MARGIN,
    margin: float = 0.0,
) -> List[Tuple[int, KeyBox]]:
    """Read a ``.mrk.json`` file and turn its ROIs and lines into ``(slice_axis, KeyBox)`` on a volume's grid.

    ``ras_to_ijk`` is the volume's RAS-to-IJK matrix (inverse of IJK-to-RAS including parent transforms).
    Merge the result with :func:`markup_boxes.merge_key_boxes` to get a :class:`geometry.KeyBoxSet`.
    """
    return markups_key_boxes(read_markups(path), ras_to_ijk, volume_shape, slice_axis, line_margin, margin)


# ---------------------------------------------------------------------------------------------------------
# Writing


def _point_entry(number: int, label: str, position: Sequence[float]) -> dict:
    return {
        "id": str(number),
        "label": label,
        "description": "",
        "associatedNodeID": "",
        "position": [float(v) for v in position],
        "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
        "selected": True,
        "locked": False,
        "visibility": True,
        "positionStatus": "defined",
    }


def write_markups_file(
    path: Union[str, os.PathLike],
    rois: Iterable[Union[MarkupsROI, Tuple]] = (),
    lines: Iterable[Union[MarkupsLine, Tuple]] = (),
    coordinate_system: str = "LPS",
) -> str:
    """Write ROIs and lines (given in RAS) to a Slicer ``.mrk.json`` file; returns the path.

    ``rois``: :class:`MarkupsROI` or ``(center, size)`` / ``(center, size, axes)`` tuples; ``lines``:
    :class:`MarkupsLine` or ``(point_a, point_b)``. Slicer loads every entry as its own markups node.
    """
    system = coordinate_system.upper()
    if system not in ("LPS", "RAS"):
        raise ValueError(f"coordinate_system must be 'LPS' or 'RAS', got {coordinate_system!r}")
    flip = LPS_TO_RAS if system == "LPS" else np.eye(3)  # its own inverse
    entries = []
    for n, roi in enumerate(rois):
        if not isinstance(roi, MarkupsROI):
            roi = MarkupsROI(np.asarray(roi[0], float), np.asarray(roi[1], float),
                             np.asarray(roi[2], float) if len(roi) > 2 else np.eye(3))
        label = roi.name or f"R{n + 1}"
        center = flip @ np.asarray(roi.center, float)
        axes = flip @ np.asarray(roi.axes, float)
        entries.append({
            "type": "ROI",
            "coordinateSystem": system,
            "coordinateUnits": "mm",
            "locked": False,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": 1,
            "roiType": "Box",
            "center": [float(v) for v in center],
            "orientation": [float(v) for v in axes.reshape(-1)],
            "size": [float(abs(v)) for v in roi.size],
            "insideOut": False,
            "controlPoints": [_point_entry(1, label, center)],
        })
    for n, line in enumerate(lines):
        if not isinstance(line, MarkupsLine):
            line = MarkupsLine(np.asarray(line[0], float), np.asarray(line[1], float))
        label = line.name or f"L{n + 1}"
        entries.append({
            "type": "Line",
            "coordinateSystem": system,
            "coordinateUnits": "mm",
            "locked": False,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": 2,
            "controlPoints": [
                _point_entry(1, f"{label}-1", flip @ np.asarray(line.point_a, float)),
                _point_entry(2, f"{label}-2", flip @ np.asarray(line.point_b, float)),
            ],
        })
    if not entries:
        raise ValueError("nothing to write: give at least one ROI or line")
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"@schema": SCHEMA, "markups": entries}, handle, indent=4)
    return path
