"""Volume intensity normalisation to the uint8 range MedSAM was trained on (MedSAM's ``pre_CT_MR.py``).

* CT: clip to ``[level - width/2, level + width/2]`` and scale to 0-255.
* MR and others: clip to the 0.5th-99.5th percentile of the voxels above zero, scale to 0-255, and set the
  voxels that were zero back to zero.
* ``none``: the volume is already 0-255 (MedSAM's ``.npz`` files); it is only cast.

MR rule (``mr_rule``): ``published`` is the recipe above. ``auto`` (default) is the same on images without
negative values; on an image with negative values (z-scored MR, as BraTS distributes it: the brain around 0, half
of it negative, the background one constant below it) "above zero" would clip half the brain to black, so the
percentiles are taken over the voxels above the image's minimum (its background) and the background is set to 0.
Measured on the development set in ``docs/accuracy.md``.

The volume is normalised once, before slicing, so every slice shares one intensity scale. The input array is
never modified.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple

import numpy as np

from .settings import MODALITIES, MR_RULES

#: CT presets (level, width) offered to users; ``soft_tissue`` is MedSAM's default.
CT_WINDOWS = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (40.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}
DEFAULT_CT_WINDOW = CT_WINDOWS["soft_tissue"]


class IntensityError(ValueError):
    """An image whose intensities cannot be normalised; the message says why and what to do."""


def guess_modality(volume: np.ndarray) -> str:
    """Guess ``CT``, ``MR`` or ``none`` from the voxel values.

    uint8 data are taken as already normalised; integer data whose minimum is air in Hounsfield units
    (below -500) as CT; everything else as MR.
    """
    if volume.dtype == np.uint8:
        return "none"
    finite = volume[np.isfinite(volume)] if np.issubdtype(volume.dtype, np.floating) else volume
    if finite.size == 0:
        return "MR"
    low = float(finite.min())
    if low <= -500.0 and float(finite.max()) > 0:
        return "CT"
    return "MR"


def _scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    clipped = np.clip(values, low, high)
    span = max(high - low, 1e-8)
    # Truncation, not rounding, as np.uint8() does in MedSAM's pre_CT_MR.py.
    return ((clipped - low) / span * 255.0).astype(np.uint8)


def normalise_ct(volume: np.ndarray, level: float, width: float) -> np.ndarray:
    """Clip to the window ``[level - width/2, level + width/2]`` and scale to uint8."""
    if not np.isfinite(level) or not np.isfinite(width) or width <= 0:
        raise IntensityError(f"CT window level {level}, width {width} is not valid; the width must be positive")
    return _scale_in_chunks(volume, level - width / 2.0, level + width / 2.0)


def normalise_mr(
    volume: np.ndarray, lower_percentile: float = 0.5, upper_percentile: float = 99.5, rule: str = "published"
) -> np.ndarray:
    """Percentile clip of the foreground voxels, scaled to uint8, background kept at zero.

    ``published``: foreground = voxels above zero, background = zero voxels (MedSAM's ``pre_CT_MR.py``).
    ``auto``: the same without negative values; with negative values foreground = voxels above the minimum and
    background = the minimum (see the module docstring).
    """
    if rule not in MR_RULES:
        raise IntensityError(f"unknown MR rule {rule!r}; use one of {', '.join(MR_RULES)}")
    lowest = 0.0
    if rule == "auto":
        minima = [float(b[np.isfinite(b)].min()) for b in _float_chunks(volume) if np.isfinite(b).any()]
        if minima and min(minima) < 0:
            lowest = min(minima)
    # The auto rule's foreground is nearly every voxel: beyond SAMPLE_VOXELS a regular sample of it gives the
    # percentiles, so memory stays under one float32 copy of the volume (the published rule is unchanged).
    step = 1
    if lowest < 0:
        count = sum(int(np.count_nonzero(np.isfinite(b) & (b > lowest))) for b in _float_chunks(volume))
        step = max(1, int(np.ceil(count / SAMPLE_VOXELS)))
    positive = np.concatenate([b[np.isfinite(b) & (b > lowest)][::step] for b in _float_chunks(volume)])
    if positive.size == 0:
        # No voxel above zero (e.g. z-scored data with no background): use all finite voxels.
        positive = np.concatenate([b[np.isfinite(b)] for b in _float_chunks(volume)])
    if positive.size == 0:
        raise IntensityError("the image has no finite voxel values; check that the file holds an image")
    low, high = np.percentile(positive, [lower_percentile, upper_percentile])
    del positive
    return _scale_in_chunks(volume, float(low), float(high), keep_zero=True, background=lowest)


#: Foreground voxels beyond which the ``auto`` MR rule takes its percentiles from a regular sample.
SAMPLE_VOXELS = 1 << 23
#: Voxels per block when normalising, so a large volume is never copied whole as float32.
CHUNK_VOXELS = 1 << 22


def _float_chunks(volume: np.ndarray):
    """float32 copies of consecutive blocks along the first axis (the input is never modified)."""
    if volume.ndim == 0 or volume.shape[0] == 0:
        yield volume.astype(np.float32).reshape(-1)
        return
    per_row = max(1, volume[0].size)
    step = max(1, CHUNK_VOXELS // per_row)
    for start in range(0, volume.shape[0], step):
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes +/-inf, handled as such
            yield volume[start : start + step].astype(np.float32)


def _scale_in_chunks(
    volume: np.ndarray, low: float, high: float, keep_zero: bool = False, background: float = 0.0
) -> np.ndarray:
    """Scale ``[low, high]`` to uint8 block by block: NaN -> ``low``, +/-inf -> the nearer end.

    With ``keep_zero`` the voxels equal to ``background`` become 0."""
    result = np.empty(volume.shape, dtype=np.uint8)
    flat = result.reshape(volume.shape[0], -1) if volume.ndim > 1 else result.reshape(1, -1)
    start = 0
    for block in _float_chunks(volume if volume.ndim > 1 else volume.reshape(1, -1)):
        rows = block.shape[0]
        block_flat = block.reshape(rows, -1)
        zero = block_flat == background if keep_zero else None
        np.nan_to_num(block_flat, copy=False, nan=low, posinf=high, neginf=low)
        scaled = _scale_to_uint8(block_flat, low, high)
        if zero is not None:
            scaled[zero] = 0
        flat[start : start + rows] = scaled
        start += rows
    return result


def count_non_finite(volume: np.ndarray) -> int:
    """NaN and infinite voxels of a float volume (0 for integer volumes), counted block by block."""
    if not np.issubdtype(volume.dtype, np.floating):
        return 0
    step = max(1, CHUNK_VOXELS // max(1, volume[0].size)) if volume.ndim > 1 else max(1, volume.size)
    blocks = (volume[start : start + step] for start in range(0, max(1, volume.shape[0] if volume.ndim else 1), step))
    return int(sum(b.size - np.count_nonzero(np.isfinite(b)) for b in blocks))


def normalise_volume(
    volume: np.ndarray,
    modality: str = "auto",
    window: Optional[Sequence[float]] = None,
    mr_rule: str = "auto",
) -> np.ndarray:
    """Normalise a whole volume (any dimensionality, scalar voxels) to uint8.

    ``window`` (level, width) applies to CT and overrides its default; given with ``auto``, it means CT.
    ``mr_rule`` picks the MR foreground (see the module docstring); ``published`` is MedSAM's exactly.
    """
    if modality not in MODALITIES:
        raise IntensityError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    if modality == "auto":
        modality = "CT" if window is not None else guess_modality(volume)
    bad = count_non_finite(volume)
    if bad:
        warnings.warn(f"the image has {bad} NaN or infinite voxel(s); NaN is treated as the lowest intensity and "
                      "infinities as the ends of the intensity range", stacklevel=2)
    if modality == "CT":
        level, width = _window(window)
        return normalise_ct(volume, level, width)
    if modality == "MR":
        return normalise_mr(volume, rule=mr_rule)
    if volume.dtype == np.uint8:
        return volume.copy()
    values = volume.astype(np.float32, copy=False)
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 255):
        raise IntensityError(
            f"modality 'none' needs values in 0-255 but the image spans {finite.min():g} to {finite.max():g}; "
            "use --modality CT or MR"
        )
    return np.round(np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)).astype(np.uint8)


def _window(window: Optional[Sequence[float]]) -> Tuple[float, float]:
    if window is None:
        return DEFAULT_CT_WINDOW
    values = list(window)
    if len(values) != 2:
        raise IntensityError(f"a window is two numbers, level and width; got {values!r}")
    return float(values[0]), float(values[1])


def describe(modality: str, window: Optional[Sequence[float]], volume: np.ndarray) -> str:
    """The intensity setting as a short, stable string (used in messages and in embedding cache keys)."""
    resolved = ("CT" if window is not None else guess_modality(volume)) if modality == "auto" else modality
    if resolved == "CT":
        level, width = _window(window)
        return f"CT(level={level:g},width={width:g})"
    return resolved
