"""Slicer MRML volumes <-> arrays: a volume's voxels and its IJK-to-world matrix, and the 4x4 matrix helpers.

Only ``slicer.vtkMRML*``, ``slicer.vtkSlicer*Logic``, ``slicer.vtkOrientedImageData*`` and the ``slicer.util`` array
helpers are used (here and in :mod:`mrml_markups` and :mod:`mrml_segments`), so everything runs both inside the
Slicer application and with the Qt-free ``slicer-core`` package (which the test-suite uses). ``slicer`` and ``vtk``
are imported lazily (:func:`_slicer`, :func:`_vtk`), so that the rest of the Lib works without Slicer.

Geometry: ``arrayFromVolume`` gives ``[k, j, i]``; ``ijk_to_world`` is the volume's IJK-to-RAS matrix with every
(linear) parent transform applied, so markups (whose world coordinates include their own parent transforms) convert
to voxels with ``inv(ijk_to_world)``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ..geometry import GeometryError


def _slicer():
    import slicer  # imported lazily so that the rest of the Lib works without Slicer

    return slicer


def _vtk():
    import vtk

    return vtk


# ---------------------------------------------------------------------------------------------------------
# Matrices


def to_numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def to_vtk_matrix(array: np.ndarray):
    matrix = _vtk().vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def node_to_world(node) -> np.ndarray:
    """The 4x4 matrix from a transformable node's coordinates to world (identity without a parent transform)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise GeometryError(
            f"node '{node.GetName()}' is under a non-linear transform ('{parent.GetName()}'); harden the transform "
            "or remove it before segmenting"
        )
    matrix = _vtk().vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return to_numpy_matrix(matrix)


# ---------------------------------------------------------------------------------------------------------
# Volumes


def volume_ijk_to_world(volume_node) -> np.ndarray:
    """IJK -> world (RAS) of a volume node, including its parent transforms."""
    matrix = _vtk().vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return node_to_world(volume_node) @ to_numpy_matrix(matrix)


def volume_array(volume_node) -> np.ndarray:
    """The voxels of a scalar volume node as a read-only ``[k, j, i]`` array view (never write into it)."""
    slicer = _slicer()
    if volume_node is None:
        raise GeometryError("no source volume is selected; select the volume to segment")
    image = volume_node.GetImageData()
    if image is None:
        raise GeometryError(f"volume '{volume_node.GetName()}' has no image data; load the volume again")
    if image.GetNumberOfScalarComponents() != 1:
        raise GeometryError(
            f"volume '{volume_node.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel "
            "(colour or vector image); convert it to a scalar volume first (Vector to Scalar Volume module)"
        )
    array = slicer.util.arrayFromVolume(volume_node)
    if array.ndim != 3:
        raise GeometryError(f"volume '{volume_node.GetName()}' is not 3D (array shape {array.shape})")
    view = array.view()
    view.flags.writeable = False
    return view


def volume_geometry(volume_node) -> Tuple[np.ndarray, np.ndarray]:
    """``(array [k, j, i] read-only view, ijk_to_world 4x4)`` of a scalar volume node."""
    return volume_array(volume_node), volume_ijk_to_world(volume_node)
