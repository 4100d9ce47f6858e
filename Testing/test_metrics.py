"""DSC and NSD against hand-computed cases, including anisotropic spacing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from MedSAMSegmentLib import metrics


def cube(shape, corner, size):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size))] = True
    return mask


def test_dice_hand_computed():
    a = cube((6, 6, 6), (1, 1, 1), (3, 3, 3))  # 27 voxels
    b = cube((6, 6, 6), (2, 1, 1), (3, 3, 3))  # shifted one slice: 18 shared
    assert metrics.dice(a, b) == pytest.approx(2 * 18 / 54)
    assert metrics.dice(a, a) == 1.0
    assert metrics.dice(a, np.zeros_like(a)) == 0.0


def test_empty_conventions():
    empty = np.zeros((4, 4, 4), bool)
    full = cube((4, 4, 4), (1, 1, 1), (2, 2, 2))
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.normalised_surface_dice(empty, empty, (1, 1, 1)) == 1.0
    assert metrics.normalised_surface_dice(full, empty, (1, 1, 1)) == 0.0
    assert metrics.normalised_surface_dice(empty, full, (1, 1, 1)) == 0.0


def test_surface_of_cube_is_all_but_centre():
    a = cube((5, 5, 5), (1, 1, 1), (3, 3, 3))
    assert metrics.surface(a).sum() == 26
    # voxels on the array border count as surface
    assert metrics.surface(np.ones((3, 3, 3), bool)).sum() == 26


def test_nsd_shifted_cube_anisotropic():
    # A: slices 1-3, B: slices 2-4 (3x3 in plane). Spacing 3 mm along axis 0, 1 mm in plane.
    # Surfaces: A = slice 1 face (9) + slice 2 rim (8) + slice 3 face (9); B likewise on slices 2, 3, 4.
    # A's slice-1 face is 3 mm from B's nearest surface (slice 2): out at 2 mm; all other A surface voxels
    # lie on B's surface or 1 mm from it in plane (the centre of A's slice-3 face). Symmetric for B.
    a = cube((6, 5, 5), (1, 1, 1), (3, 3, 3))
    b = cube((6, 5, 5), (2, 1, 1), (3, 3, 3))
    assert metrics.normalised_surface_dice(a, b, (3.0, 1.0, 1.0), 2.0) == pytest.approx(34 / 52)
    # tolerance is inclusive: at 3 mm everything is within
    assert metrics.normalised_surface_dice(a, b, (3.0, 1.0, 1.0), 3.0) == pytest.approx(1.0)
    # isotropic 1 mm: the shift is 1 mm, within 2 mm
    assert metrics.normalised_surface_dice(a, b, (1.0, 1.0, 1.0), 2.0) == pytest.approx(1.0)
    # the same shift along an in-plane axis with 1 mm spacing there is within tolerance
    c = cube((5, 6, 5), (1, 2, 1), (3, 3, 3))
    d = cube((5, 6, 5), (1, 1, 1), (3, 3, 3))
    assert metrics.normalised_surface_dice(c, d, (3.0, 1.0, 1.0), 2.0) == pytest.approx(1.0)
    assert metrics.normalised_surface_dice(c, d, (1.0, 3.0, 1.0), 2.0) == pytest.approx(34 / 52)


def test_nsd_single_voxels_diagonal():
    # two voxels one step apart diagonally in plane: distance sqrt(0.5^2 + 2^2) mm
    a = np.zeros((1, 3, 3), bool)
    b = np.zeros((1, 3, 3), bool)
    a[0, 0, 0] = True
    b[0, 1, 1] = True
    distance = np.hypot(0.5, 2.0)  # 2.06 mm
    assert metrics.normalised_surface_dice(a, b, (5.0, 0.5, 2.0), 2.0) == 0.0
    assert metrics.normalised_surface_dice(a, b, (5.0, 0.5, 2.0), distance + 1e-9) == 1.0
    forward, backward = metrics.surface_distances(a, b, (5.0, 0.5, 2.0))
    assert forward.tolist() == pytest.approx([distance])
    assert backward.tolist() == pytest.approx([distance])


def test_nsd_spacing_must_match_dimensions():
    a = cube((4, 4, 4), (1, 1, 1), (2, 2, 2))
    with pytest.raises(ValueError):
        metrics.normalised_surface_dice(a, a, (1.0, 1.0))
    with pytest.raises(ValueError):
        metrics.dice(a, a[:2])


def test_per_slice_dice():
    a = cube((4, 4, 4), (0, 0, 0), (2, 2, 2))
    b = cube((4, 4, 4), (1, 0, 0), (2, 2, 2))
    assert metrics.per_slice_dice(a, b, 0).tolist() == [0.0, 1.0, 0.0, 1.0]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.tuples(st.floats(0.3, 6.0), st.floats(0.3, 6.0), st.floats(0.3, 6.0)),
)
def test_nsd_crop_matches_uncropped_and_is_symmetric(seed, spacing):
    rng = np.random.default_rng(seed)
    a = rng.random((6, 7, 8)) > 0.6
    b = rng.random((6, 7, 8)) > 0.6
    value = metrics.normalised_surface_dice(a, b, spacing, 2.0)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(metrics.normalised_surface_dice(b, a, spacing, 2.0))
    forward, backward = metrics.surface_distances(a, b, spacing)
    direct = ((forward <= 2.0).sum() + (backward <= 2.0).sum()) / (len(forward) + len(backward))
    assert value == pytest.approx(direct)
    assert metrics.normalised_surface_dice(a, a, spacing, 0.0) == 1.0
