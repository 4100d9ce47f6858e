"""Slicer segments <-> arrays: reading a segment as a mask on a volume's grid and writing a mask into the selected
segment.

Writing: the mask is computed first; only then :func:`write_segment_mask` saves one undo state and changes the
selected segment through the Segment Editor logic (``vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap``, or the
Qt effect's ``modifySelectedSegmentByLabelmap`` via a :class:`SegmentWriter`), with modifier labelmaps limited to the
slices from the first to the last key box. The editor node's masking (mask mode, intensity mask) and overwrite mode
are applied by that logic. The source volume is never modified. ``slicer`` and ``vtk`` are imported lazily
(:func:`mrml._slicer`, :func:`mrml._vtk`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .mrml import _slicer, _vtk, node_to_world, to_vtk_matrix, volume_ijk_to_world


class SegmentWriteError(RuntimeError):
    """The segment could not be written; the message says why and what to do."""



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


@contextlib.contextmanager
def temporary_editor(scene, app_logic, segmentation_node, volume_node, segment_id: str) -> Iterator[SegmentWriter]:
    """A :class:`SegmentWriter` on ``segment_id`` of ``segmentation_node`` through a segment editor node that
    exists only inside the ``with`` block (batch writes without the editor widget; overwrite mode: none)."""
    editor_node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "MedSAM batch editor")
    try:
        editor_node.SetAndObserveSegmentationNode(segmentation_node)
        editor_node.SetAndObserveSourceVolumeNode(volume_node)
        editor_node.SetSelectedSegmentID(segment_id)
        editor_node.SetOverwriteMode(editor_node.OverwriteNone)
        logic = editor_logic_for(scene, app_logic, editor_node)
        yield SegmentWriter(logic)
        logic.SetSegmentEditorNode(None)
    finally:
        scene.RemoveNode(editor_node)
