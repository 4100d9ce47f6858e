"""World (RAS) markups -> key boxes: ROIs and RECIST-style lines to 2D boxes on a volume's voxel grid.

Conventions are those of :mod:`geometry` (``[k, j, i]`` arrays, ``slice_axis``, ``[x0, y0, x1, y1]`` boxes), and:

* World points are RAS. ``ijk_to_ras`` is the 4x4 matrix from voxel ``(i, j, k)`` to RAS, including any
  parent transform; ``ras_to_ijk`` is its inverse.

Nothing here imports Qt, Slicer or torch: markups are passed in as plain arrays so that the command line
(reading ``.mrk.json``) and Slicer (reading MRML nodes) share one implementation.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import GeometryError, KeyBox, KeyBoxSet, check_axis, in_plane_axes

#: An ROI whose normal is further than this from every image axis is refused as oblique.
MAX_ROI_OBLIQUITY_DEGREES = 20.0
#: Without a recorded view or a given slice axis, an ROI's thinnest side (in voxels) gives the slice axis only when
#: it is at most this fraction of each other side in mm. A Box ROI placed with two clicks in a slice view is as deep
#: as its shorter in-plane side (``vtkMRMLMarkupsROINode::UpdateBoxROIFromControlPoints``), so two equal sides are
#: the norm there and the thin side says nothing about the view it was drawn in: such ties are refused.
THIN_SIDE_RATIO = 0.9
#: A voxel centre this close (in voxels) outside a box still counts as inside: Slicer keeps markups control points
#: in single precision, so an ROI made with its corners on voxel centres comes back a few 1e-6 mm off.
VOXEL_CENTRE_TOLERANCE = 1e-3
#: Default margin, in pixels, added around the extent of a RECIST-style line.
DEFAULT_LINE_MARGIN = 3.0


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


def image_axes_world(ijk_to_ras: np.ndarray) -> np.ndarray:
    """Unit world (RAS) directions of the numpy axes ``k, j, i``: row ``a`` is numpy axis ``a``."""
    linear = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
    columns = [linear[:, 2 - a] for a in range(3)]  # numpy axis a is IJK column 2 - a
    return np.array([c / max(float(np.linalg.norm(c)), 1e-12) for c in columns])


def angles_to_image_axes(direction_ras: Sequence[float], ijk_to_ras: np.ndarray) -> np.ndarray:
    """Angles in degrees (0-90) between a world direction and each numpy axis ``k, j, i`` of a volume.

    Physical angles: with anisotropic voxels a direction tilted 45 degrees can look nearly axis-aligned in indices.
    """
    direction = np.asarray(direction_ras, dtype=float)
    direction = direction / max(float(np.linalg.norm(direction)), 1e-300)
    cosines = np.clip(np.abs(image_axes_world(ijk_to_ras) @ direction), 0.0, 1.0)
    return np.degrees(np.arccos(cosines))


def _check_obliquity(label: str, what: str, angle: float, slice_axis: int) -> None:
    if not angle <= MAX_ROI_OBLIQUITY_DEGREES:
        raise GeometryError(
            f"{label}: {what} is {angle:.1f} degrees from image axis {slice_axis} (more than "
            f"{MAX_ROI_OBLIQUITY_DEGREES:.0f}); draw the box in a view aligned with the volume's slices"
        )


def _unit_normal(label: str, normal: Sequence[float]) -> np.ndarray:
    vector = np.asarray(normal, dtype=float).reshape(-1)
    length = float(np.linalg.norm(vector)) if vector.shape == (3,) else float("nan")
    if not (math.isfinite(length) and length > 0.0):
        raise GeometryError(f"{label}: its recorded view normal {list(vector)!r} is not a direction; draw it again")
    return vector / length


def axis_from_view_normal(
    normal_ras: Sequence[float], ijk_to_ras: np.ndarray, label: str = "markup"
) -> Tuple[int, float]:
    """``(slice_axis, angle)`` of the numpy axis closest to a view's normal; refuses a normal that is more than
    :data:`MAX_ROI_OBLIQUITY_DEGREES` from every image axis (the view is oblique to the volume's slices)."""
    normal = _unit_normal(label, normal_ras)
    angles = angles_to_image_axes(normal, ijk_to_ras)
    axis = int(np.argmin(angles))
    _check_obliquity(label, "the view it was drawn in", float(angles[axis]), axis)
    return axis, float(angles[axis])


def roi_section_ras(
    center: Sequence[float], size: Sequence[float], object_to_world: np.ndarray, normal_ras: Sequence[float]
) -> np.ndarray:
    """The vertices (N, 3) of the cut of an ROI by the plane through its centre with the given normal (RAS).

    ``center``, ``size`` and ``object_to_world`` are as in :func:`roi_corners_ras`. When the normal is one of the
    ROI's own axes the cut is the ROI's middle cross-section (4 vertices; all 8 corners when it has no depth).
    """
    matrix = np.eye(4)
    given = np.asarray(object_to_world, dtype=float)
    matrix[: given.shape[0], : given.shape[1]] = given
    corners = roi_corners_ras(center, size, matrix)
    middle = (matrix @ np.r_[np.asarray(center, dtype=float), 1.0])[:3]
    normal = np.asarray(normal_ras, dtype=float)
    normal = normal / max(float(np.linalg.norm(normal)), 1e-300)
    distance = (corners - middle) @ normal
    scale = 1.0 + float(np.max(np.abs(corners - middle)))
    on_plane = np.abs(distance) <= 1e-9 * scale
    points = [corners[n] for n in range(8) if on_plane[n]]
    for a in range(8):
        for bit in (1, 2, 4):  # corners a and a ^ bit differ along one ROI axis: an edge
            b = a ^ bit
            if b < a or on_plane[a] or on_plane[b] or distance[a] * distance[b] > 0:
                continue
            t = distance[a] / (distance[a] - distance[b])
            points.append(corners[a] + t * (corners[b] - corners[a]))
    return np.array(points) if points else middle[None, :]


def voxel_centre_range(low: float, high: float, tolerance: float = VOXEL_CENTRE_TOLERANCE) -> Tuple[float, float]:
    """The first and last whole voxel index whose centre lies in ``[low, high]`` (with ``tolerance`` voxels of
    slack); the first is larger than the last when no centre does."""
    return float(np.ceil(low - tolerance)), float(np.floor(high + tolerance))


def key_box_from_roi(
    center: Sequence[float],
    size: Sequence[float],
    object_to_world: np.ndarray,
    ras_to_ijk: np.ndarray,
    volume_shape: Sequence[int],
    slice_axis: Optional[int] = None,
    name: str = "",
    slice_normal: Optional[Sequence[float]] = None,
) -> Tuple[int, KeyBox]:
    """Turn a markups ROI into ``(slice_axis, KeyBox)``.

    The ROI is cut by a plane through its centre; the box holds the voxels whose centres lie inside that cut:
    ``ceil`` of its minimum and ``floor`` of its maximum along the slice's columns and rows (an ROI from
    ``x0 - 0.5`` to ``x1 + 0.5`` gives ``x0..x1``); the slice is the ROI centre's nearest slice. The plane is:

    * ``slice_normal`` (RAS), the normal of the slice view the box was drawn in, when given (recorded at
      placement); its nearest image axis is the slice axis unless ``slice_axis`` is given and differs;
    * else, with ``slice_axis`` given, the ROI's middle cross-section across its side nearest that image axis;
    * else the ROI's middle cross-section across its thinnest side in voxels, whose nearest image axis is the
      slice axis. That side must also be at most :data:`THIN_SIDE_RATIO` of each other side in mm: a Box ROI
      placed with two clicks is as deep as its shorter side, so ties are refused as ambiguous (the error names
      ``--slice-axis``), as is a side thinnest in voxels but not in mm.

    Refused (:class:`GeometryError`, one line): a plane more than :data:`MAX_ROI_OBLIQUITY_DEGREES` from the slice
    axis, an ROI that covers no voxel centre in its slice, a centre outside the volume, non-finite geometry.
    """
    label = f"ROI '{name}'" if name else "ROI"
    size_arr = np.abs(np.asarray(size, dtype=float))
    if size_arr.shape != (3,) or not np.all(np.isfinite(size_arr)):
        raise GeometryError(f"{label}: size {list(size)!r} is not three finite numbers")
    matrix = np.eye(4)
    given = np.asarray(object_to_world, dtype=float)
    matrix[: given.shape[0], : given.shape[1]] = given
    ras_to_ijk = np.asarray(ras_to_ijk, dtype=float)
    offset = np.asarray(center, dtype=float)
    if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(ras_to_ijk)) and np.all(np.isfinite(offset))):
        raise GeometryError(f"{label}: its corners are not finite in voxel space; check the volume geometry")
    try:
        ijk_to_ras = np.linalg.inv(ras_to_ijk)
    except np.linalg.LinAlgError as exc:
        raise GeometryError(f"{label}: the volume's RAS-to-IJK matrix is singular; check the volume geometry") from exc
    corners_kji = ras_to_numpy_index(roi_corners_ras(offset, size_arr, matrix), ras_to_ijk)
    if not np.all(np.isfinite(corners_kji)):
        raise GeometryError(f"{label}: its corners are not finite in voxel space; check the volume geometry")

    # The ROI's own axes in world space and its sides in mm.
    axes_lengths = np.linalg.norm(matrix[:3, :3], axis=0)
    roi_axes = matrix[:3, :3] / np.maximum(axes_lengths, 1e-300)  # unit columns
    sides_mm = size_arr * axes_lengths
    image_axes = image_axes_world(ijk_to_ras)

    normal: Optional[np.ndarray] = None
    what = ""
    if slice_normal is not None:
        normal = _unit_normal(label, slice_normal)
        normal_axis = int(np.argmin(angles_to_image_axes(normal, ijk_to_ras)))
        if slice_axis is not None and slice_axis != normal_axis:
            normal = None  # the given slice axis wins over the view the box was drawn in
        else:
            slice_axis = normal_axis
            what = "the view it was drawn in"
    if normal is None and slice_axis is not None:
        check_axis(slice_axis)
        across = int(np.argmax(np.abs(image_axes[slice_axis] @ roi_axes)))
        normal = roi_axes[:, across]
        what = f"its side across slice axis {slice_axis}"
    if normal is None:
        # Today's rule, the side thinnest in voxels, kept only where that side is clearly the thinnest in mm too.
        sides_voxels = np.linalg.norm(ras_to_ijk[:3, :3] @ (roi_axes * sides_mm), axis=0)
        thin = int(np.argmin(sides_voxels))
        second = min((n for n in range(3) if n != thin), key=lambda n: sides_mm[n])
        if not sides_mm[thin] <= THIN_SIDE_RATIO * sides_mm[second]:
            raise GeometryError(
                f"{label}: its sides are {sides_mm[thin]:.1f} and {sides_mm[second]:.1f} mm across, so its slice "
                "axis is ambiguous (a box placed with two clicks is as deep as its shorter side); give the slice "
                "axis (--slice-axis on the command line) or draw the box in a slice view"
            )
        normal = roi_axes[:, thin]
        slice_axis = int(np.argmin(angles_to_image_axes(normal, ijk_to_ras)))
        what = "its thin side"
    check_axis(slice_axis)
    _check_obliquity(label, what, float(angles_to_image_axes(normal, ijk_to_ras)[slice_axis]), slice_axis)

    section_kji = ras_to_numpy_index(roi_section_ras(offset, size_arr, matrix, normal), ras_to_ijk)
    center_kji = ras_to_numpy_index((matrix @ np.r_[offset, 1.0])[:3], ras_to_ijk)[0]
    if not (np.all(np.isfinite(section_kji)) and np.all(np.isfinite(center_kji))):
        raise GeometryError(f"{label}: its corners are not finite in voxel space; check the volume geometry")
    slice_index = _slice_inside(label, "its centre is", center_kji[slice_axis], slice_axis, volume_shape)
    row_axis, col_axis = in_plane_axes(slice_axis)
    cols, rows = section_kji[:, col_axis], section_kji[:, row_axis]
    x0, x1 = voxel_centre_range(float(cols.min()), float(cols.max()))
    y0, y1 = voxel_centre_range(float(rows.min()), float(rows.max()))
    if x0 > x1 or y0 > y1:
        raise GeometryError(
            f"{label}: it covers no voxel centre on slice {slice_index} (it is {np.ptp(cols):.2f} x "
            f"{np.ptp(rows):.2f} pixels); draw a larger box"
        )
    return slice_axis, KeyBox(slice_index, (x0, y0, x1, y1), label)


def key_box_from_line(
    point_a: Sequence[float],
    point_b: Sequence[float],
    ras_to_ijk: np.ndarray,
    volume_shape: Sequence[int],
    slice_axis: Optional[int] = None,
    margin: float = DEFAULT_LINE_MARGIN,
    name: str = "",
    slice_normal: Optional[Sequence[float]] = None,
) -> Tuple[int, KeyBox]:
    """Turn a RECIST-style line (a lesion's longest diameter) into ``(slice_axis, KeyBox)``.

    The lesion lies within the circle that has the line as its diameter, so the box is that circle's bounding
    square in the slice (in physical distance, so anisotropic pixels are handled) plus ``margin`` pixels.
    The slice axis is, in this order: ``slice_axis``; the image axis nearest ``slice_normal`` (RAS, the normal of
    the slice view the line was drawn in; refused beyond :data:`MAX_ROI_OBLIQUITY_DEGREES`); the one axis along
    which the line does not move. A line parallel to an image axis without either is ambiguous and refused.
    """
    label = f"line '{name}'" if name else "line"
    ends = ras_to_numpy_index(np.vstack([point_a, point_b]), ras_to_ijk)
    if not np.all(np.isfinite(ends)):
        raise GeometryError(f"{label}: its end points are not finite in voxel space")
    delta = np.abs(ends[1] - ends[0])
    if slice_axis is None and slice_normal is not None:
        try:
            ijk_to_ras = np.linalg.inv(np.asarray(ras_to_ijk, dtype=float))
        except np.linalg.LinAlgError as exc:
            raise GeometryError(f"{label}: the volume's RAS-to-IJK matrix is singular") from exc
        slice_axis = axis_from_view_normal(slice_normal, ijk_to_ras, label)[0]
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
    slice_index = _slice_inside(label, "it is", mid[slice_axis], slice_axis, volume_shape)
    return slice_axis, KeyBox(slice_index, box, label)


def _slice_inside(label: str, subject: str, position: float, slice_axis: int, volume_shape) -> int:
    """The slice nearest ``position`` along ``slice_axis``; GeometryError naming ``label`` outside the volume."""
    slice_index = int(np.floor(position + 0.5))
    n_slices = int(volume_shape[slice_axis])
    if not (0 <= slice_index < n_slices):
        raise GeometryError(f"{label}: {subject} on slice {slice_index} along axis {slice_axis}, outside the volume "
                            f"(slices 0-{n_slices - 1}); place it on the image")
    return slice_index


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
    """The numpy axis most parallel to a view's normal (RAS), for a volume with any direction matrix.

    Parallel in physical space: the voxel spacing does not weigh in (with 0.5 x 0.5 x 5 mm voxels a normal 15 degrees
    from the slice direction still picks the slice axis).
    """
    return int(np.argmin(angles_to_image_axes(normal_ras, ijk_to_ras)))
