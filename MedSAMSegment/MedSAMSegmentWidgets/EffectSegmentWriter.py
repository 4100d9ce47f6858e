"""The MedSAM effect's segment writer: ``mrml_segments.write_segment_mask`` through the effect, so that the Segment
Editor's own undo stack holds the change and a failed write puts the segmentation back."""

import slicer
from MedSAMSegmentLib.scene.mrml_segments import SegmentWriteError, SegmentWriter


class EffectSegmentWriter(SegmentWriter):
    """mrml_segments.write_segment_mask's writer through this effect, so that the editor's own undo stack holds the
    change."""

    def __init__(self, scriptedEffect):
        super().__init__(None)
        self.scriptedEffect = scriptedEffect
        self._snapshot = None

    def segmentation_node(self):
        node = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        if node is None:
            raise SegmentWriteError("no segmentation is selected in the Segment Editor")
        return node

    def segment_id(self):
        segmentId = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
        if not segmentId:
            raise SegmentWriteError("no segment is selected in the Segment Editor; add or select a segment")
        return segmentId

    def reference_geometry(self):
        return self.scriptedEffect.defaultModifierLabelmap()

    def save_state_for_undo(self):
        self.scriptedEffect.saveStateForUndo()
        self._snapshot = slicer.vtkSegmentation()
        self._snapshot.DeepCopy(self.segmentation_node().GetSegmentation())

    def modify(self, modifier, mode, extent):
        modes = {
            "add": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd,
            "remove": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove,
        }
        self.scriptedEffect.modifySelectedSegmentByLabelmap(modifier, modes[mode], list(extent))

    def restore(self):
        """Put back the segmentation as it was before the write (this effect's own snapshot, whatever editor)."""
        if self._snapshot is not None:
            self.segmentation_node().GetSegmentation().DeepCopy(self._snapshot)
