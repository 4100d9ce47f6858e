"""A real Slicer MRML scene for tests, built from slicer-core (no Qt, no mocks).

``slicer.mrmlScene``, ``slicer.app`` and ``slicer.modules`` do not exist in slicer-core, so this module builds a
``vtkMRMLScene`` with an application logic, the Volumes, Segmentations, Markups and Segment Editor logics and a
``vtkMRMLSelectionNode`` singleton (the Markups logic and measurements look it up), and attaches the scene as
``slicer.mrmlScene`` so that the ``slicer.util`` array helpers work.

Use it from a test file with ``from slicer_scene import mrml_scene_fixture  # noqa: F401`` (the fixture is
``mrml_scene``), plus the helpers it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pytest

try:
    import slicer
    import vtk
except ImportError as exc:  # a broken install must fail the MRML tests, never turn them into skips
    raise ImportError(f"slicer-core cannot be imported ({exc}); install it as 'make test' does "
                      "(pip install slicer-core==5.12.4.0)") from exc


@dataclass
class SlicerScene:
    scene: slicer.vtkMRMLScene
    app_logic: slicer.vtkSlicerApplicationLogic
    volumes_logic: slicer.vtkSlicerVolumesLogic
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic
    markups_logic: slicer.vtkSlicerMarkupsLogic
    selection_node: slicer.vtkMRMLSelectionNode


def build_scene() -> SlicerScene:
    """A fresh scene with the module logics attached, set as ``slicer.mrmlScene``."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    selection = slicer.vtkMRMLSelectionNode()
    selection.SetSingletonTag("Singleton")
    selection = scene.AddNode(selection)
    logics = {}
    for name, cls in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Markups", slicer.vtkSlicerMarkupsLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    slicer.mrmlScene = scene
    return SlicerScene(scene, app_logic, logics["Volumes"], logics["Segmentations"], logics["Markups"], selection)


@pytest.fixture(name="mrml_scene")
def mrml_scene_fixture():
    """A fresh Slicer scene per test; cleared afterwards."""
    built = build_scene()
    yield built
    built.scene.Clear(1)
    if getattr(slicer, "mrmlScene", None) is built.scene:
        del slicer.mrmlScene


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def rotation_matrix(axis: Sequence[float], degrees: float) -> np.ndarray:
    """4x4 rotation about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    out = np.eye(4)
    out[:3, :3] = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)
    return out


def make_volume(
    scene: SlicerScene,
    array: np.ndarray,
    ijk_to_ras: Optional[np.ndarray] = None,
    name: str = "volume",
    parent_transform: Optional[np.ndarray] = None,
):
    """A scalar volume node holding ``array`` ([k, j, i]) with the given IJK-to-RAS, optionally under a transform."""
    node = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.CreateDefaultDisplayNodes()
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    if ijk_to_ras is not None:
        node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras))
    if parent_transform is not None:
        transform = make_transform(scene, parent_transform)
        node.SetAndObserveTransformNodeID(transform.GetID())
    return node


def make_transform(scene: SlicerScene, matrix: np.ndarray, name: str = "transform"):
    node = scene.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(vtk_matrix(matrix))
    return node


def make_segment_editor(scene: SlicerScene, volume_node, segment_names: Sequence[str] = ("target",)):
    """A segmentation (geometry from the volume) with empty segments, a segment editor node and its logic."""
    segmentation = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    ids = [segmentation.GetSegmentation().AddEmptySegment(n, n) for n in segment_names]
    editor_node = scene.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor_node.SetAndObserveSegmentationNode(segmentation)
    editor_node.SetAndObserveSourceVolumeNode(volume_node)
    editor_node.SetSelectedSegmentID(ids[0])
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(scene.scene)
    logic.SetMRMLApplicationLogic(scene.app_logic)
    logic.SetSegmentEditorNode(editor_node)
    return segmentation, editor_node, logic, ids


def make_roi(scene: SlicerScene, center, size, rotation: Optional[np.ndarray] = None, name: str = "R"):
    """A markups ROI with centre (RAS), size (its own axes) and an optional 3x3/4x4 rotation."""
    node = scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    matrix = np.eye(4)
    if rotation is not None:
        rot = np.asarray(rotation, dtype=float)
        matrix[:3, :3] = rot[:3, :3]
    matrix[:3, 3] = center
    node.SetAndObserveObjectToNodeMatrix(vtk_matrix(matrix))
    node.SetSize(*[float(v) for v in size])
    return node


def make_line(scene: SlicerScene, a, b, name: str = "L"):
    node = scene.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", name)
    node.AddControlPoint(vtk.vtkVector3d(*[float(v) for v in a]))
    node.AddControlPoint(vtk.vtkVector3d(*[float(v) for v in b]))
    return node


# ---------------------------------------------------------------------------------------------------------
# Slice views and placing markups with clicks

#: Slicer's default view layout names for the three standard orientations.
LAYOUT_NAMES = {"Axial": "Red", "Sagittal": "Yellow", "Coronal": "Green"}


def make_slice_view(scene: SlicerScene, orientation: str, offset: float, layout_name: Optional[str] = None):
    """A slice view node (``vtkMRMLSliceNode``) of a standard orientation, its plane ``offset`` mm along its normal.

    The orientation presets are the ones Slicer's application adds to every scene
    (``vtkMRMLSliceNode::AddDefaultSliceOrientationPresets``); without them ``SetOrientation`` fails.
    """
    default = scene.scene.GetDefaultNodeByClass("vtkMRMLSliceNode")
    if default is None or not default.HasSliceOrientationPreset(orientation):
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene.scene)
    node = scene.scene.CreateNodeByClass("vtkMRMLSliceNode")
    name = layout_name or LAYOUT_NAMES.get(orientation, orientation)
    node.SetLayoutName(name)
    node.SetName(name)
    node.SetDefaultOrientation(orientation)
    scene.scene.AddNode(node)
    node.UnRegister(None)  # CreateNodeByClass returns a reference the caller owns
    node = scene.scene.GetNodeByID(node.GetID())
    assert node.SetOrientation(orientation), orientation
    node.SetSliceOffset(float(offset))
    node.UpdateMatrices()
    return node


def slice_view_plane(slice_node):
    """``(unit normal, point)`` of a slice view's plane in RAS: SliceToRAS column 2 and column 3."""
    matrix = numpy_matrix(slice_node.GetSliceToRAS())
    return matrix[:3, 2] / np.linalg.norm(matrix[:3, 2]), matrix[:3, 3]


def _place_point(node, slice_node, position_ras, status) -> None:
    """One mouse event of the markups widget on ``node`` in ``slice_node``'s view, as Slicer handles it.

    ``vtkSlicerMarkupsWidget::UpdatePreviewPoint`` (Modules/Loadable/Markups/VTKWidgets/vtkSlicerMarkupsWidget.cxx)
    updates the preview point, else the point at ``GetControlPointPlacementStartIndex()``, through
    ``vtkMRMLMarkupsDisplayNode::UpdateActiveControlPointWorld`` with the world position picked on the view's plane:
    a mouse move with status preview, a click (``PlacePoint``) with status defined. That display node method is
    Slicer's own, so the node updates itself (a Box ROI pads its depth and drops to one point) as in the application.
    """
    display = node.GetDisplayNode()
    index = -1
    for n in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(n) == node.PositionPreview:
            index = n
    if index < 0:
        index = node.GetControlPointPlacementStartIndex()
    event = slicer.vtkMRMLInteractionEventData()
    event.SetWorldPosition([float(v) for v in position_ras])
    orientation = numpy_matrix(slice_node.GetSliceToRAS())[:3, :3]
    orientation = orientation / np.linalg.norm(orientation, axis=0)
    display.UpdateActiveControlPointWorld(index, event, [float(v) for v in orientation.ravel()], slice_node.GetID(),
                                          "", status)


def place_by_clicks(node, slice_node, clicks_ras, hover_next: bool = False) -> None:
    """Place control points as clicks in a slice view do: for each click the mouse moves there (a preview point
    follows it) and clicks (the point becomes defined). ``hover_next``: afterwards the mouse moves on in the view
    (a preview point for the next click, as while the user is still placing). Every position must lie on the
    view's plane, where Slicer's 2D point placer puts clicks."""
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    normal, origin = slice_view_plane(slice_node)
    for position in clicks_ras:
        assert abs(float((np.asarray(position, dtype=float) - origin) @ normal)) < 1e-9, "click off the view plane"
        _place_point(node, slice_node, position, node.PositionPreview)
        _place_point(node, slice_node, position, node.PositionDefined)
    if hover_next:
        last = np.asarray(clicks_ras[-1], dtype=float)
        _place_point(node, slice_node, last + 5.0 * (np.cross(normal, [1.0, 1.0, 1.0])), node.PositionPreview)
