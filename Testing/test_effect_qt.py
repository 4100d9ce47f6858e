"""The Qt effect (SegmentEditorMedSAMLib/SegmentEditorEffect.py) run under the Slicer stand-in (slicer_standin/)
on a real slicer-core scene, with the real worker process and LiteMedSAM where a run is needed.

The stand-in copies Slicer's behaviour where these tests depend on it (the Segment Editor deselecting an effect in
Place mode unless it overrides ``interactionNodeModified``, markups placement by clicks, parameter prefixes, slot
errors, dialogs); see its docstrings for the Slicer source files.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import pytest
from conftest import REPO, shared_data_path
from MedSAMSegmentLib.scene.key_box_nodes import RunTarget
from MedSAMSegmentLib.settings import SettingsError
from slicer_scene import (  # noqa: F401
    make_segment_editor,
    make_volume,
    mrml_scene_fixture,
    numpy_matrix,
    rotation_matrix,
    slicer,
    vtk,
    vtk_matrix,
)
from slicer_standin import AbstractScriptedSegmentEditorEffect
from standin_fixtures import MAX_TICK_GAP_S, standin_fixture, wait_for_reply, worker_logic_fixture  # noqa: F401

pytest.importorskip("torch")

EFFECT_SOURCE = os.path.join(REPO, "MedSAMSegment", "SegmentEditorMedSAMLib", "SegmentEditorEffect.py")
#: The demo CT lesion's key boxes used by the real runs (slice, box); the worker keeps their embeddings.
DEMO_BOXES = [(6, (266.0, 229.0, 322.0, 280.0)), (8, (262.0, 228.0, 329.0, 286.0))]
#: Boxes on the demo volume away from the lesion, for a second segment.
OTHER_BOXES = [(6, (150.0, 300.0, 200.0, 350.0)), (8, (150.0, 300.0, 205.0, 352.0))]


# ---------------------------------------------------------------------------------------------------------
# Fixtures and helpers


@dataclass
class EffectUnderTest:
    editor: object  # SegmentEditorWidgetStandin
    scripted: object  # ScriptedEffectStandin
    editor_node: object
    logic: object
    segmentation: object
    ids: List[str]
    volume: object

    @property
    def effect(self):
        """The Python effect object (``scriptedEffect.self()``)."""
        return self.scripted.self()

    @property
    def active(self) -> bool:
        return self.editor.activeEffect() is self.scripted

    def target(self, segment_index: int = 0):
        from MedSAMSegmentLib.scene.key_box_nodes import RunTarget

        return RunTarget(self.volume.GetID(), self.segmentation.GetID(), self.ids[segment_index])

    def mask(self, segment_index: int = 0) -> np.ndarray:
        from MedSAMSegmentLib.scene import mrml_segments

        return mrml_segments.segment_mask(self.segmentation, self.ids[segment_index], self.volume)

    def select_segment(self, segment_index: int) -> None:
        self.editor_node.SetSelectedSegmentID(self.ids[segment_index])


def open_effect(standin, mrml_scene, volume, names: Sequence[str] = ("lesion",), activate: bool = True,
                effect_class=None) -> EffectUnderTest:
    """A segmentation with ``names`` segments, a segment editor (node, logic, widget) and the MedSAM effect."""
    segmentation, editor_node, logic, ids = make_segment_editor(mrml_scene, volume, list(names))
    editor = standin.segment_editor(editor_node, logic)
    if effect_class is None:
        scripted = editor.add_effect_from_source(EFFECT_SOURCE)
    else:
        scripted = editor.add_effect_from_class(effect_class)
    opened = EffectUnderTest(editor, scripted, editor_node, logic, segmentation, ids, volume)
    if activate:
        editor.setActiveEffectByName("MedSAM")
        assert opened.active
    return opened


# A small synthetic volume for placement: i -> R, j -> A, k -> S (axial slices along k, the Red view).
SHAPE = (20, 64, 80)  # k, j, i
IJK_TO_RAS = np.array([[0.8, 0, 0, -30.0], [0, 0.8, 0, -20.0], [0, 0, 2.0, 15.0], [0, 0, 0, 1]])


def _synthetic_array() -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    blob = ((k - 10) / 7.0) ** 2 + ((j - 32) / 14.0) ** 2 + ((i - 40) / 18.0) ** 2 < 1
    return np.where(blob, 150, -50).astype(np.int16)


def ras(i, j, k, ijk_to_ras=IJK_TO_RAS) -> np.ndarray:
    return (np.asarray(ijk_to_ras) @ np.array([i, j, k, 1.0]))[:3]


def roi_nodes(scene) -> list:
    collection = scene.GetNodesByClass("vtkMRMLMarkupsROINode")
    return [collection.GetItemAsObject(n) for n in range(collection.GetNumberOfItems())]


def line_nodes(scene) -> list:
    collection = scene.GetNodesByClass("vtkMRMLMarkupsLineNode")
    return [collection.GetItemAsObject(n) for n in range(collection.GetNumberOfItems())]


def demo_volume(mrml_scene):
    """The bundled demo CT lesion (512 x 512, already 0-255) as a volume node."""
    from MedSAMSegmentLib import demo, io

    image = io.read_image(demo.DEMO_IMAGE)
    return make_volume(mrml_scene, image.array, image.ijk_to_ras(), name="demo CT"), image


def add_key_boxes(scene, volume, target, boxes, slice_axis: int = 0) -> list:
    """ROIs for (slice, box) pairs on ``volume``, made key boxes of ``target``."""
    from MedSAMSegmentLib.geometry import KeyBox
    from MedSAMSegmentLib.scene import key_box_nodes

    nodes = []
    for index, box in boxes:
        node = key_box_nodes.add_roi_for_key_box(scene, volume, slice_axis, KeyBox(index, tuple(box)), f"K{index}")
        key_box_nodes.assign(node, target)
        nodes.append(node)
    return nodes


def assert_quiet(standin, capsys, dialogs: int = 0) -> None:
    """Nothing raised out of a slot or observer, no qCritical, and exactly ``dialogs`` dialogs."""
    assert standin.app.slot_errors == [], [e.text for e in standin.app.slot_errors]
    assert standin.app.critical_messages == []
    assert len(standin.app.dialogs) == dialogs, standin.app.dialogs
    assert "Traceback" not in capsys.readouterr().err


def run_segment(standin, opened, timeout_s: float = 300.0) -> None:
    """Press Segment and serve the GUI loop until the run has ended."""
    opened.effect.segmentButton.click()
    assert not opened.effect.segmentButton.enabled, opened.effect.statusLabel.text
    assert standin.loop.run_until(lambda: opened.effect.segmentButton.enabled, timeout_s), "the run did not end"


# ---------------------------------------------------------------------------------------------------------
# 3. A real run keeps the GUI loop ticking (first: it needs a fresh worker, whose model load it includes)


@pytest.mark.slow
def test_run_keeps_the_gui_ticking_and_writes_the_core_mask(standin, mrml_scene, worker_logic, lite_model,
                                                            embedding_cache, capsys):
    from MedSAMSegmentLib.scene import effect

    worker_logic.close_backgrounds()  # run out of order: start from a fresh worker all the same
    volume, _ = demo_volume(mrml_scene)
    opened = open_effect(standin, mrml_scene, volume, ("lesion", "other"), activate=False)
    rois = add_key_boxes(mrml_scene.scene, volume, opened.target(0), DEMO_BOXES)
    loop = standin.loop

    started = time.monotonic()
    opened.editor.setActiveEffectByName("MedSAM")  # activate(): the worker process starts loading the model
    opened.effect.segmentButton.click()  # ... and the first Segment waits for it
    clicked = time.monotonic()
    assert opened.effect.cancelButton.enabled and opened.effect.progressBar.visible
    assert loop.run_until(lambda: opened.effect.segmentButton.enabled, 300), "the run did not end"
    ended = time.monotonic()

    ticks = loop.ticks_of(opened.effect.pollTimer, since=started)
    gaps = loop.gaps(ticks)
    write_tick = ticks[-1]  # the loop stops right after the tick that wrote the result
    other_longest = max(t.seconds for t in ticks[:-1])
    slot_calls = [(what, s) for what, s in standin.app.slot_seconds]
    activate_and_click = max(s for what, s in slot_calls if "clicked" in what or "updateWidgetFromMRML" in what)
    with capsys.disabled():  # the measurements, for the record (pytest -s)
        print(f"\nrun {ended - clicked:.2f} s, {len(ticks)} poll ticks, largest gap {max(gaps) * 1000:.1f} ms, "
              f"longest other tick callback {other_longest * 1000:.1f} ms, MRML write tick "
              f"{write_tick.seconds * 1000:.1f} ms, activate/Segment slots at most {activate_and_click * 1000:.1f} ms")
    assert opened.effect.statusLabel.text.startswith("Segmented slices 6-8"), opened.effect.statusLabel.text
    assert max(gaps) < MAX_TICK_GAP_S, max(gaps)
    assert other_longest < MAX_TICK_GAP_S, other_longest
    assert write_tick.seconds < MAX_TICK_GAP_S, f"the final MRML write took {write_tick.seconds:.3f} s"
    assert activate_and_click < MAX_TICK_GAP_S, activate_and_click
    assert ended - clicked > 1.0  # the model really ran in the worker meanwhile

    in_process = effect.MedSAMEffectLogic(model_loader=lambda *unused: lite_model, cache=embedding_cache)
    outcome = in_process.compute(volume, rois, opened.effect.settings())
    assert outcome.slice_range == (6, 8) and outcome.result.mask.sum() > 100
    np.testing.assert_array_equal(opened.mask(0), outcome.result.mask)
    assert not opened.mask(1).any()
    assert opened.logic.CanUndo()  # one undo state, in the editor's logic
    opened.logic.Undo()
    assert not opened.mask(0).any()
    assert_quiet(standin, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("preview", [True, False], ids=["live-preview", "no-preview"])
def test_key_boxes_are_encoded_ahead_while_the_user_draws(standin, mrml_scene, worker_logic, lite_model,
                                                          embedding_cache, capsys, preview):
    """Boxes placed while the effect is active are encoded in the worker once they are still, and (live preview,
    the default) decoded: the preview node shows the in-process mask while the segment stays empty. Segment then
    finds the views between them encoded (here all: zoomed crops and whole slices, no guided crop differs),
    writes the mask an in-process run writes, and the preview goes away."""
    from MedSAMSegmentLib.scene import effect, mrml_preview, mrml_segments

    worker_logic.forget()  # no embedding of the demo volume from an earlier test
    volume, _ = demo_volume(mrml_scene)
    opened = open_effect(standin, mrml_scene, volume, ("lesion",))
    loop, status = standin.loop, opened.effect.statusLabel
    assert opened.effect.previewCheckBox.checked  # on by default
    opened.effect.previewCheckBox.checked = preview
    assert opened.effect.parameter("Preview") == ("1" if preview else "0")
    opened.scripted.setParameter("Zoom", "size")  # a small target: each slice read cropped and whole
    rois = add_key_boxes(mrml_scene.scene, volume, opened.target(0), DEMO_BOXES[:1])
    rois += add_key_boxes(mrml_scene.scene, volume, opened.target(0), DEMO_BOXES[1:])  # the next box, a bit later
    assert opened.effect.encodeAheadTimer.isActive()  # waiting for the boxes to be still
    ready = "Preview of slices 6-8" if preview else "Ready to segment"
    assert loop.run_until(lambda: status.text.startswith(ready), 300), status.text
    encoded_ahead = int(status.text.split("(")[1].split()[0])
    assert encoded_ahead >= 6, status.text  # slices 6-8 in two views, and guesses past slice 8
    in_process = effect.MedSAMEffectLogic(model_loader=lambda *unused: lite_model, cache=embedding_cache)
    expected = in_process.compute(volume, rois, opened.effect.settings()).result.mask
    previews = mrml_scene.scene.GetNodesByClassByName("vtkMRMLSegmentationNode", mrml_preview.PREVIEW_NAME)
    assert previews.GetNumberOfItems() == (1 if preview else 0)
    if preview:
        node = previews.GetItemAsObject(0)
        assert node.GetHideFromEditors() and not node.GetSaveWithScene()
        segment_id = node.GetSegmentation().GetNthSegmentID(0)
        np.testing.assert_array_equal(mrml_segments.segment_mask(node, segment_id, volume), expected)
        assert not opened.mask(0).any()  # the user's segment is untouched by the preview
    opened.effect.segmentButton.click()
    assert loop.run_until(lambda: opened.effect.segmentButton.enabled, 300), "the run did not end"
    assert status.text.startswith("Segmented slices 6-8 (3 slices,") and "0 encoded" in status.text, status.text
    np.testing.assert_array_equal(opened.mask(0), expected)
    gone = mrml_scene.scene.GetNodesByClassByName("vtkMRMLSegmentationNode", mrml_preview.PREVIEW_NAME)
    assert gone.GetNumberOfItems() == 0
    assert_quiet(standin, capsys)


@pytest.mark.slow
def test_live_preview_sends_nothing_while_nothing_changes(standin, mrml_scene, worker_logic, monkeypatch, capsys):
    """Showing a preview adds and removes nodes (the preview segmentation, a temporary segment editor node);
    that is no key box change: once the preview is shown, an idle effect sends the worker nothing. Moving a key
    box sends one request again, and another ROI (a Crop Volume ROI, say) changing sends none."""
    from MedSAMSegmentLib.scene import mrml_preview

    volume, _ = demo_volume(mrml_scene)
    opened = open_effect(standin, mrml_scene, volume, ("lesion",))
    loop, status = standin.loop, opened.effect.statusLabel
    rois = add_key_boxes(mrml_scene.scene, volume, opened.target(0), DEMO_BOXES)
    assert loop.run_until(lambda: status.text.startswith("Preview of slices 6-8"), 300), status.text
    client = worker_logic.background()._client
    sent = []
    request = client.request
    monkeypatch.setattr(client, "request", lambda header, *rest: sent.append(header["op"]) or request(header, *rest))

    loop.run_for(3.0)  # ten times the encode-ahead delay, nothing touched
    assert sent == [], f"{len(sent)} requests while idle: {sent}"
    crop_roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Crop Volume ROI")
    crop_roi.SetSize(10.0, 10.0, 10.0)
    crop_roi.SetCenter(0.0, 0.0, 0.0)
    loop.run_for(1.0)
    assert sent == [], sent
    center = [0.0, 0.0, 0.0]
    rois[1].GetCenter(center)
    rois[1].SetCenter(center[0] + 2.0, center[1], center[2])  # the user moves a key box
    background = worker_logic.background()
    assert loop.run_until(lambda: sent == ["encode"] and not background._encodes, 300), sent  # answered
    loop.run_for(2.0)
    assert sent == ["encode"], sent
    previews = mrml_scene.scene.GetNodesByClassByName("vtkMRMLSegmentationNode", mrml_preview.PREVIEW_NAME)
    assert previews.GetNumberOfItems() == 1
    assert_quiet(standin, capsys)


# ---------------------------------------------------------------------------------------------------------
# 1. Placing key boxes


def test_place_boxes_in_a_row_keeps_the_effect_selected(standin, mrml_scene, capsys):
    from MedSAMSegmentLib.scene import mrml_markups

    scene = mrml_scene.scene
    volume = make_volume(mrml_scene, _synthetic_array(), IJK_TO_RAS)
    opened = open_effect(standin, mrml_scene, volume)
    effect, views, inode = opened.effect, standin.views, standin.interaction_node

    effect.placeBoxButton.click()
    assert effect.placeBoxButton.checked and inode.GetCurrentInteractionMode() == inode.Place
    assert opened.active
    boxes = [(6, (20, 15), (45, 40)), (10, (18, 14), (50, 44)), (14, (22, 18), (44, 38))]
    placed = []
    for k, (i0, j0), (i1, j1) in boxes:
        node = scene.GetNodeByID(standin.selection_node.GetActivePlaceNodeID())
        assert node is not None and node.GetNumberOfControlPoints() == 0
        views.click("Red", ras(i0, j0, k))
        assert opened.active and inode.GetCurrentInteractionMode() == inode.Place
        assert not mrml_markups.markups_is_placed(node)
        views.click("Red", ras(i1, j1, k))
        assert opened.active, "the effect was deselected when a box was completed"
        assert inode.GetCurrentInteractionMode() == inode.Place, "the next box was not started"
        assert mrml_markups.markups_is_placed(node)
        placed.append(node)
    assert views.created_nodes == []  # the effect started each box itself
    table = effect.keyBoxTable
    assert table.rowCount() == 3
    assert table.texts(1) == ["6", "10", "14"]
    assert table.texts(0) == [n.GetName() for n in placed]
    for node in placed:
        normal = [float(v) for v in node.GetAttribute("MedSAM.SliceNormal").split(",")]
        np.testing.assert_allclose(np.abs(normal), [0, 0, 1], atol=1e-9)
    assert len(roi_nodes(scene)) == 4  # 3 placed + the next one, still empty

    effect.placeBoxButton.click()  # stop placing
    assert not effect.placeBoxButton.checked and inode.GetCurrentInteractionMode() == inode.ViewTransform
    assert roi_nodes(scene) == placed and opened.active and table.rowCount() == 3

    # Stopped mid-placement (one corner clicked): the unfinished box is removed, whatever stops it.
    def start_and_click_once(button):
        button.click()
        views.click("Red", ras(30, 30, 17))
        assert len(roi_nodes(scene) + line_nodes(scene)) == 4 and opened.active

    start_and_click_once(effect.placeBoxButton)
    effect.placeBoxButton.click()  # the button again
    assert roi_nodes(scene) == placed and inode.GetCurrentInteractionMode() == inode.ViewTransform

    start_and_click_once(effect.placeBoxButton)
    views.right_click("Red", ras(35, 35, 17))  # Slicer's stop-placing click (SwitchToViewTransformMode)
    assert roi_nodes(scene) == placed and not effect.placeBoxButton.checked and opened.active

    start_and_click_once(effect.placeLineButton)
    inode.SetCurrentInteractionMode(inode.ViewTransform)  # the mouse-mode toolbar
    assert line_nodes(scene) == [] and not effect.placeLineButton.checked and opened.active

    start_and_click_once(effect.placeBoxButton)
    opened.editor.press_escape()  # the Segment Editor's Esc: deselects the effect, which stops placing
    assert not opened.active and roi_nodes(scene) == placed
    assert inode.GetCurrentInteractionMode() == inode.ViewTransform and not effect.placeBoxButton.checked
    assert table.rowCount() == 3

    # The table: a click jumps the slice views to the box, Delete removes it.
    opened.editor.setActiveEffectByName("MedSAM")
    table.clickCell(2, 0)
    center = [0.0, 0.0, 0.0]
    placed[2].GetCenterWorld(center)
    np.testing.assert_allclose(standin.markups.jumps[-1][:3], center)
    np.testing.assert_allclose(standin.views.slice_node("Red").GetSliceOffset(), center[2])
    effect.deleteShortcut.activate()
    assert roi_nodes(scene) == placed[:2] and table.rowCount() == 2
    assert_quiet(standin, capsys)


def test_place_box_works_with_place_mode_persistence_on(standin, mrml_scene, capsys):
    """A user who once chose "place multiple" on the mouse-mode toolbar keeps persistence 1 (Slicer's
    SwitchToViewTransformMode keeps it): the first press of Place box still places key boxes one after another,
    and stopping gives the user's persistence back."""
    scene = mrml_scene.scene
    volume = make_volume(mrml_scene, _synthetic_array(), IJK_TO_RAS)
    opened = open_effect(standin, mrml_scene, volume)
    effect, views, inode = opened.effect, standin.views, standin.interaction_node
    inode.SwitchToPersistentPlaceMode()  # the toolbar's "place multiple", then back to View/Transform
    inode.SwitchToViewTransformMode()
    assert inode.GetPlaceModePersistence() == 1

    effect.placeBoxButton.click()
    assert effect.placeBoxButton.checked, "the first press did not start placing"
    assert inode.GetCurrentInteractionMode() == inode.Place and inode.GetPlaceModePersistence() == 0
    for k in (6, 10):
        views.click("Red", ras(20, 15, k))
        views.click("Red", ras(45, 40, k))
        assert effect.placeBoxButton.checked and inode.GetCurrentInteractionMode() == inode.Place
    assert views.created_nodes == []  # no plain ROI made by the displayable manager
    assert effect.keyBoxTable.rowCount() == 2 and effect.keyBoxTable.texts(1) == ["6", "10"]
    effect.placeBoxButton.click()
    assert inode.GetCurrentInteractionMode() == inode.ViewTransform and inode.GetPlaceModePersistence() == 1
    assert len(roi_nodes(scene)) == 2

    effect.placeLineButton.click()  # stopped by the Segment Editor's Esc: the persistence comes back too
    assert inode.GetPlaceModePersistence() == 0
    opened.editor.press_escape()
    assert inode.GetPlaceModePersistence() == 1 and not effect.placeLineButton.checked
    assert_quiet(standin, capsys)


@pytest.mark.parametrize("axis, degrees", [((0, 0, 1), 10.0), ((0, 0, 1), 17.0), ((1.0, 0.5, 0.2), 6.0),
                                           ((1, 0, 0), 12.0)],
                         ids=["in-plane-10", "in-plane-17", "tilted-6", "tilted-12"])
def test_a_box_drawn_in_views_turned_to_the_volume_is_the_rectangle_drawn(standin, mrml_scene, capsys, axis,
                                                                           degrees):
    """Showing a volume turns the slice views to its axes (FitSliceToBackground -> RotateSliceToLowestVolumeAxes).
    Two clicks at the corners of voxels (20, 20)-(40, 30) of slice 10 in the turned axial view give exactly that key
    box: the box is turned to the view at the first click, not left in RAS axes (where a turn of 10 degrees in
    plane gave rows 17-33)."""
    from MedSAMSegmentLib.scene import mrml_markups

    ijk_to_ras = rotation_matrix(axis, degrees) @ np.diag([0.8, 0.8, 2.0, 1.0])
    ijk_to_ras[:3, 3] = IJK_TO_RAS[:3, 3]
    volume = make_volume(mrml_scene, _synthetic_array(), ijk_to_ras)
    standin.views.show_volume(volume)
    red = numpy_matrix(standin.views.slice_node("Red").GetSliceToRAS())
    k_axis = ijk_to_ras[:3, 2] / np.linalg.norm(ijk_to_ras[:3, 2])
    assert abs(red[:3, 2] @ k_axis) == pytest.approx(1.0)  # the axial view is turned to the volume's slices
    assert abs(red[:3, 0] @ ijk_to_ras[:3, 0]) / 0.8 == pytest.approx(1.0)  # ... and its columns
    opened = open_effect(standin, mrml_scene, volume)
    effect = opened.effect

    effect.placeBoxButton.click()
    standin.views.click("Red", ras(19.5, 19.5, 10, ijk_to_ras))
    standin.views.click("Red", ras(40.5, 30.5, 10, ijk_to_ras))
    (node,) = [n for n in opened.effect.keyBoxNodes() if mrml_markups.markups_is_placed(n)]  # and the next one
    keys = mrml_markups.markups_key_boxes([node], volume)
    assert keys.slice_axis == 0 and [(b.slice_index, b.box) for b in keys.boxes] == [(10, (20.0, 20.0, 40.0, 30.0))]
    assert effect.keyBoxTable.texts(2) == ["21 x 11"]
    effect.placeBoxButton.click()
    assert_quiet(standin, capsys)


def test_without_the_override_slicer_deselects_the_effect_on_place(standin, mrml_scene, capsys):
    """The control: the same effect without ``interactionNodeModified`` is deselected as soon as it enters Place
    mode (qSlicerSegmentEditorAbstractEffect::interactionNodeModified), and its box is never placed."""
    volume = make_volume(mrml_scene, _synthetic_array(), IJK_TO_RAS)
    real = open_effect(standin, mrml_scene, volume, activate=False)
    cls = type(real.effect)
    assert "interactionNodeModified" in cls.__dict__
    members = {k: v for k, v in cls.__dict__.items() if k not in ("interactionNodeModified", "__dict__", "__weakref__")}
    without = type("SegmentEditorEffect", (AbstractScriptedSegmentEditorEffect,), members)
    control = open_effect(standin, mrml_scene, volume, effect_class=without)
    inode = standin.interaction_node

    control.effect.placeBoxButton.click()
    assert not control.active, "Slicer's default keeps the effect selected?"
    assert control.editor.activeEffect() is None
    assert inode.GetCurrentInteractionMode() == inode.ViewTransform
    assert roi_nodes(mrml_scene.scene) == []  # deactivate() removed the box it had started
    assert_quiet(standin, capsys)


# ---------------------------------------------------------------------------------------------------------
# 6. Parameters


def test_parameters_are_stored_with_one_effect_prefix(standin, mrml_scene, capsys):
    volume = make_volume(mrml_scene, _synthetic_array(), IJK_TO_RAS)
    opened = open_effect(standin, mrml_scene, volume)
    node, effect = opened.editor_node, opened.effect

    def medsam_attributes():
        return {n: node.GetAttribute(n) for n in node.GetAttributeNames() if "MedSAM" in n}

    assert medsam_attributes() == {"MedSAM.Strategy": "interpolate", "MedSAM.Intensity": "auto",
                                   "MedSAM.Model": "lite", "MedSAM.Device": "auto", "MedSAM.MrRule": "published",
                                   "MedSAM.Zoom": "off", "MedSAM.Guide": "off", "MedSAM.Refine": "off",
                                   "MedSAM.Retry": "off", "MedSAM.Slices": "every", "MedSAM.BoxSizes": "rounded",
                                   "MedSAM.Preview": "1"}
    effect.strategyCombo.select("propagate")
    effect.intensityCombo.select("ct:soft_tissue")
    effect.checkpointPath.currentPath = "/models/medsam_vit_b.pth"
    attributes = medsam_attributes()
    assert attributes["MedSAM.Strategy"] == "propagate" and attributes["MedSAM.Intensity"] == "ct:soft_tissue"
    assert attributes["MedSAM.Checkpoint"] == "/models/medsam_vit_b.pth"
    assert not [n for n in attributes if n.startswith("MedSAM.MedSAM.")]
    assert effect.checkpointPath.enabled  # LiteMedSAM takes a fine-tuned checkpoint too
    opened.scripted.setParameter("Model", "vit_b")  # e.g. another editor widget or a script
    assert effect.modelCombo.currentData == "vit_b" and effect.checkpointPath.enabled
    settings = effect.settings()
    assert (settings.strategy, settings.intensity, settings.model, settings.checkpoint, settings.device) == (
        "propagate", "ct:soft_tissue", "vit_b", "/models/medsam_vit_b.pth", "auto")
    # Every accuracy option of the command line is a menu in the effect; a choice reaches the run's settings.
    chosen = {"MrRule": "published", "Zoom": "best", "Guide": "mean", "Refine": "box", "Retry": "zoom"}
    for parameter, value in chosen.items():
        effect.accuracyCombos[parameter].select(value)
        assert node.GetAttribute(f"MedSAM.{parameter}") == value
    run_settings = effect.settings().segmentation_settings(volume)
    assert (run_settings.mr_rule, run_settings.zoom, run_settings.guide, run_settings.refine, run_settings.retry) == (
        "published", "best", "mean", "box", "zoom")
    opened.scripted.setParameter("Zoom", "off")
    assert effect.accuracyCombos["Zoom"].currentData == "off"
    effect.accuracyCombos["Slices"].select("alternate")  # every second slice: interpolate only
    with pytest.raises(SettingsError, match="--slices alternate works with --strategy interpolate"):
        effect.settings().segmentation_settings(volume)
    effect.strategyCombo.select("interpolate")
    assert effect.settings().segmentation_settings(volume).slices == "alternate"
    assert_quiet(standin, capsys)


# ---------------------------------------------------------------------------------------------------------
# 4. Errors: one dialog or the status line, never an exception out of a slot


def test_segment_without_key_boxes_or_on_a_vector_volume_shows_one_dialog(standin, mrml_scene, capsys):
    volume = make_volume(mrml_scene, _synthetic_array(), IJK_TO_RAS)
    opened = open_effect(standin, mrml_scene, volume)
    opened.effect.segmentButton.click()
    assert len(standin.app.dialogs) == 1 and "MedSAM cannot start" in standin.app.dialogs[0].text
    assert "no placed ROI or line" in standin.app.dialogs[0].text
    assert opened.effect.segmentButton.enabled and not opened.effect.cancelButton.enabled

    vector = mrml_scene.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour")
    slicer.util.updateVolumeFromArray(vector, np.zeros(SHAPE + (3,), dtype=np.uint8))
    vector.SetIJKToRASMatrix(vtk_matrix(IJK_TO_RAS))
    opened.editor_node.SetAndObserveSourceVolumeNode(vector)
    target = RunTarget(vector.GetID(), opened.segmentation.GetID(), opened.ids[0])
    add_key_boxes(mrml_scene.scene, vector, target, [(5, (10, 10, 30, 30)), (8, (10, 10, 30, 30))])
    opened.effect.segmentButton.click()
    assert len(standin.app.dialogs) == 2 and "components per voxel" in standin.app.dialogs[1].text
    assert opened.effect.segmentButton.enabled
    assert_quiet(standin, capsys, dialogs=2)


def test_killed_worker_shows_one_dialog(standin, mrml_scene, monkeypatch, capsys):
    """A worker that dies mid-run (here: while loading the model for the first run) is one dialog and the status
    line; nothing is written, nothing raises."""
    from MedSAMSegmentLib.scene import effect

    fresh = effect.MedSAMEffectLogic()
    monkeypatch.setattr(effect, "_SHARED", fresh)
    try:
        volume, _ = demo_volume(mrml_scene)
        opened = open_effect(standin, mrml_scene, volume)
        add_key_boxes(mrml_scene.scene, volume, opened.target(0), DEMO_BOXES)
        opened.effect.segmentButton.click()
        assert opened.effect.cancelButton.enabled
        fresh.background()._client.process.kill()
        assert standin.loop.run_until(lambda: opened.effect.segmentButton.enabled, 60)
        status = opened.effect.statusLabel.text
        assert status.startswith("MedSAM failed: the MedSAM worker process stopped"), status
        assert len(standin.app.dialogs) == 1 and "the segment was not changed" in standin.app.dialogs[0].text
        assert not opened.mask(0).any() and not opened.logic.CanUndo()
        assert_quiet(standin, capsys, dialogs=1)
    finally:
        fresh.background().close()


@pytest.mark.slow
def test_target_deleted_or_changed_mid_run_writes_nothing(standin, mrml_scene, capsys):
    volume, _ = demo_volume(mrml_scene)
    opened = open_effect(standin, mrml_scene, volume, ("lesion", "other"))
    add_key_boxes(mrml_scene.scene, volume, opened.target(0), DEMO_BOXES)
    other = np.zeros(volume.GetImageData().GetDimensions()[::-1], dtype=bool)
    other[5:10, 240:300, 250:330] = True  # the other segment has content where the lesion is
    from MedSAMSegmentLib.scene import mrml_segments

    opened.select_segment(1)
    mrml_segments.write_segment_mask(
        mrml_segments.SegmentWriter(opened.logic), volume, other, 0, (0, other.shape[0] - 1)
    )
    opened.logic.ClearUndoState()
    opened.select_segment(0)

    # The selected segment changes mid-run: nothing is written into either segment.
    opened.effect.segmentButton.click()
    opened.select_segment(1)
    assert standin.loop.run_until(lambda: opened.effect.segmentButton.enabled, 300)
    status = opened.effect.statusLabel.text
    assert status.startswith("Not written: the selected segment"), status
    assert not opened.mask(0).any()
    np.testing.assert_array_equal(opened.mask(1), other)
    assert not opened.logic.CanUndo()

    # The target segment is deleted mid-run: nothing is written anywhere.
    opened.select_segment(0)
    opened.effect.segmentButton.click()
    opened.segmentation.GetSegmentation().RemoveSegment(opened.ids[0])
    assert standin.loop.run_until(lambda: opened.effect.segmentButton.enabled, 300)
    status = opened.effect.statusLabel.text
    assert status.startswith("Not written: the segment was deleted during the run"), status
    np.testing.assert_array_equal(opened.mask(1), other)
    assert opened.segmentation.GetSegmentation().GetNumberOfSegments() == 1
    assert not opened.logic.CanUndo()
    assert_quiet(standin, capsys)


def test_closing_and_reloading_the_scene_mid_run_writes_nothing(standin, mrml_scene, worker_logic, capsys):
    """The scene is closed while a run's result is on its way, and the same scene is loaded again: the volume,
    segmentation and segment get the same IDs (``vtkMRMLScene::Clear`` resets the ID counters) and the user
    selects them in the Segment Editor. The closed scene's result is never written into the reloaded segment."""
    from MedSAMSegmentLib import demo, io

    scene = mrml_scene.scene
    volume, _ = demo_volume(mrml_scene)
    opened = open_effect(standin, mrml_scene, volume, ("lesion",))
    add_key_boxes(scene, volume, opened.target(0), DEMO_BOXES)
    closed_target = opened.target(0)
    opened.effect.segmentButton.click()
    assert not opened.effect.segmentButton.enabled, opened.effect.statusLabel.text
    assert wait_for_reply(worker_logic, "result", 300)  # the result has arrived, unread, when the scene closes
    scene.Clear(0)
    assert not opened.active  # the Segment Editor deselects the effect when the scene closes
    assert opened.editor_node.GetScene() is scene and opened.editor_node.GetSegmentationNode() is None

    image = io.read_image(demo.DEMO_IMAGE)  # the same scene loaded again: the same IDs
    reloaded = make_volume(mrml_scene, image.array, image.ijk_to_ras(), name="demo CT")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reloaded)
    segmentation.GetSegmentation().AddEmptySegment("lesion", "lesion")
    opened.editor_node.SetAndObserveSegmentationNode(segmentation)
    opened.editor_node.SetAndObserveSourceVolumeNode(reloaded)
    opened.editor_node.SetSelectedSegmentID("lesion")
    assert RunTarget(reloaded.GetID(), segmentation.GetID(), "lesion") == closed_target
    opened.segmentation, opened.volume = segmentation, reloaded

    assert standin.loop.run_until(lambda: opened.effect.segmentButton.enabled, 60), "the run did not end"
    status = opened.effect.statusLabel.text
    assert status == "Not written: the scene was closed during the run.", status
    assert not opened.mask(0).any() and not opened.logic.CanUndo()
    opened.editor.setActiveEffectByName("MedSAM")  # the effect works on the reloaded scene
    assert opened.active and opened.effect.parameter("Preview") == "1"
    assert_quiet(standin, capsys)


def test_a_write_failing_halfway_restores_the_segmentation(standin, mrml_scene, monkeypatch, capsys):
    """The effect's writer removes, then adds; a failure between them is undone from the effect's own snapshot
    (not through some other editor widget's undo), with one dialog."""
    volume, _ = demo_volume(mrml_scene)
    opened = open_effect(standin, mrml_scene, volume, ("lesion", "other"))
    add_key_boxes(mrml_scene.scene, volume, opened.target(0), DEMO_BOXES)
    from MedSAMSegmentLib.scene import mrml_segments

    before = np.zeros(volume.GetImageData().GetDimensions()[::-1], dtype=bool)
    before[6:9, 200:320, 200:340] = True  # existing content the remove step clears before the add step fails
    mrml_segments.write_segment_mask(
        mrml_segments.SegmentWriter(opened.logic), volume, before, 0, (0, before.shape[0] - 1)
    )
    opened.logic.ClearUndoState()
    modify = opened.scripted.modifySelectedSegmentByLabelmap
    calls = []

    def failing_add(modifier, mode, extent, *rest):
        calls.append(mode)
        if len(calls) == 2:
            raise RuntimeError("simulated failure while adding")
        return modify(modifier, mode, extent, *rest)

    monkeypatch.setattr(opened.scripted, "modifySelectedSegmentByLabelmap", failing_add)
    run_segment(standin, opened)
    assert len(calls) == 2  # the remove ran, the add failed
    assert opened.effect.statusLabel.text.startswith("Writing the segment failed"), opened.effect.statusLabel.text
    np.testing.assert_array_equal(opened.mask(0), before)
    assert not opened.mask(1).any()
    assert_quiet(standin, capsys, dialogs=1)


# ---------------------------------------------------------------------------------------------------------
# 2. Cancel


def _brats_case():
    with open(shared_data_path("cases.json"), encoding="utf-8") as handle:
        cases = json.load(handle)
    return next(c for c in cases if c["name"].startswith("brats_"))


def test_cancel_shows_no_error_and_changes_nothing(standin, mrml_scene, capsys):
    from MedSAMSegmentLib import io
    from MedSAMSegmentLib.scene import mrml_segments

    case = _brats_case()
    image = io.read_image(shared_data_path(case["image"]))
    volume = make_volume(mrml_scene, image.array, image.ijk_to_ras(), name="flair")
    opened = open_effect(standin, mrml_scene, volume)
    shape = image.array.shape
    axis = int(case["slice_axis"])
    first, last = shape[axis] // 2 - 15, shape[axis] // 2 + 15  # 31 slices: far longer than the cancel takes
    rows, cols = [n for a, n in enumerate(shape) if a != axis]
    box = (cols * 0.3, rows * 0.3, cols * 0.6, rows * 0.6)
    add_key_boxes(mrml_scene.scene, volume, opened.target(0), [(first, box), (last, box)], slice_axis=axis)
    before = np.zeros(shape, dtype=bool)
    before[tuple(slice(n // 3, n // 2) for n in shape)] = True
    mrml_segments.write_segment_mask(mrml_segments.SegmentWriter(opened.logic), volume, before, 0, (0, shape[0] - 1))
    opened.logic.ClearUndoState()
    bar = opened.effect.progressBar

    opened.effect.segmentButton.click()
    assert standin.loop.run_until(lambda: bar.maximum > 0 or opened.effect.segmentButton.enabled, 240)
    assert not opened.effect.segmentButton.enabled, "the run ended before any progress arrived"
    opened.effect.cancelButton.click()
    assert opened.effect.statusLabel.text == "Cancelling..."
    assert standin.loop.run_until(lambda: opened.effect.segmentButton.enabled, 120)
    assert opened.effect.statusLabel.text.startswith("Cancelled"), opened.effect.statusLabel.text
    assert not bar.visible and not opened.effect.cancelButton.enabled
    np.testing.assert_array_equal(opened.mask(0), before)
    assert not opened.logic.CanUndo()
    assert_quiet(standin, capsys)


def _paint_slice(opened, volume, index: int, slice_mask: np.ndarray) -> np.ndarray:
    """The expert paints or erases slice ``index`` (axis 0) of the first segment into ``slice_mask``, as a Segment
    Editor effect does (one undo state); returns the segment after it."""
    from MedSAMSegmentLib.scene import mrml_segments

    current = opened.mask(0)
    current[index] = slice_mask
    mrml_segments.write_segment_mask(mrml_segments.SegmentWriter(opened.logic), volume, current, 0, (index, index))
    return opened.mask(0)


#: The accuracy options that were the defaults before the defaults rule (docs/accuracy.md) sent them back.
EARLIER_DEFAULTS = {"MrRule": "auto", "Zoom": "size", "Guide": "auto", "Slices": "auto"}


@pytest.mark.slow
def test_refine_from_my_edits_learns_from_the_corrected_slices_in_one_undo_step(
        standin, mrml_scene, worker_logic, lite_model, embedding_cache, capsys):
    """After Segment, the expert corrects slices; Refine from my edits runs on the worker, keeps the expert's
    slices exactly and writes what an in-process refinement of the same run gives, in one undo step; when the
    adapted decoder does not hold out, nothing is written. Pressed too early or with one corrected slice it shows
    one dialog and changes nothing."""
    from MedSAMSegmentLib import demo, io
    from MedSAMSegmentLib.scene import effect

    volume, image = demo_volume(mrml_scene)
    reference, _ = io.read_mask(demo.DEMO_IMAGE)
    keys = demo.demo_key_boxes(image.shape)  # slices 5, 8 and 11
    opened = open_effect(standin, mrml_scene, volume)
    for key, value in EARLIER_DEFAULTS.items():  # the options under which the adapted decoder holds out here
        opened.scripted.setParameter(key, value)
    add_key_boxes(mrml_scene.scene, volume, opened.target(0), [(k.slice_index, k.box) for k in keys.sorted()])
    refine = opened.effect.refineButton

    refine.click()  # nothing to refine yet
    assert standin.app.dialogs[-1].text.startswith("Press Segment first"), standin.app.dialogs
    assert opened.effect.segmentButton.enabled and not opened.mask(0).any()
    run_segment(standin, opened)
    assert opened.effect.statusLabel.text.startswith("Segmented slices 5-11"), opened.effect.statusLabel.text
    written = opened.effect._written[(opened.segmentation.GetID(), opened.ids[0])]
    np.testing.assert_array_equal(written.written, opened.mask(0))

    _paint_slice(opened, volume, 5, reference[5].astype(bool))  # the two worst slices: the ends
    refine.click()  # one corrected slice cannot be checked by leave-one-out
    assert "1 of the run's slices (5-11) differ" in standin.app.dialogs[-1].text, standin.app.dialogs
    assert opened.effect.segmentButton.enabled
    edited = _paint_slice(opened, volume, 11, reference[11].astype(bool))

    refine.click()
    assert not opened.effect.segmentButton.enabled and not refine.enabled
    assert opened.effect.statusLabel.text == "Refining from your 2 corrected slices..."
    assert standin.loop.run_until(lambda: opened.effect.segmentButton.enabled, 300), "the refinement did not end"
    in_process = effect.MedSAMEffectLogic(model_loader=lambda *unused: lite_model, cache=embedding_cache)
    expected = in_process.refine(written, volume, edited)
    assert opened.effect.statusLabel.text == expected.summary() and expected.note
    refined = opened.mask(0)
    for index in (5, 11):  # the expert's slices, exactly
        np.testing.assert_array_equal(refined[index], reference[index].astype(bool))
    # Here the adapted decoder holds on each held-out end slice, so the slices between are segmented again.
    assert expected.note.startswith("refined 5 untouched slices"), expected.note
    np.testing.assert_array_equal(refined, expected.result.mask)
    assert not np.array_equal(refined[6:11], edited[6:11])
    assert opened.logic.CanUndo()
    opened.logic.Undo()  # one step back: the segment as the expert left it
    np.testing.assert_array_equal(opened.mask(0), edited)
    again = opened.effect._written[(opened.segmentation.GetID(), opened.ids[0])]
    assert sorted(again.corrections(opened.mask(0))) == [5, 11]  # undone, the refined slices are not edits

    # Corrections that contradict each other (one slice drawn wider, the other narrower than MedSAM's): the
    # decoder adapted to one does not predict the other better, so nothing is written.
    from scipy import ndimage

    _paint_slice(opened, volume, 5, ndimage.binary_dilation(written.written[5], iterations=4))
    contradicting = _paint_slice(opened, volume, 11, ndimage.binary_erosion(written.written[11], iterations=3))
    refine.click()
    assert standin.loop.run_until(lambda: opened.effect.segmentButton.enabled, 300), "the refinement did not end"
    assert opened.effect.statusLabel.text.startswith("Kept the original masks"), opened.effect.statusLabel.text
    np.testing.assert_array_equal(opened.mask(0), contradicting)
    assert_quiet(standin, capsys, dialogs=2)


# ---------------------------------------------------------------------------------------------------------
# 5. Two segments, each with its own key boxes


def test_two_segments_keep_their_own_boxes_and_segment_independently(standin, mrml_scene, capsys):
    from MedSAMSegmentLib.scene import sample_scene

    scene = mrml_scene.scene
    volume, image = demo_volume(mrml_scene)
    opened = open_effect(standin, mrml_scene, volume, ("lesion", "other"))
    effect, table = opened.effect, opened.effect.keyBoxTable
    lesion = add_key_boxes(scene, volume, opened.target(0), DEMO_BOXES)
    assert table.rowCount() == 2

    opened.select_segment(1)  # the table follows the selected segment
    assert table.rowCount() == 0
    others = add_key_boxes(scene, volume, opened.target(1), OTHER_BOXES)
    assert table.texts(0) == [n.GetName() for n in others]
    opened.select_segment(0)
    assert table.texts(0) == [n.GetName() for n in lesion]

    # Markups made outside the effect (Markups toolbar, a script) are no key boxes until taken in.
    plain = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "toolbar ROI")
    plain.CreateDefaultDisplayNodes()
    corner_a = (image.ijk_to_ras() @ [270, 232, 7, 1.0])[:3]
    corner_b = (image.ijk_to_ras() @ [320, 276, 7, 1.0])[:3]
    plain.AddControlPoint(vtk.vtkVector3d(*corner_a))
    plain.AddControlPoint(vtk.vtkVector3d(*corner_b))
    assert effect.takeInButton.enabled and effect.takeInButton.text == "Take in 1 markups"
    crop = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Crop Volume ROI")  # a 3D box: never offered
    crop.CreateDefaultDisplayNodes()
    crop.SetCenter(*((corner_a + corner_b) / 2.0))
    crop.SetSize(80.0, 80.0, 60.0)
    assert effect.takeInButton.text == "Take in 1 markups"
    assert table.rowCount() == 2
    sample = sample_scene.load_sample(scene)  # its ROIs belong to the sample's own segment: not offered
    assert effect.takeInButton.text == "Take in 1 markups"
    effect.takeInButton.click()
    assert effect.statusLabel.text == "Took in 1 markups as key boxes of the selected segment."
    assert table.rowCount() == 3 and "toolbar ROI" in table.texts(0)
    assert not effect.takeInButton.enabled
    opened.select_segment(1)
    assert table.texts(0) == [n.GetName() for n in others]
    assert all(r.GetAttribute("MedSAM.SegmentID") == sample.segment_id for r in sample.roi_nodes)

    # Segment each: each run writes only its own segment.
    scene.RemoveNode(plain)
    opened.select_segment(0)
    run_segment(standin, opened)
    lesion_mask = opened.mask(0)
    assert lesion_mask.any() and not opened.mask(1).any()
    opened.select_segment(1)
    run_segment(standin, opened)
    other_mask = opened.mask(1)
    np.testing.assert_array_equal(opened.mask(0), lesion_mask)
    assert other_mask.any()
    assert not (other_mask & lesion_mask).any()
    x0, y0, x1, y1 = OTHER_BOXES[1][1]
    ks, js, iis = np.nonzero(other_mask)
    assert ks.min() >= 6 and ks.max() <= 8
    assert iis.min() >= x0 - 8 and iis.max() <= x1 + 8 and js.min() >= y0 - 8 and js.max() <= y1 + 8
    assert_quiet(standin, capsys)


# ---------------------------------------------------------------------------------------------------------
# The module file itself, under the stand-in


def test_module_dependency_check_returns_true_when_installed(standin):
    import MedSAMSegment

    assert MedSAMSegment.ensureDependencies("lite", None) is True
    assert standin.app.dialogs == []
