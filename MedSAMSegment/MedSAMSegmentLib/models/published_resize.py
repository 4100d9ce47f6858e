"""MedSAM ViT-B's published resize to its 1024x1024 input, without scikit-image.

MedSAM's ``MedSAM_Inference.py`` resizes a uint8 slice with ``skimage.transform.resize(img_3c, (1024, 1024),
order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)`` before its min-max scaling. This module does
the same steps with SciPy (a core dependency; Slicer's Python has no scikit-image): a Gaussian with sigma
``max(0, (factor - 1) / 2)`` per axis where the slice shrinks, a cubic spline zoom with mirrored edges on the
pixel-area grid, clipping to the input's range, truncation to uint8. Testing/test_models.py checks it against
scikit-image itself.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def published_resize(image_u8: np.ndarray, size: int) -> np.ndarray:
    """``image_u8`` ((H, W) or (H, W, C), uint8) resized to ``size`` x ``size`` (channels kept) as MedSAM's
    inference script does; returns uint8."""
    image = np.asarray(image_u8)
    if image.dtype != np.uint8:
        raise TypeError(f"published_resize takes uint8 pixels, got {image.dtype}")
    if image.ndim == 3:
        return np.stack([published_resize(image[:, :, c], size) for c in range(image.shape[2])], axis=2)
    values = image.astype(np.float64)
    factors = np.divide(values.shape, (size, size))
    sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
    if np.any(sigma > 0):
        values = ndimage.gaussian_filter(values, sigma, mode="mirror")
    resized = ndimage.zoom(values, 1.0 / factors, order=3, mode="mirror", grid_mode=True)
    np.clip(resized, image.min(), image.max(), out=resized)
    return resized.astype(np.uint8)
