"""Key boxes on the voxel grid: slices, 2D boxes, validation and interpolation.

Conventions (the same everywhere in MedSAMSegmentLib):

* A volume is a numpy array in ``[k, j, i]`` order, as SimpleITK and ``slicer.util.arrayFromVolume`` give it.
* ``slice_axis`` is the numpy axis the annotator's slices lie along; slice ``s`` is ``volume.take(s, axis)``.
* A box is ``[x0, y0, x1, y1]`` in pixels of that 2D slice, ``x`` = its column, ``y`` = its row,
  both ends inclusive.

World (RAS) markups become key boxes in :mod:`markup_boxes`. Nothing here imports Qt, Slicer or torch.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .settings import BOX_SIZES

Box = Tuple[float, float, float, float]

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


def interpolate_boxes(keys: Iterable[KeyBox], sizes: str = "linear") -> Dict[int, Box]:
    """A box for every slice from the first to the last key slice, from the key boxes on either side.

    ``sizes`` (``settings.BOX_SIZES``): ``linear`` (MedSAM's) makes the four coordinates linear in the slice
    index; ``rounded`` keeps the centre linear and makes each half-size ``sqrt((1 - t) a**2 + t b**2)`` between
    the key boxes' half-sizes ``a`` and ``b`` (a fraction ``t`` of the way): the size changes fast next to the
    smaller box and slowly next to the larger one, as a rounded target's cross-sections do towards its ends.
    Either way every box lies within the smallest box holding its two key boxes. A single key box gives that
    slice only. Key slices keep their boxes exactly.
    Raises :class:`GeometryError` for two key boxes on one slice and ValueError for an unknown ``sizes``.
    """
    if sizes not in BOX_SIZES:
        raise ValueError(f"box sizes {sizes!r}: use one of {', '.join(BOX_SIZES)}")
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
            if sizes == "linear":
                # Kept between the two key boxes exactly (rounding could otherwise step a hair outside the slice).
                value = np.clip((1.0 - t) * a + t * b, np.minimum(a, b), np.maximum(a, b))
            else:
                value = _rounded_between(a, b, t)
            result[s] = tuple(float(v) for v in value)
    return result


def _rounded_between(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """The ``rounded`` box a fraction ``t`` of the way from key box ``a`` to key box ``b``, kept within their hull."""
    centre = (1.0 - t) * (a[:2] + a[2:]) / 2 + t * (b[:2] + b[2:]) / 2
    half = np.sqrt((1.0 - t) * ((a[2:] - a[:2]) / 2) ** 2 + t * ((b[2:] - b[:2]) / 2) ** 2)
    low, high = np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])
    return np.concatenate([np.clip(centre - half, low, high), np.clip(centre + half, low, high)])
