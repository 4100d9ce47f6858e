"""The MedSAM effect of the browser annotator: a trame-slicer ``SegmentationEffect`` on the desktop effect's core.

Key boxes are markups ROIs placed by two clicks in any slice view, one after another, as the desktop effect places
them (:class:`~MedSAMSegmentLib.scene.key_box_placement.KeyBoxPlacement`): each is tied to the segment it was placed
for, turned to the view at its first click and, once placed, records that view's normal. A run
(:meth:`MedSAMWebEffect.segment`) follows the desktop effect's three steps through
:class:`~MedSAMSegmentLib.scene.effect.MedSAMEffectLogic`:

1. on trame's event loop: the key boxes and a copy of the voxels (:meth:`~MedSAMEffectLogic.prepare_run`);
2. in a thread, never on the loop: the segmentation service (the same path as the command line), with progress
   and cancel;
3. back on the loop: the mask written into the selected segment as one step of trame-slicer's undo stack, over
   the key boxes' slices only. A failed or cancelled run writes nothing.

VTK and MRML are touched on the loop only.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, List, Optional

from MedSAMSegmentLib.engine import Cancelled
from MedSAMSegmentLib.scene import key_box_nodes, mrml_markups, mrml_segments
from MedSAMSegmentLib.scene.effect import MedSAMEffectLogic, RunOutcome
from MedSAMSegmentLib.scene.effect_settings import EffectSettings
from MedSAMSegmentLib.scene.key_box_nodes import RunTarget, TargetError
from MedSAMSegmentLib.scene.key_box_placement import KeyBoxPlacement
from trame_slicer.segmentation import SegmentationEffect
from trame_slicer.segmentation.segmentation_undo_command import SegmentationLabelMapUndoCommand

#: ``progress(fraction 0-1, message)``, called on the event loop.
Progress = Callable[[float, str], None]


class TrameSegmentWriter(mrml_segments.SegmentWriter):
    """Writes through trame-slicer's segment modifier: its segmentation and selected segment, and its undo stack
    (the caller wraps the write in one undo command), not the editor node's."""

    def __init__(self, modifier, segmentation_node) -> None:
        super().__init__(modifier.logic)
        self._modifier = modifier
        self._segmentation_node = segmentation_node

    def segmentation_node(self):
        if self._segmentation_node is None:
            raise mrml_segments.SegmentWriteError("no segmentation is loaded; load a volume first")
        return self._segmentation_node

    def segment_id(self) -> str:
        segment_id = self._modifier.active_segment_id
        if not segment_id:
            raise mrml_segments.SegmentWriteError("no segment is selected; add or select a segment")
        return segment_id

    def save_state_for_undo(self) -> None:
        """The undo command around the write holds the state."""

    def restore(self) -> None:
        """The undo command around the write is undone by the caller on an error."""


class MedSAMWebEffect(SegmentationEffect):
    """MedSAM from key boxes in trame-slicer. It draws nothing itself (the boxes are markups ROIs), so it has no
    interaction pipeline; activating it only makes it the editor's active effect."""

    def __init__(self, logic: Optional[MedSAMEffectLogic] = None, settings: Optional[EffectSettings] = None) -> None:
        super().__init__()
        self.logic = logic or MedSAMEffectLogic()
        self.settings = settings or EffectSettings(preview=False)
        self._cancel = threading.Event()
        self.running = False
        self.last_outcome: Optional[RunOutcome] = None
        #: Called when a key box's placement is complete (the page shows the list again).
        self.on_box_placed: Callable[[], None] = lambda: None
        self._placement: Optional[KeyBoxPlacement] = None

    def _create_pipeline(self, _view_node, _parameter):
        return None

    # -- the target and its key boxes ------------------------------------------------------------------------
    def target(self) -> RunTarget:
        """The loaded volume, the segmentation and the selected segment; raises :class:`TargetError` naming what
        is missing."""
        editor = self.editor
        volume = editor.active_volume_node if editor else None
        segmentation = editor.active_segmentation_node if editor else None
        if volume is None or segmentation is None:
            raise TargetError("no volume is loaded; load a volume or the sample first")
        segment_id = editor.active_segment_id
        if not segment_id:
            raise TargetError("no segment is selected; add or select a segment")
        return RunTarget(volume.GetID(), segmentation.GetID(), segment_id)

    def key_box_nodes(self) -> List:
        """The selected segment's key boxes that are placed, in the order they were made."""
        try:
            target = self.target()
        except TargetError:
            return []
        return [n for n in key_box_nodes.key_box_nodes(self._scene, target) if mrml_markups.markups_is_placed(n)]

    def toggle_placing(self, app_logic) -> bool:
        """Place key boxes for the selected segment one after another (two clicks in a slice view each, as the
        desktop effect's Place: :class:`~MedSAMSegmentLib.scene.key_box_placement.KeyBoxPlacement`), or stop
        placing; returns whether placing is on. Raises :class:`TargetError` when no segment is selected."""
        self.target()
        if self._placement is None:
            self._placement = KeyBoxPlacement(self._scene, app_logic, self._placement_target, self.on_box_placed)
            interaction = app_logic.GetInteractionNode()
            interaction.AddObserver(interaction.InteractionModeChangedEvent,
                                    lambda node, _event: self._placement.interaction_mode_changed(node))
        self._placement.toggle(mrml_markups.ROI_CLASS)
        return self._placement.placing_class is not None

    @property
    def placing(self) -> bool:
        return self._placement is not None and self._placement.placing_class is not None

    def stop_placing(self) -> None:
        if self._placement is not None:
            self._placement.stop()

    def _placement_target(self) -> Optional[RunTarget]:
        try:
            return self.target()
        except TargetError:
            return None

    def delete_box(self, node_id: str) -> None:
        node = self._scene.GetNodeByID(node_id) if self._scene is not None else None
        if node is not None:
            self._scene.RemoveNode(node)

    # -- a run -----------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the run at its next slice batch; nothing is written."""
        self._cancel.set()

    async def segment(self, progress: Optional[Progress] = None) -> RunOutcome:
        """Segment the selected segment from its key boxes (see the module's text). Raises ``ValueError`` (with
        the one-line reason) for boxes or settings that cannot make a run, :class:`TargetError`, ``Cancelled``."""
        if self.running:
            raise RuntimeError("a run is already going on; wait for it or cancel it")
        target = self.target()
        volume_node = self._scene.GetNodeByID(target.volume_id)
        nodes = self.key_box_nodes()
        if not nodes:
            raise ValueError("no key boxes for this segment; press Place key boxes and draw one on each of two or "
                             "more slices")
        prepared = self.logic.prepare_run(volume_node, nodes, self.settings)
        voxels = prepared.volume()
        loop = asyncio.get_running_loop()
        self._cancel.clear()
        self.running = True

        def report(done: int, total: int, message: str) -> None:
            if progress is not None:
                loop.call_soon_threadsafe(progress, done / max(total, 1), message)

        def compute():
            service = self.logic.service
            if not service.has_volume(prepared.token):
                service.put_volume(prepared.token, voxels)
            return service.segment(prepared.token, prepared.ijk_to_world, prepared.key_boxes, prepared.model,
                                   prepared.settings, report, self._cancel.is_set)

        try:
            served = await asyncio.to_thread(compute)
        finally:
            self.running = False
        if self._cancel.is_set():
            raise Cancelled("cancelled; the segment is as it was")
        outcome = RunOutcome.of(prepared, served)
        self.write(outcome, volume_node)
        self.last_outcome = outcome
        return outcome

    def write(self, outcome: RunOutcome, volume_node) -> None:
        """Write ``outcome`` into the selected segment as one undo step (on the event loop)."""
        modifier = self.modifier
        if modifier is None:
            raise mrml_segments.SegmentWriteError("no segmentation is loaded; load a volume first")
        writer = TrameSegmentWriter(modifier, self.editor.active_segmentation_node)
        with modifier.group_undo_commands("MedSAM"):
            with SegmentationLabelMapUndoCommand.push_state_change(modifier.segmentation):
                MedSAMEffectLogic.apply(writer, volume_node, outcome)
        modifier.trigger_active_segment_modified()

    def _clear(self) -> None:
        """The scene was closed (a new volume loaded): cancel a run, drop the kept volume and embeddings and the
        last run."""
        super()._clear()
        self._placement = None
        self._cancel.set()
        self.logic.forget()
        self.last_outcome = None
