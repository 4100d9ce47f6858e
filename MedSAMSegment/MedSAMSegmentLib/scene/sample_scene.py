"""The bundled sample in a Slicer scene: the demo CT lesion as a volume, its key boxes as ROIs of an empty
segment, and the reference mask (Slicer's Sample Data button and the tests use it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from . import mrml
from .key_box_nodes import RunTarget, add_roi_for_key_box, assign


@dataclass
class SampleCase:
    volume_node: object
    roi_nodes: List[object]
    segmentation_node: object
    segment_id: str
    reference: np.ndarray  # the reference lesion mask, [k, j, i]


def load_sample(scene, segment_name: str = "lesion") -> SampleCase:
    """Load the bundled demo CT lesion with its key boxes as ROIs and an empty segment to fill."""
    from .. import demo, io

    image = io.read_image(demo.DEMO_IMAGE)
    reference, _ = io.read_mask(demo.DEMO_IMAGE)
    import slicer

    volume_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MedSAM sample CT lesion")
    volume_node.CreateDefaultDisplayNodes()
    slicer.util.updateVolumeFromArray(volume_node, np.ascontiguousarray(image.array))
    volume_node.SetIJKToRASMatrix(mrml.to_vtk_matrix(image.ijk_to_ras()))
    display = volume_node.GetDisplayNode()
    if display is not None and hasattr(display, "SetWindowLevel"):
        display.AutoWindowLevelOff()
        display.SetWindowLevel(255.0, 127.5)  # the sample is already windowed to 0-255
    keys = demo.demo_key_boxes(image.shape)
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "MedSAM sample segmentation")
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", segment_name)
    target = RunTarget(volume_node.GetID(), segmentation_node.GetID(), segment_id)
    rois = []
    for n, key in enumerate(keys.sorted()):
        roi = add_roi_for_key_box(scene, volume_node, keys.slice_axis, key, f"key box {n + 1}")
        assign(roi, target)  # the sample's boxes belong to its lesion segment
        rois.append(roi)
    return SampleCase(volume_node, rois, segmentation_node, segment_id, reference)
