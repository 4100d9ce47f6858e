"""Intensity normalisation as MedSAM's pre_CT_MR.py does it."""

import numpy as np
import pytest
from MedSAMSegmentLib.intensity import IntensityError, guess_modality, normalise_volume


def test_ct_window_soft_tissue_default():
    volume = np.array([[[-1000, -160, 40, 240, 2000]]], dtype=np.int16)
    out = normalise_volume(volume, "CT")
    assert out.dtype == np.uint8
    assert out.ravel().tolist() == [0, 0, 127, 255, 255]


def test_ct_window_override_and_auto_with_window():
    volume = np.array([[[-600, -1350, 150]]], dtype=np.int16)
    out = normalise_volume(volume, "auto", window=(-600, 1500))
    assert out.ravel().tolist() == [127, 0, 255]


def test_mr_percentiles_of_positive_voxels_and_zero_kept():
    rng = np.random.default_rng(0)
    volume = rng.uniform(1, 1000, size=(4, 30, 30)).astype(np.float32)
    volume[:, :5] = 0
    out = normalise_volume(volume, "MR")
    low, high = np.percentile(volume[volume > 0], [0.5, 99.5])
    expected = ((np.clip(volume, low, high) - low) / (high - low) * 255).astype(np.uint8)
    expected[volume == 0] = 0
    assert np.array_equal(out, expected)
    assert out[:, :5].max() == 0


def test_input_is_never_modified():
    volume = np.linspace(-200, 300, 60, dtype=np.float32).reshape(3, 4, 5)
    before = volume.copy()
    normalise_volume(volume, "CT")
    normalise_volume(volume, "MR")
    assert np.array_equal(volume, before)


def test_guess_modality():
    assert guess_modality(np.zeros((2, 2, 2), np.uint8)) == "none"
    assert guess_modality(np.array([-1024, 50, 400], np.int16)) == "CT"
    assert guess_modality(np.array([0, 50, 400], np.int16)) == "MR"
    assert guess_modality(np.array([-3.2, 0, 7.5], np.float32)) == "MR"


def test_nan_voxels_become_the_lowest_intensity_and_finite_voxels_are_unaffected():
    """NaN -> the low end (0), +inf -> 255, -inf -> 0, with a warning that counts them; the finite voxels get
    exactly what they get without the non-finite ones (the MR percentiles come from the finite voxels only)."""
    rng = np.random.default_rng(1)
    finite = rng.uniform(1, 1000, size=(2, 10, 10)).astype(np.float32)
    finite[:, :2] = 0  # background
    bad = np.zeros(finite.shape, dtype=bool)
    bad[0, 5, :4] = bad[1, 7, 3:6] = True
    volume = finite.copy()
    volume[0, 5, :4] = [np.nan, np.inf, -np.inf, np.nan]
    volume[1, 7, 3:6] = [np.nan, np.inf, -np.inf]
    low, high = np.percentile(finite[~bad & (finite > 0)], [0.5, 99.5])
    expected = ((np.clip(finite, low, high) - low) / (high - low) * 255).astype(np.uint8)
    expected[finite == 0] = 0
    for modality, want in (("MR", expected), ("CT", normalise_volume(finite, "CT"))):
        with pytest.warns(UserWarning, match="the image has 7 NaN or infinite voxel"):
            out = normalise_volume(volume, modality)
        assert out.dtype == np.uint8
        assert out[0, 5, :4].tolist() == [0, 255, 0, 0] and out[1, 7, 3:6].tolist() == [0, 255, 0]
        assert np.array_equal(out[~bad], want[~bad]), modality


def test_bad_settings_are_refused():
    with pytest.raises(IntensityError, match="width must be positive"):
        normalise_volume(np.zeros((1, 2, 2), np.int16), "CT", window=(40, 0))
    with pytest.raises(IntensityError, match="unknown modality"):
        normalise_volume(np.zeros((1, 2, 2), np.int16), "PET")
    with pytest.raises(IntensityError, match="0-255"):
        normalise_volume(np.array([[[-5.0, 300.0]]]), "none")
