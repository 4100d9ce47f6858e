"""The live preview: the 3D result of the key boxes placed so far, shown while the user draws in a segmentation
node of its own (as Slicer's Grow from seeds shows its preview before Apply), never in the user's segment.

The preview node is hidden from node selectors, not saved with the scene, and shown with a light fill; Segment
writes the real result into the selected segment as one undo step and the preview goes away. ``slicer`` is
imported lazily (the functions take the scene), so this module runs on slicer-core without the application.
"""

from __future__ import annotations

from typing import Sequence

from ..engine import SegmentationResult
from . import mrml_segments

#: The preview node's and segment's name.
PREVIEW_NAME = "MedSAM preview"
#: The preview's colour (RGB 0-1) and fill opacity in slice views: light, to read as not yet applied.
PREVIEW_COLOR = (1.0, 0.85, 0.2)
PREVIEW_FILL_OPACITY = 0.35


def show_preview(scene, volume_node, result: SegmentationResult, node=None, app_logic=None,
                 color: Sequence[float] = PREVIEW_COLOR):
    """Show ``result``'s mask (computed on ``volume_node``'s grid) in the preview node, replacing what it showed
    before; makes the node when ``node`` is None or no longer in ``scene``. Returns the node."""
    if node is None or scene.GetNodeByID(node.GetID()) is not node:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", PREVIEW_NAME)
        node.SetHideFromEditors(True)
        node.SetSaveWithScene(False)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetOpacity2DFill(PREVIEW_FILL_OPACITY)
        display.SetOpacity3D(0.5)
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    segment_id = segmentation.AddEmptySegment("", PREVIEW_NAME, [float(c) for c in color])
    if result.mask.any():
        with mrml_segments.temporary_editor(scene, app_logic, node, volume_node, segment_id) as writer:
            mrml_segments.write_segment_mask(writer, volume_node, result.mask, result.slice_axis, result.slice_range)
    return node


def remove_preview(scene, node) -> None:
    """Remove the preview node (nothing when it is None or already gone)."""
    if node is not None and scene is not None and scene.GetNodeByID(node.GetID()) is node:
        scene.RemoveNode(node)

