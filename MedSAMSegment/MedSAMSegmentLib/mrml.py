"""Slicer MRML nodes <-> arrays: volumes, markups key boxes, and writing a mask into a segment.

Only ``slicer.vtkMRML*``, ``slicer.vtkSlicer*Logic``, ``slicer.vtkOrientedImageData*`` and the ``slicer.util`` array
helpers are used, so everything here runs both inside the Slicer application and with the Qt-free ``slicer-core``
package (which the test-suite uses).

Geometry: ``arrayFromVolume`` gives ``[k, j, i]``; ``ijk_to_world`` is the volume's IJK-to-RAS matrix with every
(linear) parent transform applied, so markups (whose world coordinates include their own parent transforms) convert
to voxels with ``inv(ijk_to_world)``.

Writing: the mask is computed first; only then :func:`write_segment_mask` saves one undo state and changes the
selected segment through the Segment Editor logic (``vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap``, or the
Qt effect's ``modifySelectedSegmentByLabelmap`` via a :class:`SegmentWriter`), with modifier labelmaps limited to the
slices from the first to the last key box. The editor node's masking (mask mode, intensity mask) and overwrite mode
are applied by that logic. The source volume is never modified.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .geometry import (
    DEFAULT_LINE_MARGIN,
    GeometryError,
    KeyBox,
    KeyBoxSet,
    key_box_from_line,
    key_box_from_roi,
    merge_key_boxes,
)

ROI_CLASS = "vtkMRMLMarkupsROINode"
LINE_CLASS = "vtkMRMLMarkupsLineNode"
SLICE_NODE_CLASS = "vtkMRMLSliceNode"
#: Node attribute holding the normal (RAS, unit, "x,y,z" in full float precision) of the slice view a ROI or line
#: was placed in; written by :func:`record_placement_view`, read when the node becomes a key box. Slicer saves node
#: attributes in the scene (.mrml) but not in markups files (.mrk.json).
SLICE_NORMAL_ATTRIBUTE = "MedSAM.SliceNormal"
#: How far (mm) a control point may lie from a slice view's plane and still count as placed in that view.
PLANE_TOLERANCE_MM = 1e-3


class SegmentWriteError(RuntimeError):
    """The segment could not be written; the message says why and what to do."""


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


# ---------------------------------------------------------------------------------------------------------
# Markups -> key boxes


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
    point on the clicked plane and is not turned to the view: its size across the view is padded to its shorter
    side, which makes its thin side useless for finding the slice axis. When views of several orientations hold the
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
    :func:`geometry.key_box_from_roi` applies (ambiguous for two-click ROIs: refused).
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


# ---------------------------------------------------------------------------------------------------------
# Segments -> arrays


def _oriented_image(ijk_to_parent: np.ndarray, extent: Sequence[int], fill: Optional[np.ndarray] = None):
    """A uint8 ``vtkOrientedImageData`` with the given geometry and extent, filled from a ``[k, j, i]`` array."""
    slicer = _slicer()
    vtk = _vtk()
    image = slicer.vtkOrientedImageData()
    image.SetExtent(*[int(v) for v in extent])
    image.SetGeometryFromImageToWorldMatrix(to_vtk_matrix(ijk_to_parent))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    from vtk.util import numpy_support

    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    if fill is None:
        scalars[:] = 0
    else:
        scalars[:] = np.ascontiguousarray(fill, dtype=np.uint8).ravel()
    image.Modified()
    return image


def _image_to_numpy(image) -> np.ndarray:
    from vtk.util import numpy_support

    extent = image.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)


def segment_mask(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """The segment as a bool ``[k, j, i]`` array on the volume's voxel grid (both parent transforms applied)."""
    slicer = _slicer()
    labelmap = slicer.vtkOrientedImageData()
    shape = tuple(volume_node.GetImageData().GetDimensions()[::-1])
    ok = slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentation_node, segment_id, labelmap, True
    )
    if not ok:
        raise SegmentWriteError(f"segment '{segment_id}' has no binary labelmap; convert the segmentation to one")
    # Segments may share one labelmap layer, each with its own label value.
    label_value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    extent = labelmap.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return np.zeros(shape, dtype=bool)
    reference = _oriented_image(volume_ijk_to_world(volume_node), (0, shape[2] - 1, 0, shape[1] - 1, 0, shape[0] - 1))
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(labelmap, reference, resampled)
    array = _image_to_numpy(resampled) == label_value
    if array.shape != shape:  # the resampler keeps the reference extent; guard anyway
        out = np.zeros(shape, dtype=bool)
        ext = resampled.GetExtent()
        k0, j0, i0 = ext[4], ext[2], ext[0]
        out[k0:k0 + array.shape[0], j0:j0 + array.shape[1], i0:i0 + array.shape[2]] = array
        return out
    return array


# ---------------------------------------------------------------------------------------------------------
# Writing a mask into the selected segment


class SegmentWriter:
    """What :func:`write_segment_mask` needs from the Segment Editor: this one drives ``vtkSlicerSegmentEditorLogic``.

    The Qt effect uses a subclass that calls ``scriptedEffect.saveStateForUndo()`` and
    ``scriptedEffect.modifySelectedSegmentByLabelmap(...)`` so that the editor's own undo stack holds the change.
    """

    def __init__(self, editor_logic):
        self.logic = editor_logic

    @property
    def editor_node(self):
        return self.logic.GetSegmentEditorNode()

    def segmentation_node(self):
        node = self.editor_node.GetSegmentationNode() if self.editor_node else None
        if node is None:
            raise SegmentWriteError("no segmentation is selected in the Segment Editor; select or create one")
        return node

    def segment_id(self) -> str:
        segment_id = self.editor_node.GetSelectedSegmentID() if self.editor_node else None
        if not segment_id or self.segmentation_node().GetSegmentation().GetSegment(segment_id) is None:
            raise SegmentWriteError("no segment is selected in the Segment Editor; add or select a segment")
        return segment_id

    def reference_geometry(self):
        """An image with the segmentation's reference geometry (in the segmentation node's coordinates)."""
        self.logic.ResetModifierLabelmapToDefault()
        image = self.logic.GetModifierLabelmap()
        if image is None:
            raise SegmentWriteError(
                "the segmentation has no reference geometry; select a source volume in the Segment Editor"
            )
        return image

    def save_state_for_undo(self) -> None:
        self.logic.SaveStateForUndo()

    def modify(self, modifier, mode: str, extent: Sequence[int]) -> None:
        modes = {
            "add": self.logic.ModificationModeAdd,
            "remove": self.logic.ModificationModeRemove,
        }
        self.logic.ModifySegmentByLabelmap(
            self.segmentation_node(), self.segment_id(), modifier, modes[mode], [int(v) for v in extent], True, False
        )

    def restore(self) -> None:
        """Undo a partly applied change (after an error between the undo state and the end of the write)."""
        if self.logic.CanUndo():
            self.logic.Undo()


def _slab_extent(shape: Sequence[int], slice_axis: int, first: int, last: int) -> List[int]:
    """VTK extent (i0, i1, j0, j1, k0, k1) of slices ``first..last`` along numpy ``slice_axis``."""
    extent = [0, int(shape[2]) - 1, 0, int(shape[1]) - 1, 0, int(shape[0]) - 1]
    vtk_axis = 2 - slice_axis  # numpy axis 0 = k = VTK axis 2
    extent[2 * vtk_axis] = int(first)
    extent[2 * vtk_axis + 1] = int(last)
    return extent


def write_segment_mask(
    writer: SegmentWriter,
    volume_node,
    mask: np.ndarray,
    slice_axis: int,
    slice_range: Tuple[int, int],
) -> List[int]:
    """Replace the selected segment over slices ``slice_range`` (inclusive) of ``volume_node`` by ``mask``.

    ``mask`` is a bool ``[k, j, i]`` array on the volume's grid. Outside the slice range the segment is untouched.
    Inside it the result follows the Segment Editor's rules: the new mask is painted where editing is allowed
    (mask mode, intensity mask) and other segments are overwritten according to the overwrite mode; voxels of the
    segment where editing is not allowed are kept. One undo state is saved before anything changes; on an error
    the partial change is undone. Returns the modification extent used (in the segmentation's reference grid).
    """
    shape = tuple(volume_node.GetImageData().GetDimensions()[::-1])
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise SegmentWriteError(f"mask shape {mask.shape} does not match the volume's {shape}")
    first, last = (int(v) for v in slice_range)
    if not (0 <= first <= last < shape[slice_axis]):
        raise SegmentWriteError(f"slice range {slice_range} is outside the volume's 0-{shape[slice_axis] - 1}")
    slicer = _slicer()
    segmentation_node = writer.segmentation_node()
    writer.segment_id()  # fail before any change when nothing is selected

    # Geometry of the volume's voxels in the segmentation node's coordinate frame.
    ijk_to_segmentation = np.linalg.inv(node_to_world(segmentation_node)) @ volume_ijk_to_world(volume_node)
    extent = _slab_extent(shape, slice_axis, first, last)
    selector = [slice(None)] * 3
    selector[slice_axis] = slice(first, last + 1)
    slab = mask[tuple(selector)].astype(np.uint8)
    new_image = _oriented_image(ijk_to_segmentation, extent, slab)
    region_image = _oriented_image(ijk_to_segmentation, extent, np.ones_like(slab))

    reference = writer.reference_geometry()
    if not slicer.vtkOrientedImageDataResample.DoGeometriesMatch(new_image, reference):
        # The segmentation's grid differs from the volume's (another reference volume, or a transform): resample.
        resampled = []
        for image in (new_image, region_image):
            out = slicer.vtkOrientedImageData()
            slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
                image, reference, out, False, True
            )
            resampled.append(out)
        new_image, region_image = resampled
        extent = list(region_image.GetExtent())
        # Limit the change to the part of the reference grid that the slab covers.
        region = _image_to_numpy(region_image)
        nonzero = [np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        if any(idx.size == 0 for idx in nonzero):
            raise SegmentWriteError("the key-box slices do not overlap the segmentation's geometry")
        k_idx, j_idx, i_idx = nonzero
        extent = [
            extent[0] + int(i_idx[0]), extent[0] + int(i_idx[-1]),
            extent[2] + int(j_idx[0]), extent[2] + int(j_idx[-1]),
            extent[4] + int(k_idx[0]), extent[4] + int(k_idx[-1]),
        ]

    writer.save_state_for_undo()
    try:
        writer.modify(region_image, "remove", extent)
        writer.modify(new_image, "add", extent)
    except BaseException:
        writer.restore()
        raise
    return extent


def editor_logic_for(scene, app_logic, editor_node):
    """A ``vtkSlicerSegmentEditorLogic`` bound to ``editor_node`` (for batch use without the editor widget)."""
    slicer = _slicer()
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(scene)
    if app_logic is not None:
        logic.SetMRMLApplicationLogic(app_logic)
    logic.SetSegmentEditorNode(editor_node)
    return logic
