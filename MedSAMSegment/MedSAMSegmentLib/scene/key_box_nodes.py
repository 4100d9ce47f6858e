"""Which markups nodes are the key boxes of which target, and the target a run writes into (no Qt).

A target is a segment of a segmentation, segmented on a source volume. A key box node (ROI or line) belongs to
one target: node references to the volume and the segmentation (they survive saving and reloading the scene)
and an attribute with the segment ID. Two lesions in two segments therefore keep their boxes apart, and markups
made elsewhere (the Markups toolbar, **Load sample**, a file) are ignored until the user takes them in.

Take in (:func:`take_in_candidates`) offers only the markups drawn on a slice of the target's volume, so that a
Crop Volume ROI (a 3D box) or a ruler elsewhere is never counted; a key box is tied to its volume, but those of the
same segment drawn on another volume are offered too, and taking them in ties them to the target's volume (their
geometry is in RAS, so they map to any volume's voxels through its own geometry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import GeometryError, KeyBox, in_plane_axes, slice_shape
from ..io.markup_boxes import DEFAULT_LINE_MARGIN, angles_to_image_axes, ras_to_numpy_index, roi_corners_ras
from . import mrml, mrml_markups

KEY_BOX_ATTRIBUTE = "MedSAM.KeyBox"
SEGMENT_ATTRIBUTE = "MedSAM.SegmentID"
VOLUME_REFERENCE = "MedSAMSourceVolume"
SEGMENTATION_REFERENCE = "MedSAMSegmentation"
MARKUPS_CLASSES = (mrml_markups.ROI_CLASS, mrml_markups.LINE_CLASS)
#: A ROI at most this many voxels thick along one of the volume's axes lies on one slice (the ROIs
#: :func:`add_roi_for_key_box` makes are half a voxel thick).
FLAT_VOXELS = 1.0


class TargetError(RuntimeError):
    """No complete target is selected; the message says what to select."""


@dataclass(frozen=True)
class RunTarget:
    """The volume, segmentation and segment a run reads from and writes into (node IDs and a segment ID)."""

    volume_id: str
    segmentation_id: str
    segment_id: str


def target_from_editor(editor_node) -> RunTarget:
    """The segment editor node's current source volume, segmentation and selected segment."""
    if editor_node is None:
        raise TargetError("the Segment Editor has no parameter node; reopen the Segment Editor")
    volume = editor_node.GetSourceVolumeNode()
    if volume is None:
        raise TargetError("no source volume is selected in the Segment Editor; select the volume to segment")
    segmentation = editor_node.GetSegmentationNode()
    if segmentation is None:
        raise TargetError("no segmentation is selected in the Segment Editor; select or create one")
    segment_id = editor_node.GetSelectedSegmentID() or ""
    if not segment_id or segmentation.GetSegmentation().GetSegment(segment_id) is None:
        raise TargetError("no segment is selected in the Segment Editor; add or select a segment")
    return RunTarget(volume.GetID(), segmentation.GetID(), segment_id)


def target_problem(scene, editor_node, target: RunTarget) -> Optional[str]:
    """Why a finished run must not be written into ``target`` now (None when it may).

    The target must still exist, and the editor must still show it: the write goes through the editor (its
    masking, overwrite mode and undo stack), which acts on its selected segment.
    """
    segmentation = scene.GetNodeByID(target.segmentation_id) if scene is not None else None
    if scene is None or scene.GetNodeByID(target.volume_id) is None or segmentation is None:
        return "the volume or segmentation was removed during the run"
    if segmentation.GetSegmentation().GetSegment(target.segment_id) is None:
        return "the segment was deleted during the run"
    try:
        current = target_from_editor(editor_node)
    except TargetError:
        current = None
    if current != target:
        return "the selected segment, segmentation or source volume changed during the run"
    return None


def _belongs_to(node, target: RunTarget) -> bool:
    return (node.GetAttribute(KEY_BOX_ATTRIBUTE) == "1"
            and node.GetNodeReferenceID(VOLUME_REFERENCE) == target.volume_id
            and node.GetNodeReferenceID(SEGMENTATION_REFERENCE) == target.segmentation_id
            and node.GetAttribute(SEGMENT_ATTRIBUTE) == target.segment_id)


def assign(node, target: RunTarget) -> None:
    """Make ``node`` (an ROI or line) a key box of ``target``."""
    node.SetAttribute(KEY_BOX_ATTRIBUTE, "1")
    node.SetAttribute(SEGMENT_ATTRIBUTE, target.segment_id)
    node.SetNodeReferenceID(VOLUME_REFERENCE, target.volume_id)
    node.SetNodeReferenceID(SEGMENTATION_REFERENCE, target.segmentation_id)


def _markups_nodes(scene) -> List:
    nodes = []
    for class_name in MARKUPS_CLASSES:
        collection = scene.GetNodesByClass(class_name)
        nodes.extend(collection.GetItemAsObject(n) for n in range(collection.GetNumberOfItems()))
    return nodes


def key_box_nodes(scene, target: RunTarget) -> List:
    """The ROI and line nodes that are key boxes of ``target`` (placed or not)."""
    return [node for node in _markups_nodes(scene) if _belongs_to(node, target)]


def unassigned_markups(scene) -> List:
    """Placed ROI and line nodes that are no target's key boxes (made with the Markups toolbar, loaded, ...)."""
    return [node for node in _markups_nodes(scene)
            if node.GetAttribute(KEY_BOX_ATTRIBUTE) != "1" and mrml_markups.markups_is_placed(node)]


def _may_take_in(node, target: RunTarget) -> bool:
    """No key box, or a key box of the target's segment tied to another (or a removed) volume."""
    if node.GetAttribute(KEY_BOX_ATTRIBUTE) != "1":
        return True
    return (node.GetAttribute(SEGMENT_ATTRIBUTE) == target.segment_id
            and node.GetNodeReferenceID(SEGMENTATION_REFERENCE) == target.segmentation_id
            and node.GetNodeReferenceID(VOLUME_REFERENCE) != target.volume_id)


def _shown_in_slice_views(node) -> bool:
    display = node.GetDisplayNode()
    return display is None or bool(display.GetVisibility() and display.GetVisibility2D())


def _two_click_depth_axis(roi_node) -> Optional[int]:
    """The ROI's own axis (0-2) across the view a Box ROI was drawn in with two clicks, or None.

    Slicer keeps the first click, a corner of the drawn rectangle on its mid-plane, as the ROI's one control point
    and pads its depth to its shorter other side (``vtkMRMLMarkupsROINode``); a box sized or moved since (a Crop
    Volume ROI, one resized with its handles) has its control point at its centre instead.
    """
    if roi_node.GetROIType() != roi_node.ROITypeBox or roi_node.GetNumberOfControlPoints() != 1:
        return None
    size = np.abs(np.array(roi_node.GetSize(), dtype=float))
    point = [0.0, 0.0, 0.0]
    roi_node.GetNthControlPointPositionWorld(0, point)
    object_to_world = mrml.to_numpy_matrix(roi_node.GetObjectToWorldMatrix())
    local = (np.linalg.inv(object_to_world) @ np.r_[point, 1.0])[:3]
    tolerance = 1e-6 * max(float(size.max()), 1.0)
    for depth in range(3):
        others = [a for a in range(3) if a != depth]
        if (abs(local[depth]) <= tolerance and abs(size[depth] - min(size[others])) <= tolerance
                and all(abs(abs(local[a]) - size[a] / 2.0) <= tolerance for a in others)):
            return depth
    return None


def _roi_slice_axis(roi_node, ras_to_ijk: np.ndarray) -> Optional[int]:
    """The volume axis a ROI without a recorded view was drawn across: the one it is at most :data:`FLAT_VOXELS`
    thick along, else the one nearest the depth of a two-click box; None for a 3D box."""
    object_to_world = mrml.to_numpy_matrix(roi_node.GetObjectToWorldMatrix())
    size = np.abs(np.array(roi_node.GetSize(), dtype=float))
    corners = ras_to_numpy_index(roi_corners_ras((0.0, 0.0, 0.0), size, object_to_world), ras_to_ijk)
    extent = np.ptp(corners, axis=0)
    if float(extent.min()) <= FLAT_VOXELS:
        return int(np.argmin(extent))
    depth = _two_click_depth_axis(roi_node)
    if depth is None:
        return None
    return int(np.argmin(angles_to_image_axes(object_to_world[:3, depth], np.linalg.inv(ras_to_ijk))))


def _drawn_on_a_slice(node, ras_to_ijk: np.ndarray, shape) -> bool:
    """Whether a placed ROI or line gives a key box on a slice of the volume that overlaps the image."""
    if node.IsA(mrml_markups.LINE_CLASS):
        axes: List[Optional[int]] = [0, 1, 2]  # a line is flat along the axes it spans less than a slice of
    elif mrml_markups.recorded_slice_normal(node) is not None:
        axes = [None]  # the view it was drawn in gives the axis
    else:
        axes = [_roi_slice_axis(node, ras_to_ijk)]
        if axes[0] is None:
            return False
    for axis in axes:
        try:
            if node.IsA(mrml_markups.LINE_CLASS):
                axis, key = mrml_markups.line_node_key_box(node, ras_to_ijk, shape, axis)
            else:
                axis, key = mrml_markups.roi_node_key_box(node, ras_to_ijk, shape, axis)
        except GeometryError:
            continue
        rows, cols = slice_shape(shape, axis)
        x0, y0, x1, y1 = key.box
        if x1 >= 0 and y1 >= 0 and x0 <= cols - 1 and y0 <= rows - 1:
            return True
    return False


def take_in_candidates(scene, target: RunTarget) -> List:
    """The placed ROI and line nodes that **Take in** makes key boxes of ``target``.

    A node qualifies when it is no key box (made with the Markups toolbar, loaded, ...) or a key box of the same
    segmentation and segment tied to another volume; is not hidden in the slice views (its display node, when it
    has one, is visible there); and is drawn on a slice of the target's volume: it gives a key box there that
    overlaps the image (its slice inside the volume, within the allowed obliquity) and is flat, that is a line
    (it spans less than one slice), a ROI with its drawing view recorded, a ROI at most :data:`FLAT_VOXELS` thick
    along a volume axis, or a Box ROI drawn with two clicks (:func:`_two_click_depth_axis`). A 3D box (a Crop
    Volume ROI) and markups elsewhere in space do not qualify. Empty when the target's volume has no image.
    """
    volume = scene.GetNodeByID(target.volume_id) if scene is not None else None
    if volume is None or volume.GetImageData() is None:
        return []
    ras_to_ijk = np.linalg.inv(mrml.volume_ijk_to_world(volume))
    shape = volume.GetImageData().GetDimensions()[::-1]
    return [node for node in _markups_nodes(scene)
            if _may_take_in(node, target) and mrml_markups.markups_is_placed(node) and _shown_in_slice_views(node)
            and _drawn_on_a_slice(node, ras_to_ijk, shape)]


def take_in(nodes, target: RunTarget) -> int:
    """Assign every given node to ``target`` (a key box of another volume is tied to the target's); returns how
    many."""
    count = 0
    for node in nodes:
        assign(node, target)
        count += 1
    return count


# ---------------------------------------------------------------------------------------------------------
# The key box table, navigation, and ROIs made from boxes


@dataclass
class KeyBoxRow:
    """One row of the effect's key box table."""

    node_id: str
    name: str
    kind: str  # "box" or "line"
    slice_index: Optional[int] = None
    width: Optional[float] = None  # pixels
    height: Optional[float] = None
    problem: str = ""


def key_box_rows(markups_nodes: Sequence, volume_node, line_margin: float = DEFAULT_LINE_MARGIN) -> List[KeyBoxRow]:
    """Rows for the table: each placed ROI/line with its slice and box size, or the problem it has."""
    rows = []
    try:
        keys = mrml_markups.markups_key_boxes(markups_nodes, volume_node, None, line_margin)
        axis: Optional[int] = keys.slice_axis
    except GeometryError:
        axis = None
    ras_to_ijk = np.linalg.inv(mrml.volume_ijk_to_world(volume_node))
    shape = volume_node.GetImageData().GetDimensions()[::-1]
    for node in markups_nodes:
        if not mrml_markups.markups_is_placed(node):
            continue
        kind = "box" if node.IsA(mrml_markups.ROI_CLASS) else "line"
        row = KeyBoxRow(node.GetID(), node.GetName() or "", kind)
        try:
            if kind == "box":
                _, key = mrml_markups.roi_node_key_box(node, ras_to_ijk, shape, axis)
            else:
                _, key = mrml_markups.line_node_key_box(node, ras_to_ijk, shape, axis, line_margin)
            row.slice_index = key.slice_index
            row.width = key.box[2] - key.box[0] + 1
            row.height = key.box[3] - key.box[1] + 1
        except GeometryError as exc:
            row.problem = str(exc)
        rows.append(row)
    return sorted(rows, key=lambda r: (r.slice_index is None, r.slice_index or 0))


def key_box_center_ras(volume_node, slice_axis: int, key: KeyBox) -> np.ndarray:
    """The world (RAS) centre of a key box, to jump the slice views there."""
    row_axis, col_axis = in_plane_axes(slice_axis)
    kji = np.zeros(3)
    kji[slice_axis] = key.slice_index
    kji[col_axis] = (key.box[0] + key.box[2]) / 2.0
    kji[row_axis] = (key.box[1] + key.box[3]) / 2.0
    return (mrml.volume_ijk_to_world(volume_node) @ np.r_[kji[::-1], 1.0])[:3]


def roi_geometry_from_key_box(ijk_to_world: np.ndarray, slice_axis: int, key: KeyBox,
                              thickness_voxels: float = 0.5) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(object_to_world 4x4, size, center)`` of an ROI whose corners land on the key box's pixel centres.

    The ROI's axes are the volume's column, row and slice directions; it is ``thickness_voxels`` thick.
    """
    row_axis, col_axis = in_plane_axes(slice_axis)
    linear = np.asarray(ijk_to_world, dtype=float)[:3, :3]
    step = {a: linear[:, 2 - a] for a in range(3)}  # world step per numpy axis a (IJK column 2 - a)
    lengths = {a: float(np.linalg.norm(step[a])) for a in range(3)}
    axes = np.c_[step[col_axis] / lengths[col_axis], step[row_axis] / lengths[row_axis],
                 step[slice_axis] / lengths[slice_axis]]
    x0, y0, x1, y1 = (float(v) for v in key.box)
    kji = np.zeros(3)
    kji[slice_axis] = key.slice_index
    kji[col_axis] = (x0 + x1) / 2.0
    kji[row_axis] = (y0 + y1) / 2.0
    center = (np.asarray(ijk_to_world, dtype=float) @ np.r_[kji[::-1], 1.0])[:3]
    size = np.array([(x1 - x0) * lengths[col_axis], (y1 - y0) * lengths[row_axis],
                     thickness_voxels * lengths[slice_axis]])
    matrix = np.eye(4)
    matrix[:3, :3] = axes
    matrix[:3, 3] = center
    return matrix, size, center


def add_roi_for_key_box(scene, volume_node, slice_axis: int, key: KeyBox, name: str = ""):
    """A markups ROI node in ``scene`` (in world coordinates) that gives back ``key`` on ``volume_node``; it records
    the slice direction as the view it was "drawn" in, so that even a box narrower than the slice is unambiguous."""
    matrix, size, _ = roi_geometry_from_key_box(mrml.volume_ijk_to_world(volume_node), slice_axis, key)
    node = scene.AddNewNodeByClass(mrml_markups.ROI_CLASS, name or f"key box {key.slice_index}")
    node.SetAndObserveObjectToNodeMatrix(mrml.to_vtk_matrix(matrix))
    node.SetSize(*[float(v) for v in size])
    node.SetAttribute(mrml_markups.SLICE_NORMAL_ATTRIBUTE, ",".join(repr(float(v)) for v in matrix[:3, 2]))
    return node
