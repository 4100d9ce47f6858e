"""Slicer markups nodes -> key boxes: which ROI and line nodes are placed, the slice view each was placed in, and
their key boxes on a volume's voxel grid (through :mod:`markup_boxes`).

Markups world coordinates include their own parent transforms; they convert to voxels with ``inv(ijk_to_world)`` of
the volume (:func:`mrml.volume_ijk_to_world`). The view a node was placed in is kept as a node attribute
(:data:`SLICE_NORMAL_ATTRIBUTE`) and gives the slice axis.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import GeometryError, KeyBox, KeyBoxSet
from ..io.markup_boxes import DEFAULT_LINE_MARGIN, key_box_from_line, key_box_from_roi, merge_key_boxes
from .mrml import to_numpy_matrix, to_vtk_matrix, volume_ijk_to_world

ROI_CLASS = "vtkMRMLMarkupsROINode"
LINE_CLASS = "vtkMRMLMarkupsLineNode"
SLICE_NODE_CLASS = "vtkMRMLSliceNode"
#: Node attribute holding the normal (RAS, unit, "x,y,z" in full float precision) of the slice view a ROI or line
#: was placed in; written by :func:`record_placement_view`, read when the node becomes a key box. Slicer saves node
#: attributes in the scene (.mrml) but not in markups files (.mrk.json).
SLICE_NORMAL_ATTRIBUTE = "MedSAM.SliceNormal"
#: How far (mm) a control point may lie from a slice view's plane and still count as placed in that view.
PLANE_TOLERANCE_MM = 1e-3
#: Markups node attribute Slicer sets to the layout name of the slice view a control point follows the mouse in
#: (``vtkMRMLMarkupsDisplayNode::GetMovingInSliceViewAttributeName``); cleared when the point is placed.
MOVING_IN_SLICE_VIEW_ATTRIBUTE = "Markups.MovingInSliceView"


def _is_class(node, class_name: str) -> bool:
    return node is not None and node.IsA(class_name)


def markups_is_placed(node) -> bool:
    """True when a ROI or line node is completely placed; False for other nodes and for nodes mid-placement.

    Placed means Slicer's ``GetControlPointPlacementComplete()`` (no further point can be added: the node has its
    required number of control points, none undefined; ``Libs/MRML/Core/vtkMRMLMarkupsNode.cxx``) and every control
    point defined: a point still following the mouse (a preview) counts for that method but not here. A Box ROI
    requires 2 points until placed, then 1 (``vtkMRMLMarkupsROINode::UpdateControlPointsFromBoxROI`` keeps one point
    and sets the requirement to 1), so a ROI with one click is not placed, while one made with ``SetSize`` or read
    from a file is. A bounding-box ROI, which takes any number of points, is placed once it has a defined one.
    """
    if not (_is_class(node, ROI_CLASS) or _is_class(node, LINE_CLASS)):
        return False
    defined = node.GetNumberOfDefinedControlPoints()
    if defined == 0 or defined != node.GetNumberOfControlPoints():
        return False
    if _is_class(node, ROI_CLASS) and node.GetROIType() == node.ROITypeBoundingBox:
        return True
    return bool(node.GetControlPointPlacementComplete()) and defined >= node.GetRequiredNumberOfControlPoints()


def _defined_points_world(node) -> List[np.ndarray]:
    points = []
    for n in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(n) == node.PositionDefined:
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(n, position)
            points.append(np.array(position, dtype=float))
    return points


def _slice_view_planes(scene) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``(unit normal, point)`` in RAS of every slice view's plane (SliceToRAS: column 2 and column 3)."""
    planes = []
    collection = scene.GetNodesByClass(SLICE_NODE_CLASS) if scene is not None else None
    for n in range(collection.GetNumberOfItems() if collection is not None else 0):
        matrix = to_numpy_matrix(collection.GetItemAsObject(n).GetSliceToRAS())
        normal = matrix[:3, 2]
        length = float(np.linalg.norm(normal))
        if length > 0.0 and np.all(np.isfinite(matrix)):
            planes.append((normal / length, matrix[:3, 3]))
    return planes


def placement_slice_node(scene, point, layout_name: Optional[str] = None):
    """The slice node (``vtkMRMLSliceNode``) of the view a control point at ``point`` (world RAS) was placed in.

    That is the view of ``layout_name`` (the view the point followed the mouse in, :data:`MOVING_IN_SLICE_VIEW_
    ATTRIBUTE`) when its plane holds the point (within :data:`PLANE_TOLERANCE_MM`), else the only view whose plane
    holds it; None when no view, or views of several orientations, hold it.
    """
    collection = scene.GetNodesByClass(SLICE_NODE_CLASS) if scene is not None else None
    holding = []
    for n in range(collection.GetNumberOfItems() if collection is not None else 0):
        node = collection.GetItemAsObject(n)
        matrix = to_numpy_matrix(node.GetSliceToRAS())
        normal = matrix[:3, 2]
        length = float(np.linalg.norm(normal))
        if not (length > 0.0 and np.all(np.isfinite(matrix))):
            continue
        if abs(float((np.asarray(point, dtype=float) - matrix[:3, 3]) @ normal)) / length <= PLANE_TOLERANCE_MM:
            holding.append((node, normal / length))
    for node, _ in holding:
        if layout_name and node.GetLayoutName() == layout_name:
            return node
    if holding and all(abs(float(normal @ holding[0][1])) >= 1.0 - 1e-9 for _, normal in holding):
        return holding[0][0]
    return None


def orient_roi_to_view(roi_node, slice_node) -> bool:
    """Turn a Box ROI that is being placed (one control point defined) to the axes of the slice view it is drawn
    in; returns whether it was turned.

    Slicer makes a two-click Box ROI the bounding box of the clicks in the ROI's own axes
    (``vtkMRMLMarkupsROINode::UpdateBoundingBoxROIFromControlPoints``), which start as RAS; a view turned to a
    volume's axes (``RotateSliceToLowestVolumeAxes``) would then get a larger box than the rectangle drawn in it.
    With the ROI's ObjectToNode rotation taken from the view's SliceToRAS (right-handed: x, y and x cross y) and its
    centre kept, the second click makes exactly the rectangle drawn. ROIs under a parent transform are left as they
    are.
    """
    if not _is_class(roi_node, ROI_CLASS) or slice_node is None or roi_node.GetROIType() != roi_node.ROITypeBox:
        return False
    if roi_node.GetParentTransformNode() is not None:
        return False
    axes = to_numpy_matrix(slice_node.GetSliceToRAS())[:3, :3]
    x, y = axes[:, 0], axes[:, 1]
    if not (np.all(np.isfinite(axes)) and np.linalg.norm(x) > 0.0 and np.linalg.norm(y) > 0.0):
        return False
    x = x / np.linalg.norm(x)
    y = y - (y @ x) * x
    y = y / np.linalg.norm(y)
    matrix = to_numpy_matrix(roi_node.GetObjectToNodeMatrix())
    matrix[:3, :3] = np.c_[x, y, np.cross(x, y)]
    roi_node.GetObjectToNodeMatrix().DeepCopy(to_vtk_matrix(matrix))  # one Modified; the size is still zero
    return True


def _fits_two_click_box(roi_node, normal: np.ndarray) -> bool:
    """Whether a Box ROI's shape is what two clicks in a view with this normal give: along a ROI axis parallel to
    the normal its size is its shorter other side (``UpdateBoxROIFromControlPoints`` pads it so); a view not
    parallel to any ROI axis (rotated) leaves all three sides from the clicks, with nothing to check."""
    matrix = to_numpy_matrix(roi_node.GetObjectToWorldMatrix())[:3, :3]
    axes = matrix / np.maximum(np.linalg.norm(matrix, axis=0), 1e-300)
    size = [float(v) for v in roi_node.GetSize()]
    for n in range(3):
        if abs(float(axes[:, n] @ normal)) >= 1.0 - 1e-9:
            shorter = min(size[m] for m in range(3) if m != n)
            return math.isclose(size[n], shorter, rel_tol=1e-6, abs_tol=1e-9)
    return True


def record_placement_view(markups_node, scene) -> Optional[np.ndarray]:
    """Record on a placed ROI or line node the normal of the slice view it was placed in; returns it, or None.

    Call it once the node's placement is complete (:func:`markups_is_placed`; before that nothing is recorded). The
    view is the slice node (``vtkMRMLSliceNode`` in ``scene``) whose plane holds all of the node's defined control
    points and, for a ROI, its centre (within :data:`PLANE_TOLERANCE_MM`). A two-click Box ROI keeps one control
    point on the clicked plane and is not turned to the view (unless placed by the effect, which turns it:
    :func:`orient_roi_to_view`): its size across the view is padded to its shorter side, which makes its thin side
    useless for finding the slice axis. When views of several orientations hold the
    points, a Box ROI keeps those its padded size fits; if still more than one orientation (or none: placed in 3D,
    moved off the view) remains, nothing is recorded and None is returned.

    The normal is stored as :data:`SLICE_NORMAL_ATTRIBUTE` = ``"x,y,z"`` (RAS, unit length, ``repr`` floats) and
    used by :func:`roi_node_key_box`, :func:`line_node_key_box` and :func:`markups_key_boxes` for the slice axis.
    The ROI itself is left as placed (its depth no longer matters: the key box is its cut by the drawn plane).
    """
    if not markups_is_placed(markups_node):
        return None
    points = _defined_points_world(markups_node)
    is_roi = _is_class(markups_node, ROI_CLASS)
    if is_roi:
        center = [0.0, 0.0, 0.0]
        markups_node.GetCenterWorld(center)
        points.append(np.array(center, dtype=float))
    if not points:
        return None
    stacked = np.array(points)
    normals: List[np.ndarray] = []
    for normal, origin in _slice_view_planes(scene):
        if np.max(np.abs((stacked - origin) @ normal)) > PLANE_TOLERANCE_MM:
            continue
        if any(abs(float(normal @ seen)) >= 1.0 - 1e-9 for seen in normals):
            continue  # another view of the same orientation (parallel planes through the same points)
        normals.append(normal)
    if len(normals) > 1 and is_roi and markups_node.GetROIType() == markups_node.ROITypeBox:
        normals = [n for n in normals if _fits_two_click_box(markups_node, n)]
    if len(normals) != 1:
        return None
    normal = normals[0]
    markups_node.SetAttribute(SLICE_NORMAL_ATTRIBUTE, ",".join(repr(float(v)) for v in normal))
    return normal.copy()


def recorded_slice_normal(markups_node) -> Optional[np.ndarray]:
    """The slice view normal (RAS) recorded on a node by :func:`record_placement_view`, or None when it has none.

    A value that is not three finite numbers with a length is refused with a :class:`GeometryError`.
    """
    value = markups_node.GetAttribute(SLICE_NORMAL_ATTRIBUTE) if markups_node is not None else None
    if not value:
        return None
    try:
        normal = np.array([float(v) for v in value.split(",")], dtype=float)
    except ValueError:
        normal = np.array([])
    if normal.shape != (3,) or not np.all(np.isfinite(normal)) or not np.linalg.norm(normal) > 0.0:
        raise GeometryError(
            f"node '{markups_node.GetName()}': its attribute {SLICE_NORMAL_ATTRIBUTE} = {value!r} is not a direction "
            f"'x,y,z'; remove the attribute or place the markup again"
        )
    return normal / np.linalg.norm(normal)


def roi_node_key_box(
    roi_node, ras_to_ijk: np.ndarray, volume_shape: Sequence[int], slice_axis: Optional[int] = None
) -> Tuple[int, KeyBox]:
    """A markups ROI node -> ``(slice_axis, KeyBox)``; its rotation and every parent transform count.

    A recorded placement view (:data:`SLICE_NORMAL_ATTRIBUTE`) gives the slice axis and the plane the box is cut
    by, unless ``slice_axis`` is given and differs; without one the thin-side rule of
    :func:`markup_boxes.key_box_from_roi` applies (ambiguous for two-click ROIs: refused).
    """
    object_to_world = to_numpy_matrix(roi_node.GetObjectToWorldMatrix())
    size = [float(v) for v in roi_node.GetSize()]  # along the ROI's own axes, in its node coordinates
    # The ROI's object coordinates are centred on the ROI: the corners are +/- size / 2 there.
    return key_box_from_roi(
        (0.0, 0.0, 0.0), size, object_to_world, ras_to_ijk, volume_shape, slice_axis=slice_axis,
        name=roi_node.GetName() or "", slice_normal=recorded_slice_normal(roi_node),
    )


def line_node_key_box(
    line_node,
    ras_to_ijk: np.ndarray,
    volume_shape: Sequence[int],
    slice_axis: Optional[int] = None,
    margin: float = DEFAULT_LINE_MARGIN,
) -> Tuple[int, KeyBox]:
    """A markups line node (a RECIST diameter) -> ``(slice_axis, KeyBox)`` using its world end points.

    Without ``slice_axis``, a recorded placement view (:data:`SLICE_NORMAL_ATTRIBUTE`) gives the slice axis.
    """
    a = [0.0, 0.0, 0.0]
    b = [0.0, 0.0, 0.0]
    line_node.GetNthControlPointPositionWorld(0, a)
    line_node.GetNthControlPointPositionWorld(1, b)
    return key_box_from_line(a, b, ras_to_ijk, volume_shape, slice_axis=slice_axis, margin=margin,
                             name=line_node.GetName() or "", slice_normal=recorded_slice_normal(line_node))


def markups_key_boxes(
    markups_nodes: Iterable,
    volume_node,
    slice_axis: Optional[int] = None,
    line_margin: float = DEFAULT_LINE_MARGIN,
) -> KeyBoxSet:
    """Key boxes of the given ROI and line nodes on ``volume_node``'s voxel grid, all along one slice axis.

    ``slice_axis``, when given, is every node's. Otherwise a node placed in a slice view takes the axis of that view
    (recorded by :func:`record_placement_view`); an unrecorded ROI its clear thin side (refused when two sides tie);
    an unrecorded line the axis it does not move along, or when it is parallel to an image axis, that of the ROIs
    or of the other lines. Nodes that are not ROIs or lines, or not fully placed yet, are skipped. Nodes along
    different axes are refused.
    """
    ijk_to_world = volume_ijk_to_world(volume_node)
    ras_to_ijk = np.linalg.inv(ijk_to_world)
    shape = volume_node.GetImageData().GetDimensions()[::-1]
    nodes = [n for n in markups_nodes if markups_is_placed(n)]
    pairs: List[Tuple[int, KeyBox]] = []
    for node in nodes:
        if _is_class(node, ROI_CLASS):
            pairs.append(roi_node_key_box(node, ras_to_ijk, shape, slice_axis))
    axis = slice_axis if slice_axis is not None else (pairs[0][0] if pairs else None)
    for node in nodes:
        if _is_class(node, LINE_CLASS):
            if slice_axis is None and recorded_slice_normal(node) is not None:
                pair = line_node_key_box(node, ras_to_ijk, shape, None, line_margin)  # its own view's axis
                pairs.append(pair)
                axis = pair[0] if axis is None else axis
                continue
            try:
                pair = line_node_key_box(node, ras_to_ijk, shape, axis, line_margin)
            except GeometryError:
                if axis is not None:
                    raise
                # A line parallel to an image axis: take the axis of the other lines, when they agree.
                pair = None
                for other in nodes:
                    if other is node or not _is_class(other, LINE_CLASS):
                        continue
                    try:
                        other_axis = line_node_key_box(other, ras_to_ijk, shape, None, line_margin)[0]
                    except GeometryError:
                        continue
                    pair = line_node_key_box(node, ras_to_ijk, shape, other_axis, line_margin)
                    break
                if pair is None:
                    raise
            pairs.append(pair)
            if axis is None:
                axis = pair[0]
    if not pairs:
        raise GeometryError(
            "no placed ROI or line markups were found; place a box (ROI) or a diameter line on the target"
        )
    return merge_key_boxes(pairs)
