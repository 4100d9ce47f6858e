"""Key boxes and their geometry: slices, 2D boxes, interpolation, and world -> voxel conversion.

Conventions (the same everywhere in MedSAMSegmentLib):

* A volume is a numpy array in ``[k, j, i]`` order, as SimpleITK and ``slicer.util.arrayFromVolume`` give it.
* ``slice_axis`` is the numpy axis the annotator's slices lie along; slice ``s`` is ``volume.take(s, axis)``.
* A box is ``[x0, y0, x1, y1]`` in pixels of that 2D slice, ``x`` = its column, ``y`` = its row,
  both ends inclusive.
* World points are RAS. ``ijk_to_ras`` is the 4x4 matrix from voxel ``(i, j, k)`` to RAS, including any
  parent transform; ``ras_to_ijk`` is its inverse.

Nothing here imports Qt, Slicer or torch: markups are passed in as plain arrays so that the command line
(reading ``.mrk.json``) and Slicer (reading MRML nodes) share one implementation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

Box = Tuple[float, float, float, float]

#: An ROI whose normal is further than this from every image axis is refused as oblique.
MAX_ROI_OBLIQUITY_DEGREES = 20.0
#: Default margin, in pixels, added around the extent of a RECIST-style line.
DEFAULT_LINE_MARGIN = 3.0


class GeometryError(ValueError):
    """Key boxes or markups that cannot be turned into boxes on the image; the message says why and how to fix."""


class BoxWarning(UserWarning):
    """A box was corrected (clipped to the image, corners swapped); the message says what was done."""


@dataclass(frozen=True)
class KeyBox:
    """One key box drawn by the annotator: a 2D box on one slice along the set's slice axis."""

    slice_index: int
    box: Box
    source: str = ""  # where it came from, for messages ("ROI 'R_1'", "boxes.json entry 3")

    def describe(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"slice {self.slice_index}{where}"


@dataclass
class KeyBoxSet:
    """Key boxes that share one slice axis."""

    slice_axis: int
    boxes: List[KeyBox] = field(default_factory=list)

    def sorted(self) -> List[KeyBox]:
        return sorted(self.boxes, key=lambda b: b.slice_index)

    @property
    def slice_range(self) -> Tuple[int, int]:
        indices = [b.slice_index for b in self.boxes]
        return min(indices), max(indices)


def in_plane_axes(slice_axis: int) -> Tuple[int, int]:
    """The numpy axes of a slice's rows and columns: ``(row_axis, col_axis)``."""
    check_axis(slice_axis)
    rest = [a for a in range(3) if a != slice_axis]
    return rest[0], rest[1]


def check_axis(slice_axis: int) -> None:
    if slice_axis not in (0, 1, 2):
        raise GeometryError(f"slice axis {slice_axis!r} is not 0, 1 or 2 (a numpy axis of the [k, j, i] array)")


def slice_shape(volume_shape: Sequence[int], slice_axis: int) -> Tuple[int, int]:
    """``(rows, cols)`` of a slice along ``slice_axis``."""
    row_axis, col_axis = in_plane_axes(slice_axis)
    return int(volume_shape[row_axis]), int(volume_shape[col_axis])


def take_slice(volume: np.ndarray, slice_axis: int, index: int) -> np.ndarray:
    """The 2D slice ``volume.take(index, axis=slice_axis)`` (a view where numpy allows)."""
    selector: List[object] = [slice(None)] * volume.ndim
    selector[slice_axis] = index
    return volume[tuple(selector)]


def put_slice(volume: np.ndarray, slice_axis: int, index: int, values: np.ndarray) -> None:
    """Write a 2D slice into ``volume`` along ``slice_axis``."""
    selector: List[object] = [slice(None)] * volume.ndim
    selector[slice_axis] = index
    volume[tuple(selector)] = values


def numpy_index_to_slice_coords(kji: Sequence[float], slice_axis: int) -> Tuple[float, float, float]:
    """``(slice, x, y)`` of a point given in numpy ``[k, j, i]`` coordinates."""
    row_axis, col_axis = in_plane_axes(slice_axis)
    return float(kji[slice_axis]), float(kji[col_axis]), float(kji[row_axis])


# ---------------------------------------------------------------------------------------------------------
# Validating boxes


def validate_box(
    box: Sequence[float], shape_2d: Tuple[int, int], what: str = "box"
) -> Box:
    """Return a clean box inside a slice of ``shape_2d`` (rows, cols).

    Swaps reversed corners and clips boxes partly outside (both with a :class:`BoxWarning`); refuses boxes that
    are not four finite numbers, have no area, or lie wholly outside the slice.
    """
    values = list(box)
    if len(values) != 4:
        raise GeometryError(f"{what}: a box needs 4 numbers [x0, y0, x1, y1], got {len(values)}: {values!r}")
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{what}: box values must be numbers, got {values!r}") from exc
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise GeometryError(f"{what}: box {values!r} contains NaN or infinity; give pixel coordinates")
    if x0 > x1 or y0 > y1:
        warnings.warn(f"{what}: corners of box {values!r} were reversed; swapped them", BoxWarning, stacklevel=2)
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
    if x0 == x1 or y0 == y1:
        raise GeometryError(
            f"{what}: box {values!r} has zero width or height; draw a box around the target"
        )
    rows, cols = shape_2d
    if x1 < 0 or y1 < 0 or x0 > cols - 1 or y0 > rows - 1:
        raise GeometryError(
            f"{what}: box {values!r} lies wholly outside the slice (columns 0-{cols - 1}, rows 0-{rows - 1}); "
            "check the slice axis and the coordinate system of the boxes"
        )
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, cols - 1.0), min(y1, rows - 1.0))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise GeometryError(
            f"{what}: box {values!r} only touches the edge of the slice (columns 0-{cols - 1}, rows 0-{rows - 1}); "
            "nothing of it is left inside - move it onto the target"
        )
    if clipped != (x0, y0, x1, y1):
        warnings.warn(
            f"{what}: box {values!r} extends outside the slice; clipped to {list(clipped)!r}", BoxWarning, stacklevel=2
        )
    return clipped


def validate_key_boxes(keys: KeyBoxSet, volume_shape: Sequence[int]) -> KeyBoxSet:
    """Check a key box set against a volume: slices exist, no slice has two boxes, boxes are valid."""
    check_axis(keys.slice_axis)
    if not keys.boxes:
        raise GeometryError("no key boxes were given; draw at least one box on the target")
    n_slices = int(volume_shape[keys.slice_axis])
    shape_2d = slice_shape(volume_shape, keys.slice_axis)
    seen: Dict[int, KeyBox] = {}
    cleaned: List[KeyBox] = []
    for key in keys.boxes:
        if not (0 <= key.slice_index < n_slices):
            raise GeometryError(
                f"key box on {key.describe()}: the volume has slices 0-{n_slices - 1} along axis "
                f"{keys.slice_axis}; move the box onto the image"
            )
        if key.slice_index in seen:
            raise GeometryError(
                f"two key boxes on slice {key.slice_index}: {seen[key.slice_index].describe()} and "
                f"{key.describe()}; delete one of them"
            )
        seen[key.slice_index] = key
        box = validate_box(key.box, shape_2d, what=f"key box on {key.describe()}")
        cleaned.append(KeyBox(key.slice_index, box, key.source))
    return KeyBoxSet(keys.slice_axis, sorted(cleaned, key=lambda b: b.slice_index))


def add_margin(box: Sequence[float], margin: float, shape_2d: Optional[Tuple[int, int]] = None) -> Box:
    """Grow a box by ``margin`` pixels on each side, clipped to the slice when its shape is given."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, y0, x1, y1 = x0 - margin, y0 - margin, x1 + margin, y1 + margin
    if shape_2d is not None:
        rows, cols = shape_2d
        x0, y0 = max(x0, 0.0), max(y0, 0.0)
        x1, y1 = min(x1, cols - 1.0), min(y1, rows - 1.0)
    return (x0, y0, x1, y1)


def box_from_mask(mask_2d: np.ndarray, margin: float = 0.0) -> Optional[Box]:
    """The bounding box of a 2D mask plus ``margin`` (clipped to the slice), or None for an empty mask."""
    rows = np.flatnonzero(mask_2d.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask_2d.any(axis=0))
    box = (float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1]))
    return add_margin(box, margin, mask_2d.shape) if margin else box


# ---------------------------------------------------------------------------------------------------------
# Interpolation


def interpolate_boxes(keys: Iterable[KeyBox]) -> Dict[int, Box]:
    """A box for every slice from the first to the last key slice, linear in the four coordinates.

    A single key box gives that slice only. Key slices keep their boxes exactly.
    """
    ordered = sorted(keys, key=lambda b: b.slice_index)
    if not ordered:
        return {}
    result: Dict[int, Box] = {ordered[0].slice_index: tuple(float(v) for v in ordered[0].box)}
    for lower, upper in zip(ordered, ordered[1:]):
        if upper.slice_index == lower.slice_index:
            raise GeometryError(
                f"two key boxes on slice {lower.slice_index}: {lower.describe()} and {upper.describe()}"
            )
        a = np.asarray(lower.box, dtype=float)
        b = np.asarray(upper.box, dtype=float)
        span = upper.slice_index - lower.slice_index
        for s in range(lower.slice_index + 1, upper.slice_index + 1):
            t = (s - lower.slice_index) / span
            # Kept between the two key boxes exactly (rounding could otherwise step a hair outside the slice).
            value = np.clip((1.0 - t) * a + t * b, np.minimum(a, b), np.maximum(a, b))
            result[s] = tuple(float(v) for v in value)
    return result


# ---------------------------------------------------------------------------------------------------------
# World (RAS) markups -> key boxes


def ras_to_numpy_index(points_ras: np.ndarray, ras_to_ijk: np.ndarray) -> np.ndarray:
    """Continuous numpy ``[k, j, i]`` coordinates of RAS points (N, 3)."""
    points = np.atleast_2d(np.asarray(points_ras, dtype=float))
    homogeneous = np.c_[points, np.ones(len(points))]
    ijk = (np.asarray(ras_to_ijk, dtype=float) @ homogeneous.T).T[:, :3]
    return ijk[:, ::-1]


def roi_corners_ras(center: Sequence[float], size: Sequence[float], object_to_world: np.ndarray) -> np.ndarray:
    """The 8 corners (8, 3) of an ROI in world coordinates.

    ``object_to_world`` is 4x4 (or a 3x3 rotation); its columns are the ROI's axes in world space, so rotation
    counts, and its translation is the ROI's centre. ``center`` is an extra offset in the ROI's own axes: pass
    zeros with Slicer's ``GetObjectToWorldMatrix()``, which already holds the centre.
    """
    matrix = np.eye(4)
    given = np.asarray(object_to_world, dtype=float)
    matrix[: given.shape[0], : given.shape[1]] = given
    half = np.asarray(size, dtype=float) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    local = np.asarray(center, dtype=float) + signs * half
    return (matrix @ np.c_[local, np.ones(8)].T).T[:, :3]


def key_box_from_roi(
    center: Sequence[float],
    size: Sequence[float],
    object_to_world: np.ndarray,
    ras_to_ijk: np.ndarray,
    volume_shape: Sequence[int],
    slice_axis: Optional[int] = None,
    name: str = "",
) -> Tuple[int, KeyBox]:
    """Turn a markups ROI into ``(slice_axis, KeyBox)``.

    All 8 corners go to voxel space; the ROI's thinnest side (in voxels) picks the slice axis unless one is
    given; the slice is the ROI centre's index along it; the box is the min/max of the corners in the plane.
    An ROI whose thin direction is more than :data:`MAX_ROI_OBLIQUITY_DEGREES` from every image axis is refused.
    """
    label = f"ROI '{name}'" if name else "ROI"
    size_arr = np.asarray(size, dtype=float)
    if size_arr.shape != (3,) or not np.all(np.isfinite(size_arr)):
        raise GeometryError(f"{label}: size {list(size)!r} is not three finite numbers")
    corners_kji = ras_to_numpy_index(roi_corners_ras(center, size, object_to_world), ras_to_ijk)
    if not np.all(np.isfinite(corners_kji)):
        raise GeometryError(f"{label}: its corners are not finite in voxel space; check the volume geometry")

    # The ROI's own axes in voxel space: the thin one is the annotator's slice normal.
    matrix = np.eye(4)
    given = np.asarray(object_to_world, dtype=float)
    matrix[: given.shape[0], : given.shape[1]] = given
    linear = np.asarray(ras_to_ijk, dtype=float)[:3, :3] @ matrix[:3, :3]
    roi_axes_kji = [linear[:, n][::-1] * size_arr[n] for n in range(3)]  # each ROI side as a voxel vector
    lengths = [float(np.linalg.norm(v)) for v in roi_axes_kji]
    thin = int(np.argmin(lengths))
    # Angles are physical (world space): with anisotropic voxels an ROI tilted 45 degrees can look nearly
    # axis-aligned in voxel indices.
    ijk_to_world = np.linalg.inv(np.asarray(ras_to_ijk, dtype=float))[:3, :3]
    normal_world = matrix[:3, thin] / max(float(np.linalg.norm(matrix[:3, thin])), 1e-12)
    image_axes_world = [ijk_to_world[:, 2 - a] / max(float(np.linalg.norm(ijk_to_world[:, 2 - a])), 1e-12)
                        for a in range(3)]  # numpy axis a (k, j, i) as a world direction
    angles = [float(np.degrees(np.arccos(np.clip(abs(normal_world @ d), 0.0, 1.0)))) for d in image_axes_world]
    if slice_axis is None:
        slice_axis = int(np.argmin(angles))
    check_axis(slice_axis)
    angle = angles[slice_axis]
    if angle > MAX_ROI_OBLIQUITY_DEGREES:
        raise GeometryError(
            f"{label}: its thin side is {angle:.1f} degrees from image axis {slice_axis} (more than "
            f"{MAX_ROI_OBLIQUITY_DEGREES:.0f}); draw the box in a view aligned with the volume's slices"
        )
    center_kji = corners_kji.mean(axis=0)
    slice_index = int(np.floor(center_kji[slice_axis] + 0.5))
    row_axis, col_axis = in_plane_axes(slice_axis)
    x0, x1 = np.floor(corners_kji[:, col_axis].min() + 0.5), np.floor(corners_kji[:, col_axis].max() + 0.5)
    y0, y1 = np.floor(corners_kji[:, row_axis].min() + 0.5), np.floor(corners_kji[:, row_axis].max() + 0.5)
    n_slices = int(volume_shape[slice_axis])
    if not (0 <= slice_index < n_slices):
        raise GeometryError(
            f"{label}: its centre is on slice {slice_index} along axis {slice_axis}, outside the volume "
            f"(slices 0-{n_slices - 1}); place it on the image"
        )
    return slice_axis, KeyBox(slice_index, (float(x0), float(y0), float(x1), float(y1)), label)


def key_box_from_line(
    point_a: Sequence[float],
    point_b: Sequence[float],
    ras_to_ijk: np.ndarray,
    volume_shape: Sequence[int],
    slice_axis: Optional[int] = None,
    margin: float = DEFAULT_LINE_MARGIN,
    name: str = "",
) -> Tuple[int, KeyBox]:
    """Turn a RECIST-style line (a lesion's longest diameter) into ``(slice_axis, KeyBox)``.

    The lesion lies within the circle that has the line as its diameter, so the box is that circle's bounding
    square in the slice (in physical distance, so anisotropic pixels are handled) plus ``margin`` pixels.
    The slice axis is the one along which the line does not move, unless given; when the line is parallel to
    an image axis the choice is ambiguous and the axis must be given.
    """
    label = f"line '{name}'" if name else "line"
    ends = ras_to_numpy_index(np.vstack([point_a, point_b]), ras_to_ijk)
    if not np.all(np.isfinite(ends)):
        raise GeometryError(f"{label}: its end points are not finite in voxel space")
    delta = np.abs(ends[1] - ends[0])
    if slice_axis is None:
        flat = [a for a in range(3) if delta[a] < 0.5]
        if len(flat) == 1:
            slice_axis = flat[0]
        elif len(flat) == 0:
            raise GeometryError(
                f"{label}: it crosses slices along every axis; draw it within one slice"
            )
        else:
            raise GeometryError(
                f"{label}: it is parallel to an image axis, so its slice axis is ambiguous (could be "
                f"{flat}); give the slice axis (--slice-axis, or place a box in the same view)"
            )
    check_axis(slice_axis)
    if delta[slice_axis] >= 1.0:
        raise GeometryError(
            f"{label}: it spans {delta[slice_axis]:.1f} slices along axis {slice_axis}; draw it within one slice"
        )
    row_axis, col_axis = in_plane_axes(slice_axis)
    linear = np.linalg.inv(np.asarray(ras_to_ijk, dtype=float))[:3, :3]
    spacing_kji = np.linalg.norm(linear, axis=0)[::-1]  # mm per voxel step along k, j, i
    step = (ends[1] - ends[0]) * spacing_kji
    length_mm = float(np.hypot(step[row_axis], step[col_axis]))
    if length_mm == 0.0:
        raise GeometryError(f"{label}: its two ends coincide; draw the lesion's longest diameter")
    mid = ends.mean(axis=0)
    half_cols = length_mm / 2.0 / spacing_kji[col_axis] + margin
    half_rows = length_mm / 2.0 / spacing_kji[row_axis] + margin
    box = (
        float(mid[col_axis] - half_cols),
        float(mid[row_axis] - half_rows),
        float(mid[col_axis] + half_cols),
        float(mid[row_axis] + half_rows),
    )
    slice_index = int(np.floor(mid[slice_axis] + 0.5))
    n_slices = int(volume_shape[slice_axis])
    if not (0 <= slice_index < n_slices):
        raise GeometryError(
            f"{label}: it is on slice {slice_index} along axis {slice_axis}, outside the volume "
            f"(slices 0-{n_slices - 1})"
        )
    return slice_axis, KeyBox(slice_index, box, label)


def merge_key_boxes(pairs: Iterable[Tuple[int, KeyBox]]) -> KeyBoxSet:
    """Collect ``(slice_axis, KeyBox)`` pairs into one set; refuses boxes drawn along different axes."""
    axis: Optional[int] = None
    boxes: List[KeyBox] = []
    for pair_axis, key in pairs:
        if axis is None:
            axis = pair_axis
        elif pair_axis != axis:
            first = boxes[0] if boxes else None
            raise GeometryError(
                f"key boxes lie along different slice axes: {first.describe() if first else 'the first box'} on "
                f"axis {axis}, {key.describe()} on axis {pair_axis}; draw all key boxes in one view"
            )
        boxes.append(key)
    if axis is None:
        raise GeometryError("no key boxes were found; place ROI or line markups on the target")
    return KeyBoxSet(axis, boxes)


def slice_axis_from_view_normal(normal_ras: Sequence[float], ijk_to_ras: np.ndarray) -> int:
    """The numpy axis most parallel to a view's normal (RAS), for a volume with any direction matrix."""
    linear = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
    normal_ijk = np.linalg.solve(linear, np.asarray(normal_ras, dtype=float))
    normal_kji = normal_ijk[::-1] / max(np.linalg.norm(normal_ijk), 1e-12)
    return int(np.argmax(np.abs(normal_kji)))
