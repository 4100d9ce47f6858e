"""Segmentation metrics: Dice similarity coefficient (DSC) and normalised surface Dice (NSD).

Both take boolean (or 0/1) arrays of the same shape. NSD follows the MedSAM paper's definition: the fraction
of the two masks' surfaces that lie within a tolerance (in millimetres) of the other mask's surface, with
distances measured in physical units using the voxel spacing (anisotropic spacing counts).

Surfaces are voxel surfaces: the voxels of a mask that have at least one face neighbour (6-connectivity in 3D,
4 in 2D) outside the mask; voxels on the array's border count as surface. The distance from a surface voxel
of A to the surface of B is the Euclidean distance transform of "not surface of B" sampled at ``spacing``.

    NSD = (|{a in dA : d(a, dB) <= tol}| + |{b in dB : d(b, dA) <= tol}|) / (|dA| + |dB|)

Conventions for empty masks: both empty -> DSC = NSD = 1.0; exactly one empty -> 0.0.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

#: NSD tolerance used in the reports, in millimetres (as in the MedSAM paper's tables).
DEFAULT_NSD_TOLERANCE_MM = 2.0


def _as_bool(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask).astype(bool, copy=False)


def _check_shapes(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice similarity coefficient 2|A∩B| / (|A| + |B|); 1.0 when both masks are empty."""
    a, b = _as_bool(prediction), _as_bool(reference)
    _check_shapes(a, b)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a mask: voxels with a face neighbour outside it (the array border is outside)."""
    m = _as_bool(mask)
    if not m.any():
        return np.zeros_like(m)
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    eroded = ndimage.binary_erosion(m, structure=structure, border_value=0)
    return m & ~eroded


def _distance_to(target_surface: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance in mm from every voxel to the nearest voxel of ``target_surface`` (which must be non-empty)."""
    return ndimage.distance_transform_edt(~target_surface, sampling=spacing)


def _check_spacing(spacing: Optional[Sequence[float]], ndim: int) -> Sequence[float]:
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim:
        raise ValueError(f"spacing {values!r} has {len(values)} values for a {ndim}D mask (give numpy axis order)")
    if not all(s > 0 for s in values):
        raise ValueError(f"spacing {values!r} must be positive")
    return values


def normalised_surface_dice(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice at ``tolerance_mm``; ``spacing`` in the arrays' (numpy) axis order, in mm."""
    a, b = _as_bool(prediction), _as_bool(reference)
    _check_shapes(a, b)
    spacing = _check_spacing(spacing, a.ndim)
    a_any, b_any = bool(a.any()), bool(b.any())
    if not a_any and not b_any:
        return 1.0
    if not a_any or not b_any:
        return 0.0
    # Work inside the joint bounding box plus a border wide enough that the border never matters.
    region = _joint_region(a, b)
    a, b = a[region], b[region]
    surf_a, surf_b = surface(a), surface(b)
    within_a = int((_distance_to(surf_b, spacing)[surf_a] <= tolerance_mm).sum())
    within_b = int((_distance_to(surf_a, spacing)[surf_b] <= tolerance_mm).sum())
    return (within_a + within_b) / float(surf_a.sum() + surf_b.sum())


def _joint_region(a: np.ndarray, b: np.ndarray) -> tuple:
    """The joint bounding box of both masks grown by one voxel (clipped to the array).

    Surfaces are unchanged by the crop: a voxel keeps its background neighbour, or stays on the array border.
    Both surfaces lie inside the crop, so distances between them are exact there too."""
    either = a | b
    region = []
    for axis in range(a.ndim):
        other = tuple(x for x in range(a.ndim) if x != axis)
        present = np.flatnonzero(either.any(axis=other))
        lo, hi = int(present[0]), int(present[-1])
        lo, hi = max(lo - 1, 0), min(hi + 1, a.shape[axis] - 1)
        region.append(slice(lo, hi + 1))
    return tuple(region)


def surface_distances(
    prediction: np.ndarray, reference: np.ndarray, spacing: Optional[Sequence[float]] = None
) -> tuple:
    """Distances (mm) from each surface voxel of the prediction to the reference surface, and back."""
    a, b = _as_bool(prediction), _as_bool(reference)
    _check_shapes(a, b)
    spacing = _check_spacing(spacing, a.ndim)
    if not a.any() or not b.any():
        return np.zeros(0), np.zeros(0)
    surf_a, surf_b = surface(a), surface(b)
    return _distance_to(surf_b, spacing)[surf_a], _distance_to(surf_a, spacing)[surf_b]


def per_slice_dice(prediction: np.ndarray, reference: np.ndarray, slice_axis: int) -> np.ndarray:
    """DSC of every slice along ``slice_axis`` (1.0 where both are empty)."""
    a, b = _as_bool(prediction), _as_bool(reference)
    _check_shapes(a, b)
    other = tuple(x for x in range(a.ndim) if x != slice_axis)
    inter = np.logical_and(a, b).sum(axis=other).astype(float)
    total = a.sum(axis=other).astype(float) + b.sum(axis=other).astype(float)
    out = np.ones_like(total)
    nonzero = total > 0
    out[nonzero] = 2.0 * inter[nonzero] / total[nonzero]
    return out
