"""The browser annotator: trame-slicer's segmentation app (views, volume loading, Segment Editor with Paint, Erase,
Scissors, Islands, Smoothing, undo and redo) with a MedSAM panel beside its Segment Editor.

The MedSAM panel: load the bundled sample; Place key box (two clicks in any slice view draw a box for the
selected segment); the key-box list (jump to a box's slice, delete it); Segment with a progress bar and Cancel; the
flagged slices (jump to each); undo and redo; the segmentation saved as ``.seg.nrrd`` or as a NIfTI label map.
Everything it does goes through :class:`~medsam_web.effect.MedSAMWebEffect`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import numpy as np
from MedSAMSegmentLib.engine import Cancelled
from MedSAMSegmentLib.scene import mrml, sample_scene
from MedSAMSegmentLib.scene.key_box_nodes import TargetError
from MedSAMSegmentLib.scene.mrml_segments import SegmentWriteError
from slicer import vtkMRMLSegmentationStorageNode, vtkMRMLSliceNode
from trame.app import TrameApp
from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import SegmentationAppLogic
from trame_slicer.app.ui import SegmentationAppUI
from trame_slicer.app.ui.control_button import ControlButton
from trame_slicer.core import SlicerApp
from trame_slicer.core.io_manager import IOManager

from .effect import MedSAMWebEffect

PANEL = "MedSAMPanel"


class MedSAMWebApp(TrameApp):
    """One annotator's page: a trame server, its Slicer scene and the MedSAM effect."""

    def __init__(self, server=None) -> None:
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.slicer_app = SlicerApp()
        self._viewer = SegmentationAppLogic(self.server, self.slicer_app)
        self._ui = SegmentationAppUI(self.server, self._viewer.layout_manager)
        self._viewer.set_ui(self._ui)
        self.editor = self.slicer_app.segmentation_editor
        self.effect: MedSAMWebEffect = self._effect()
        self.effect.on_box_placed = self._on_box_placed
        self._reset_state()
        self.state.trame__title = "MedSAM Segment"
        self._build_panel()
        self._viewer._load_files_logic.volume_loaded.connect(lambda *_: self._on_volume_loaded())
        self.editor.active_segment_id_changed.connect(lambda *_: self.refresh())

    @property
    def ui(self):
        return self._ui.layout

    def _effect(self) -> MedSAMWebEffect:
        self.editor.register_effect_type(MedSAMWebEffect)
        return self.editor._effects[MedSAMWebEffect.get_effect_name()]

    def _reset_state(self) -> None:
        self.state.update({"medsam_boxes": [], "medsam_flagged": [], "medsam_running": False,
                           "medsam_progress": 0, "medsam_status": "Load a volume or the sample, then place key boxes.",
                           "medsam_segment": "", "medsam_voxels": 0, "medsam_error": False,
                           "medsam_placing": False})

    # -- volumes ----------------------------------------------------------------------------------------------
    def load_sample(self) -> None:
        """The bundled CT lesion, its key boxes as ROIs of an empty "lesion" segment (as Slicer's sample)."""
        self.slicer_app.scene.Clear()
        case = sample_scene.load_sample(self.slicer_app.scene)
        self._show(case.volume_node)
        self.editor.set_active_segment_id(case.segment_id)
        self.refresh("Sample loaded: its key boxes are in the list; press Segment.")

    def load_image(self, path: str) -> None:
        """A volume file (NIfTI, NRRD, MHA, ...) in place of the scene, with an empty segment to fill. Raises
        ``ValueError`` with one line, the scene unchanged, for a file that cannot be read as a volume."""
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ValueError(f"{path} could not be read as a volume; give a NIfTI, NRRD or MHA file") from None
        self.slicer_app.scene.Clear()
        volumes = self.slicer_app.io_manager.load_volumes([path])
        if not volumes:
            raise ValueError(f"{path} could not be read as a volume; give a NIfTI, NRRD or MHA file")
        self._show(volumes[0])

    def _show(self, volume_node) -> None:
        self.slicer_app.display_manager.show_volume(volume_node, do_reset_views=True)
        self._viewer._load_files_logic.volume_loaded(volume_node)

    def _on_volume_loaded(self) -> None:
        if not self.editor.get_segment_ids():
            self.editor.add_empty_segment()
        self._ui.data.is_drawer_visible = True
        self._ui.data.active_tool = PANEL
        self.editor.set_active_effect(self.effect)
        self.refresh()

    # -- the panel's actions ------------------------------------------------------------------------------------
    def refresh(self, status: Optional[str] = None) -> None:
        """The key-box list, the selected segment and its voxel count, from the scene."""
        boxes = []
        volume = self.editor.active_volume_node
        for node in self.effect.key_box_nodes():
            try:
                key = self.effect.logic.key_boxes([node], volume, self.effect.settings).boxes[0]
                where = f"slice {key.slice_index}"
            except ValueError as error:
                where = f"not usable: {error}"
            boxes.append({"id": node.GetID(), "name": node.GetName(), "where": where})
        self.state.medsam_boxes = boxes
        segment_id = self.editor.active_segment_id
        self.state.medsam_segment = self.editor.get_segment_properties(segment_id).name if segment_id else ""
        self.state.medsam_voxels = self.segment_voxels()
        if status is not None:
            self._say(status)

    def _say(self, status: str, error: bool = False) -> None:
        self.state.medsam_status = status
        self.state.medsam_error = error

    def segment_voxels(self) -> int:
        """Voxels of the selected segment on the volume's grid."""
        segment_id, volume = self.editor.active_segment_id, self.editor.active_volume_node
        node = self.editor.active_segmentation_node
        if not segment_id or volume is None or node is None:
            return 0
        from MedSAMSegmentLib.scene.mrml_segments import segment_mask

        return int(segment_mask(node, segment_id, volume).sum())

    def place_box(self) -> None:
        """Place key boxes one after another (the button again, or Esc in a view, stops)."""
        try:
            placing = self.effect.toggle_placing(self.slicer_app.app_logic)
        except TargetError as error:
            return self._say(str(error), error=True)
        self.state.medsam_placing = placing
        self._say("Click two opposite corners of a box in a slice view; move to another slice and draw the next."
                  if placing else "Placing stopped.")

    def _on_box_placed(self) -> None:
        with self.state:
            self.refresh("Key box placed. Draw the next on another slice, or press Segment.")

    def delete_box(self, node_id: str) -> None:
        self.effect.delete_box(node_id)
        self.refresh()

    def jump_to_box(self, node_id: str) -> None:
        node = self.slicer_app.scene.GetNodeByID(node_id)
        if node is not None:
            center = [0.0, 0.0, 0.0]
            node.GetCenterWorld(center)
            self._jump(center)

    def jump_to_slice(self, index: int) -> None:
        """Jump the views to slice ``index`` of the last run's slice axis, at the volume's centre."""
        outcome, volume = self.effect.last_outcome, self.editor.active_volume_node
        if outcome is None or volume is None:
            return
        shape = volume.GetImageData().GetDimensions()[::-1]
        kji = [(n - 1) / 2.0 for n in shape]
        kji[outcome.slice_axis] = float(index)
        self._jump((mrml.volume_ijk_to_world(volume) @ np.array([*kji[::-1], 1.0]))[:3])

    def _jump(self, ras) -> None:
        vtkMRMLSliceNode.JumpAllSlices(self.slicer_app.scene, *[float(v) for v in ras],
                                       vtkMRMLSliceNode.OffsetJumpSlice)

    async def segment(self) -> None:
        self.effect.stop_placing()
        self.state.medsam_placing = False
        self.refresh()
        self.state.update({"medsam_running": True, "medsam_progress": 0, "medsam_flagged": []})
        self._say("Segmenting ...")
        self.state.flush()
        try:
            outcome = await self.effect.segment(self._on_progress)
        except (ValueError, TargetError, SegmentWriteError, Cancelled) as error:
            self._say(str(error)[:1].upper() + str(error)[1:], error=not isinstance(error, Cancelled))
        else:
            self.state.medsam_flagged = [{"slice": int(index), "why": why} for index, why in outcome.flagged]
            self._say(outcome.summary())
        finally:
            self.state.medsam_running = False
            self.refresh()
            self.state.flush()

    def _on_progress(self, fraction: float, message: str) -> None:
        with self.state:
            self.state.medsam_progress = round(100 * fraction)
            self.state.medsam_status = message or "Segmenting ..."

    def cancel(self) -> None:
        self.effect.cancel()
        self._say("Cancelling ...")

    def undo(self) -> None:
        if self.editor.undo_stack is not None:
            self.editor.undo_stack.undo()
        self.refresh()

    def redo(self) -> None:
        if self.editor.undo_stack is not None:
            self.editor.undo_stack.redo()
        self.refresh()

    def segmentation_file(self, kind: str) -> bytes:
        """The segmentation as ``.seg.nrrd`` (``kind`` "seg") or a NIfTI label map on the volume's grid ("nifti")."""
        node = self.editor.active_segmentation_node
        if node is None:
            raise SegmentWriteError("nothing to save: load a volume and segment first")
        with tempfile.TemporaryDirectory() as folder:
            if kind == "seg":  # Slicer's segmentation file: each segment with its name and colour
                path = os.path.join(folder, "segmentation.seg.nrrd")
                IOManager.write_node(node, path, vtkMRMLSegmentationStorageNode, do_convert_from_slicer_coord=True)
            else:
                path = os.path.join(folder, "segmentation.nii.gz")
                self.editor.export_segmentation_to_file(node, path)
            with open(path, "rb") as handle:
                return handle.read()

    def key_boxes_file(self) -> bytes:
        """The selected segment's key boxes as the command line's box file (``segment --boxes``)."""
        from MedSAMSegmentLib import io

        keys = self.effect.logic.key_boxes(self.effect.key_box_nodes(), self.editor.active_volume_node,
                                           self.effect.settings)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "key_boxes.json")
            io.write_box_json(path, keys)
            with open(path, "rb") as handle:
                return handle.read()

    def _download(self, kind: str):
        data = self.key_boxes_file() if kind == "boxes" else self.segmentation_file(kind)
        return self.server.protocol.addAttachment(data)

    # -- the panel ------------------------------------------------------------------------------------------
    def _build_panel(self) -> None:
        ui = self._ui
        ui.layout.title.set_text("MedSAM Segment")
        with ui.layout.appbar:
            v3.VBtn("Load sample", click=self.load_sample, prepend_icon="mdi-flask-outline", variant="tonal",
                    classes="mr-4", id="medsam-load-sample")
        with ui.layout.toolbar:
            ControlButton(icon="mdi-auto-fix", name="MedSAM", click=self._toggle_panel,
                          active=(f"{ui.name.active_tool} === '{PANEL}'",), classes="mt-1")
        with ui.layout.drawer:
            with html.Div(v_if=(f"{ui.name.active_tool} === '{PANEL}'",), classes="pa-2", style="width: 100%;"):
                self._panel_body()
        ui.layout.flush_content()

    def _toggle_panel(self) -> None:
        shown = not (self._ui.data.is_drawer_visible and self._ui.data.active_tool == PANEL)
        self._ui.data.is_drawer_visible = shown
        self._ui.data.active_tool = PANEL if shown else None
        if shown and self.editor.active_volume_node is not None:
            self.editor.set_active_effect(self.effect)
            self.refresh()

    def _panel_body(self) -> None:
        html.Div("MedSAM", classes="text-h6")
        html.Div("Segment: {{ medsam_segment || 'none selected' }} ({{ medsam_voxels }} voxels)",
                 classes="text-body-2 my-1", id="medsam-segment")
        v3.VBtn("{{ medsam_placing ? 'Stop placing' : 'Place key boxes' }}", click=self.place_box, block=True,
                classes="my-1", prepend_icon="mdi-vector-square", id="medsam-place", disabled=("medsam_running",),
                color=("medsam_placing ? 'primary' : undefined",))
        with v3.VList(density="compact", id="medsam-boxes"):
            with v3.VListItem(v_for="box in medsam_boxes", key="box.id", title=("box.name",),
                              subtitle=("box.where",)):
                with v3.Template(v_slot_append=True):
                    v3.VBtn(icon="mdi-target", size="small", variant="text",
                            click=(self.jump_to_box, "[box.id]"))
                    v3.VBtn(icon="mdi-delete", size="small", variant="text",
                            click=(self.delete_box, "[box.id]"), disabled=("medsam_running",))
        with html.Div(classes="d-flex my-1"):
            v3.VBtn("Segment", click=self.segment, color="primary", classes="flex-grow-1 mr-1", id="medsam-segment-btn",
                    disabled=("medsam_running || medsam_boxes.length === 0",))
            v3.VBtn("Cancel", click=self.cancel, disabled=("!medsam_running",), id="medsam-cancel")
        v3.VProgressLinear(model_value=("medsam_progress",), v_show=("medsam_running",), height=6, classes="my-1")
        html.Div("{{ medsam_status }}", classes=("medsam_error ? 'text-error text-body-2' : 'text-body-2'",),
                 id="medsam-status")
        with html.Div(v_if=("medsam_flagged.length",), classes="my-1"):
            html.Div("Flagged for review:", classes="text-body-2")
            v3.VChip("{{ f.slice }}", v_for="f in medsam_flagged", key="f.slice", size="small", classes="ma-1",
                     title=("f.why",), click=(self.jump_to_slice, "[f.slice]"))
        with html.Div(classes="d-flex my-1"):
            v3.VBtn("Undo", click=self.undo, prepend_icon="mdi-undo", classes="mr-1", disabled=("medsam_running",))
            v3.VBtn("Redo", click=self.redo, prepend_icon="mdi-redo", disabled=("medsam_running",))
        for kind, name, label in (("seg", "segmentation.seg.nrrd", "Save .seg.nrrd"),
                                  ("nifti", "segmentation.nii.gz", "Save NIfTI"),
                                  ("boxes", "key_boxes.json", "Save key boxes")):
            trigger = self.server.controller.trigger_name(lambda kind=kind: self._download(kind))
            v3.VBtn(label, block=True, classes="my-1", prepend_icon="mdi-download", id=f"medsam-save-{kind}",
                    click=f"utils.download('{name}', trigger('{trigger}'), 'application/octet-stream')")
