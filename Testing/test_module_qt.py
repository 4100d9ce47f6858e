"""The module page (MedSAMSegment/MedSAMSegment.py: its widget, parameter node, effect registration and self-test)
run under the Slicer stand-in (slicer_standin/) on a real slicer-core scene, with the real worker process.

The page is built as Slicer builds it: the module file is loaded as a scripted module, ``startupCompleted()``
registers the effect, selecting the module makes its widget, whose ``setup()`` loads Resources/UI/MedSAMSegment.ui
through Slicer's real ``slicer.util.loadUI`` / ``childWidgetVariables``, then enters it.
"""

from __future__ import annotations

import os
import sys
import time
import types
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import REPO, shared_data_path
from MedSAMSegmentLib.settings import SegmentationSettings
from slicer_scene import make_volume, mrml_scene_fixture, slicer  # noqa: F401
from standin_fixtures import MAX_TICK_GAP_S, standin_fixture, wait_for_reply, worker_logic_fixture  # noqa: F401

pytest.importorskip("torch")

MODULE_SOURCE = os.path.join(REPO, "MedSAMSegment", "MedSAMSegment.py")


@dataclass
class Page:
    """The module page under test: the scripted module, its widget and the Python widget (``ui``: its widgets)."""

    module: object  # ScriptedModuleStandin
    widget: object  # MedSAMSegmentWidget

    @property
    def ui(self):
        return self.widget.ui

    def parameter_node(self):
        return slicer.mrmlScene.GetSingletonNode("MedSAMSegment", "vtkMRMLScriptedModuleNode")


def open_page(standin, monkeypatch=None, version: str = "5.10.0", python=None) -> Page:
    """Slicer ``version`` (with ``python`` as ``sys.version_info``) starts, then the user opens the module."""
    standin.app.applicationVersion = version
    module = standin.load_module(MODULE_SOURCE)
    if python is not None:
        monkeypatch.setattr(sys.modules["MedSAMSegment"], "sys", types.SimpleNamespace(version_info=python))
    standin.app.startup_completed()
    standin.select_module("MedSAMSegment")
    return Page(module, module.widget.self())


def registered_effects() -> list:
    import qSlicerSegmentationsEditorEffectsPythonQt as editorEffects

    return [e.name for e in editorEffects.qSlicerSegmentEditorEffectFactory.instance().registeredEffects()]


def assert_quiet(standin, capsys, dialogs: int = 0) -> None:
    """Nothing raised out of a slot, observer or widget method, no qCritical / qWarning, exactly ``dialogs``
    dialogs."""
    assert standin.app.slot_errors == [], [e.text for e in standin.app.slot_errors]
    assert standin.app.critical_messages == [] and standin.app.warning_messages == []
    assert len(standin.app.dialogs) == dialogs, standin.app.dialogs
    assert "Traceback" not in capsys.readouterr().err


def small_volume(mrml_scene, name: str = "volume"):
    array = np.zeros((12, 40, 50), dtype=np.int16)
    array[4:8, 10:30, 15:35] = 100
    return make_volume(mrml_scene, array, np.diag([0.8, 0.8, 2.0, 1.0]), name=name)


def segmentation_nodes(scene) -> list:
    collection = scene.GetNodesByClass("vtkMRMLSegmentationNode")
    return [collection.GetItemAsObject(n) for n in range(collection.GetNumberOfItems())]


# ---------------------------------------------------------------------------------------------------------
# (a) Supported and unsupported Slicer versions


def test_supported_slicer_shows_no_version_line_and_segment_needs_a_volume(standin, mrml_scene, capsys):
    page = open_page(standin)
    ui = page.ui
    assert page.module.widget.isEntered and page.module.title == "MedSAM Segment"
    assert ui.statusLabel.text == ""
    assert ui.introLabel.text.startswith("Interactive use: open the Segment Editor")
    assert registered_effects() == ["MedSAM"]
    # The .ui file's widgets, made by class and connected to the scene through its connections.
    kinds = {name: type(getattr(ui, name)).__name__ for name in (
        "volumeSelector", "markupsSelector", "segmentationSelector", "inputsCollapsibleButton",
        "checkpointPathLineEdit", "segmentNameLineEdit", "strategyComboBox", "flaggedList")}
    assert kinds == {"volumeSelector": "qMRMLNodeComboBox", "markupsSelector": "qMRMLCheckableNodeComboBox",
                     "segmentationSelector": "qMRMLNodeComboBox", "inputsCollapsibleButton": "ctkCollapsibleButton",
                     "checkpointPathLineEdit": "ctkPathLineEdit", "segmentNameLineEdit": "QLineEdit",
                     "strategyComboBox": "QComboBox", "flaggedList": "QListWidget"}
    assert ui.volumeSelector.mrmlScene() is mrml_scene.scene and ui.markupsSelector.mrmlScene() is mrml_scene.scene
    assert ui.volumeSelector.nodeTypes == ["vtkMRMLScalarVolumeNode"] and ui.volumeSelector.noneEnabled
    assert ui.segmentNameLineEdit.text == "MedSAM" and ui.strategyComboBox.currentData == "interpolate"

    assert not ui.segmentButton.enabled and not ui.cancelButton.enabled
    volume = small_volume(mrml_scene)  # loaded while the page is open: listed, not chosen
    assert ui.volumeSelector.nodes() == [volume] and not ui.segmentButton.enabled
    ui.volumeSelector.select(volume)
    assert ui.segmentButton.enabled and not ui.cancelButton.enabled
    assert page.parameter_node().GetNodeReference("inputVolume") is volume
    ui.volumeSelector.select(None)
    assert not ui.segmentButton.enabled
    assert_quiet(standin, capsys)


def test_unsupported_slicer_shows_the_reason_and_registers_nothing(standin, mrml_scene, monkeypatch, capsys):
    from MedSAMSegmentLib.scene import dependencies

    volume = small_volume(mrml_scene)
    page = open_page(standin, monkeypatch, version="5.8.1", python=(3, 9, 18, "final", 0))
    ui = page.ui
    reason = dependencies.unsupported_reason("5.8.1", (3, 9))
    assert reason and "\n" not in reason and "5.8.1" in reason
    assert ui.statusLabel.text == reason and ui.introLabel.text == reason
    assert ui.volumeSelector.currentNode() is volume  # a volume is set ...
    assert not ui.segmentButton.enabled  # ... and Segment stays disabled
    page.widget.onSegment()  # not even a script starts a run
    assert ui.statusLabel.text == reason and not ui.cancelButton.enabled
    assert registered_effects() == []
    assert_quiet(standin, capsys)


# ---------------------------------------------------------------------------------------------------------
# (b) Load sample, then Segment on the worker process


def test_load_sample_and_segment_writes_the_lesion_while_the_gui_ticks(standin, mrml_scene, worker_logic, capsys):
    from MedSAMSegmentLib import demo, io
    from MedSAMSegmentLib.metrics import dice
    from MedSAMSegmentLib.scene import mrml_segments

    worker_logic.close_backgrounds()  # run out of order: start from a fresh worker all the same
    page = open_page(standin)
    ui, loop = page.ui, standin.loop
    ui.loadSampleButton.click()
    volume, segmentation = ui.volumeSelector.currentNode(), ui.segmentationSelector.currentNode()
    assert volume.GetName() == "MedSAM sample CT lesion" and segmentation.GetName() == "MedSAM sample segmentation"
    assert ui.segmentNameLineEdit.text == "lesion"
    assert [n.GetName() for n in ui.markupsSelector.checkedNodes()] == ["key box 1", "key box 2", "key box 3"]
    assert all(c.GetBackgroundVolumeID() == volume.GetID() for c in standin.views.composite_nodes.values())
    assert ui.segmentButton.enabled

    started = time.monotonic()
    ui.segmentButton.click()  # the first run waits for the worker to start and load the model
    assert ui.cancelButton.enabled and not ui.segmentButton.enabled, ui.statusLabel.text
    assert ui.statusLabel.text == "Segmenting..."
    assert loop.run_until(lambda: ui.segmentButton.enabled, 300), "the run did not end"
    ended = time.monotonic()

    ticks = loop.ticks_of(page.widget.pollTimer, since=started)
    gaps = loop.gaps(ticks)
    with capsys.disabled():
        print(f"\nmodule run {ended - started:.2f} s, {len(ticks)} poll ticks, largest gap {max(gaps) * 1000:.1f} ms, "
              f"longest tick callback {loop.longest_callback(started) * 1000:.1f} ms")
    assert ui.statusLabel.text.startswith("Segmented slices 5-11"), ui.statusLabel.text
    assert max(gaps) < MAX_TICK_GAP_S and loop.longest_callback(started) < MAX_TICK_GAP_S
    assert ended - started > 1.0  # the model really ran in the worker meanwhile
    assert segmentation_nodes(mrml_scene.scene) == [segmentation]
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("lesion")
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    mask = mrml_segments.segment_mask(segmentation, segment_id, volume)
    outside = np.ones(mask.shape, dtype=bool)
    outside[5:12] = False
    assert mask[5:12].any() and not mask[outside].any()
    reference, _ = io.read_mask(demo.DEMO_IMAGE)
    score = dice(mask, reference)
    assert score > 0.7, score
    assert not ui.cancelButton.enabled and ui.progressBar.maximum > 0
    assert_quiet(standin, capsys)


def test_the_run_writes_where_segment_was_pressed(standin, mrml_scene, capsys):
    """Choices changed during a run apply to the next run: the result goes into the segmentation and segment
    chosen when Segment was pressed."""
    page = open_page(standin)
    ui = page.ui
    ui.loadSampleButton.click()
    volume, segmentation = ui.volumeSelector.currentNode(), ui.segmentationSelector.currentNode()
    ui.segmentButton.click()
    ui.segmentationSelector.select(None)  # "Create new segmentation"
    ui.segmentNameLineEdit.type_text("other")
    assert standin.loop.run_until(lambda: ui.segmentButton.enabled, 300), "the run did not end"
    assert ui.statusLabel.text.startswith("Segmented slices 5-11"), ui.statusLabel.text
    assert segmentation_nodes(mrml_scene.scene) == [segmentation]
    assert [segmentation.GetSegmentation().GetNthSegment(n).GetName()
            for n in range(segmentation.GetSegmentation().GetNumberOfSegments())] == ["lesion"]
    assert ui.segmentationSelector.currentNode() is segmentation and ui.volumeSelector.currentNode() is volume
    assert ui.segmentNameLineEdit.text == "other"  # kept for the next run
    assert_quiet(standin, capsys)


def test_load_sample_again_checks_only_the_new_key_boxes(standin, mrml_scene, capsys):
    from MedSAMSegmentLib.scene import key_box_nodes

    page = open_page(standin)
    ui = page.ui
    other = small_volume(mrml_scene, "other")
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "a box on another volume")
    ui.volumeSelector.select(other)
    ui.markupsSelector.check([roi])
    ui.loadSampleButton.click()
    first = ui.markupsSelector.checkedNodes()
    ui.loadSampleButton.click()
    second = ui.markupsSelector.checkedNodes()
    assert len(first) == len(second) == 3 and not set(first) & set(second)
    volume_id = ui.volumeSelector.currentNode().GetID()
    assert all(n.GetNodeReferenceID(key_box_nodes.VOLUME_REFERENCE) == volume_id for n in second)
    assert_quiet(standin, capsys)


# ---------------------------------------------------------------------------------------------------------
# (c) Cancel


def _brats_volume_and_boxes(mrml_scene):
    """A BraTS FLAIR volume with two key boxes 30 slices apart (a run far longer than a cancel takes)."""
    import json

    from MedSAMSegmentLib import io
    from MedSAMSegmentLib.geometry import KeyBox
    from MedSAMSegmentLib.scene import key_box_nodes

    with open(shared_data_path("cases.json"), encoding="utf-8") as handle:
        case = next(c for c in json.load(handle) if c["name"].startswith("brats_"))
    image = io.read_image(shared_data_path(case["image"]))
    volume = make_volume(mrml_scene, image.array, image.ijk_to_ras(), name="flair")
    shape, axis = image.array.shape, int(case["slice_axis"])
    rows, cols = [n for a, n in enumerate(shape) if a != axis]
    box = (cols * 0.3, rows * 0.3, cols * 0.6, rows * 0.6)
    rois = [key_box_nodes.add_roi_for_key_box(mrml_scene.scene, volume, axis, KeyBox(index, box), f"K{index}")
            for index in (shape[axis] // 2 - 15, shape[axis] // 2 + 15)]
    return volume, rois


@pytest.mark.slow
def test_cancel_during_a_run_shows_cancelled_and_writes_nothing(standin, mrml_scene, capsys):
    page = open_page(standin)
    ui, bar = page.ui, page.ui.progressBar
    volume, rois = _brats_volume_and_boxes(mrml_scene)
    ui.volumeSelector.select(volume)
    ui.markupsSelector.check(rois)

    def cancel_and_wait() -> None:
        ui.cancelButton.click()
        assert ui.statusLabel.text == "Cancelling..."
        assert standin.loop.run_until(lambda: ui.segmentButton.enabled, 240)
        assert ui.statusLabel.text == "Cancelled; nothing was changed.", ui.statusLabel.text
        assert not ui.cancelButton.enabled

    # Cancelled at once, before any progress: the bar stops (it is no busy indicator any more).
    ui.segmentButton.click()
    assert bar.maximum == 0 and ui.cancelButton.enabled
    cancel_and_wait()
    assert bar.maximum > 0

    # Cancelled while slices are being segmented.
    ui.segmentButton.click()
    assert standin.loop.run_until(lambda: bar.maximum > 0 or ui.segmentButton.enabled, 240)
    assert not ui.segmentButton.enabled, "the run ended before any progress arrived"
    cancel_and_wait()
    assert segmentation_nodes(mrml_scene.scene) == [] and ui.segmentationSelector.currentNode() is None
    assert_quiet(standin, capsys)


# ---------------------------------------------------------------------------------------------------------
# (d) The parameter node


def test_parameter_node_keeps_the_choices_and_survives_reentering(standin, mrml_scene, capsys):
    first, second = small_volume(mrml_scene, "first"), small_volume(mrml_scene, "second")
    segmentation = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "target")
    page = open_page(standin)
    ui, node = page.ui, page.parameter_node()
    assert ui.volumeSelector.currentNode() is first  # the first volume is chosen when the page opens
    assert ui.checkpointPathLineEdit.enabled  # LiteMedSAM takes a fine-tuned checkpoint too

    ui.strategyComboBox.select("propagate")
    ui.intensityComboBox.select("ct:soft_tissue")
    ui.modelComboBox.select("vit_b")
    assert ui.checkpointPathLineEdit.enabled
    ui.checkpointPathLineEdit.currentPath = "/models/medsam_vit_b.pth"
    ui.deviceComboBox.select("cpu")
    ui.segmentNameLineEdit.type_text("tumour")
    ui.volumeSelector.select(second)
    ui.segmentationSelector.select(segmentation)
    stored = {name: node.GetParameter(name) for name in ("strategy", "intensity", "model", "checkpoint", "device",
                                                         "segmentName")}
    assert stored == {"strategy": "propagate", "intensity": "ct:soft_tissue", "model": "vit_b",
                      "checkpoint": "/models/medsam_vit_b.pth", "device": "cpu", "segmentName": "tumour"}
    assert node.GetNodeReference("inputVolume") is second and node.GetNodeReference("segmentation") is segmentation
    settings = page.widget.settings()
    assert (settings.strategy, settings.intensity, settings.model, settings.checkpoint, settings.device) == (
        "propagate", "ct:soft_tissue", "vit_b", "/models/medsam_vit_b.pth", "cpu")
    # The accuracy options: every one of the command line's, defaulting to its defaults, kept on the node.
    assert settings.accuracy() == SegmentationSettings().accuracy()
    assert ui.accuracyCollapsibleButton.collapsed
    chosen = {"mr_rule": "published", "zoom": "best", "guide": "mean", "refine": "box", "retry": "zoom",
              "slices": "alternate", "box_sizes": "linear"}
    combos = {"mr_rule": ui.mrRuleComboBox, "zoom": ui.zoomComboBox, "guide": ui.guideComboBox,
              "refine": ui.refineComboBox, "retry": ui.retryComboBox, "slices": ui.slicesComboBox,
              "box_sizes": ui.boxSizesComboBox}
    for name, value in chosen.items():
        combos[name].select(value)
        assert node.GetParameter(name) == value
    assert page.widget.settings().accuracy() == chosen

    # Away in the Segment Editor, a script changes one choice; back on the page, the page shows the node.
    ui.openEditorButton.click()
    assert standin.app.main_window.moduleSelector().selectedModule == "SegmentEditor"
    assert not page.module.widget.isEntered
    import MedSAMSegment

    MedSAMSegment.MedSAMSegmentLogic().getParameterNode().device = "cuda"
    standin.select_module("MedSAMSegment")
    assert page.module.widget.isEntered
    shown = (ui.strategyComboBox.currentData, ui.intensityComboBox.currentData, ui.modelComboBox.currentData,
             ui.checkpointPathLineEdit.currentPath, ui.deviceComboBox.currentData, ui.segmentNameLineEdit.text,
             ui.volumeSelector.currentNode(), ui.segmentationSelector.currentNode())
    assert shown == ("propagate", "ct:soft_tissue", "vit_b", "/models/medsam_vit_b.pth", "cuda", "tumour", second,
                     segmentation)
    assert ui.checkpointPathLineEdit.enabled and ui.segmentButton.enabled
    assert_quiet(standin, capsys)


def test_parameter_node_wrapper_stores_as_slicers_does(standin, mrml_scene):
    """The stand-in's ``parameterNodeWrapper`` (copied from Slicer's) on the module's parameter node class."""
    standin.load_module(MODULE_SOURCE)
    from MedSAMSegmentWidgets.ModuleParameters import MedSAMSegmentParameterNode

    import MedSAMSegment

    node = MedSAMSegment.MedSAMSegmentLogic().getParameterNode().parameterNode
    assert node.GetAttribute("ModuleName") == "MedSAMSegment" and node.GetSingletonTag() == "MedSAMSegment"
    wrapped = MedSAMSegmentParameterNode(node)  # writes every default the node lacks
    assert {n: node.GetParameter(n) for n in node.GetParameterNames()} == {
        "inputVolume": "", "segmentation": "", "segmentName": "MedSAM", "strategy": "interpolate",
        "intensity": "auto", "model": "lite", "checkpoint": "", "device": "auto", "mr_rule": "published",
        "zoom": "off", "guide": "off", "refine": "off", "retry": "off", "slices": "every",
        "box_sizes": "rounded"}
    assert wrapped.inputVolume is None and wrapped.segmentName == "MedSAM"
    volume = small_volume(mrml_scene)
    wrapped.inputVolume = volume
    assert node.GetNodeReferenceID("inputVolume") == volume.GetID() and wrapped.inputVolume is volume
    with pytest.raises(ValueError):
        wrapped.strategy = None
    with pytest.raises(TypeError):
        wrapped.segmentation = volume  # not a segmentation node
    node.SetParameter("device", "cpu")  # a script writes the node: the wrapper reads it back
    assert wrapped.device == "cpu"
    mrml_scene.scene.RemoveNode(volume)
    assert wrapped.inputVolume is None


# ---------------------------------------------------------------------------------------------------------
# (e) Closing the scene


def test_closing_the_scene_cancels_and_forgets(standin, mrml_scene, worker_logic, capsys):
    from MedSAMSegmentLib import demo, io

    page = open_page(standin)
    ui = page.ui
    ui.strategyComboBox.select("propagate")
    ui.loadSampleButton.click()
    sample_volume_id = ui.volumeSelector.currentNode().GetID()

    # A run whose result has arrived, unread, when the scene closes: it is never written anywhere.
    ui.segmentButton.click()
    assert wait_for_reply(worker_logic, "result", 300)
    slicer.mrmlScene.Clear(0)
    assert ui.statusLabel.text == "Cancelling..."
    assert worker_logic.background()._sent_tokens == []  # the worker forgot the closed scene's volumes
    assert ui.volumeSelector.currentNode() is None and ui.markupsSelector.nodes() == []
    assert ui.strategyComboBox.currentData == "interpolate"  # the page shows the reset parameter node
    image = io.read_image(demo.DEMO_IMAGE)  # the same image, opened again in the new scene ...
    reloaded = make_volume(mrml_scene, image.array, image.ijk_to_ras(), name="reopened")
    assert reloaded.GetID() == sample_volume_id  # ... reuses the closed sample's node ID
    assert standin.loop.run_until(lambda: not ui.cancelButton.enabled, 60)
    assert ui.statusLabel.text == "Not written: the scene was closed during the run.", ui.statusLabel.text
    assert segmentation_nodes(mrml_scene.scene) == []

    # Closing an idle scene.
    ui.volumeSelector.select(reloaded)
    slicer.mrmlScene.Clear(0)
    assert ui.volumeSelector.currentNode() is None and not ui.segmentButton.enabled
    assert_quiet(standin, capsys)


# ---------------------------------------------------------------------------------------------------------
# (f) The module's self-test


@pytest.mark.slow
def test_self_test_runs_under_the_standin(standin, mrml_scene, capsys):
    standin.load_module(MODULE_SOURCE)
    import MedSAMSegment

    with pytest.raises(AssertionError):  # before startup has completed, no effect is registered
        MedSAMSegment.MedSAMSegmentTest().test_effect_registered()
    standin.app.startup_completed()
    started = time.monotonic()
    MedSAMSegment.MedSAMSegmentTest().runTest()
    with capsys.disabled():
        print(f"\nself-test {time.monotonic() - started:.2f} s")
    assert len(segmentation_nodes(mrml_scene.scene)) == 1  # the sample's, written by the end-to-end test
    assert_quiet(standin, capsys)
