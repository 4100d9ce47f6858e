"""MedSAM Segment: the Slicer module (Qt shell only).

It registers the "MedSAM" Segment Editor effect at startup, offers the same settings for batch use without the
editor, loads the bundled sample, installs the Python dependencies on demand (only when the user starts a run),
and holds the end-to-end self-test; the widget helpers are in ``MedSAMSegmentWidgets``. All work is done by
``MedSAMSegmentLib`` (``effect.py``, ``mrml.py``, ``mrml_markups.py``, ``mrml_segments.py``).
"""

import logging
import os
import sys

import qt
import slicer
from MedSAMSegmentLib.settings import PUBLISHED
from MedSAMSegmentWidgets import ModuleParameters
from MedSAMSegmentWidgets.DependencyInstall import ensureDependencies  # noqa: F401 - also the effect's entry
from MedSAMSegmentWidgets.SelfTest import MedSAMSegmentTest  # noqa: F401 - Slicer finds <module>Test here
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

HELP_TEXT = """
<p>Segment a 3D target from a few <b>key boxes</b> with MedSAM / LiteMedSAM.</p>
<ol>
<li>Load a CT or MR volume, open the <b>Segment Editor</b>, add a segment and pick the <b>MedSAM</b> effect.</li>
<li>Place a box (<i>Place box</i>) or a RECIST-style diameter (<i>Place line</i>) on the target every
3-10 slices, in the axial, sagittal or coronal view.</li>
<li>Press <b>Segment</b>: boxes are interpolated between the first and last key box, every slice in between is
segmented and the selected segment is updated in one undo step, honouring the editor's masking and overwrite
settings. Move or add a key box and press Segment again: only the slices whose box changed are recomputed.</li>
<li>Review the slices listed as flagged (low predicted IoU, sudden area changes).</li>
</ol>
<p>This page runs the same segmentation without the editor (into a segmentation node) and loads a sample case.
The first run asks to install PyTorch (through the PyTorch Utils extension) and the model packages.</p>
"""

ACKNOWLEDGEMENT = """
MedSAM and LiteMedSAM: Ma J. et al., "Segment anything in medical images", Nature Communications 2024, and the
CVPR 2024 MedSAM on Laptop challenge. The sample CT lesion comes from the NIH DeepLesion data set via the MedSAM2
repository.
"""


#
# Module
#


class MedSAMSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSAM Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["MedSAM Segment developers"]
        self.parent.helpText = HELP_TEXT
        self.parent.acknowledgementText = ACKNOWLEDGEMENT
        slicer.app.connect("startupCompleted()", registerEditorEffect)


def registerEditorEffect():
    """Register the MedSAM effect with the Segment Editor (called once Slicer has started), on supported
    Slicer versions only: elsewhere the module page says why, in one line."""
    import qSlicerSegmentationsEditorEffectsPythonQt as editorEffects
    from MedSAMSegmentLib.scene import dependencies

    reason = dependencies.unsupported_reason(slicer.app.applicationVersion, sys.version_info)
    if reason:
        logging.warning(reason)
        return

    instance = editorEffects.qSlicerSegmentEditorScriptedEffect(None)
    path = os.path.join(os.path.dirname(__file__), "SegmentEditorMedSAMLib", "SegmentEditorEffect.py")
    instance.setPythonSource(path.replace("\\", "/"))
    instance.self().register()


#
# Parameter node and widget: wiring only
#


class MedSAMSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._prepared = None
        self._runTarget = None  # (volume, segmentation or None, segment name) chosen when Segment was pressed
        self._flaggedVolume = None  # the volume whose slices the flagged list names
        self.pollTimer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MedSAMSegmentLib.scene import dependencies

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSAMSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSAMSegmentLogic()

        for combo, _name, choices in self.choiceCombos():
            for key, label in choices.items():
                combo.addItem(label, key)

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(50)
        self.pollTimer.connect("timeout()", self.onPollWorker)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.openEditorButton.connect("clicked(bool)", self.onOpenEditor)
        self.ui.flaggedList.connect("itemDoubleClicked(QListWidgetItem*)", self.onFlaggedClicked)
        for combo, _name, _choices in self.choiceCombos():
            combo.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.segmentNameLineEdit.connect("textChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.cancelButton.enabled = False
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        reason = dependencies.unsupported_reason(slicer.app.applicationVersion, sys.version_info)
        self.unsupported = reason
        if reason:
            self.ui.statusLabel.text = reason
            self.ui.introLabel.text = reason
        self.initializeParameterNode()

    def choiceCombos(self):
        return ModuleParameters.choiceCombos(self.ui)

    def cleanup(self):
        """Reload or exit: stop polling and cancel this page's run (a later run may then start at once)."""
        self.removeObservers()
        if self.pollTimer is not None:
            self.pollTimer.stop()
        if self.logic is not None:
            self.logic.effectLogic.background().cancel(owner=self)

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        pass

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self._runTarget = None  # a result that still arrives belongs to the closed scene: never written
        self._flaggedVolume = None
        self.ui.flaggedList.clear()
        self._parameterNode = None

    def onSceneEndClose(self, caller, event):
        self.logic.effectLogic.forget()  # no volume or embedding of the closed scene stays in memory
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self._parameterNode = self.logic.getParameterNode()
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self):
        node = self._parameterNode
        if node is None:
            return
        combos = self.choiceCombos()
        widgets = [self.ui.volumeSelector, self.ui.segmentationSelector, self.ui.segmentNameLineEdit,
                   self.ui.checkpointPathLineEdit, *(combo for combo, _name, _choices in combos)]
        for widget in widgets:
            widget.blockSignals(True)
        self.ui.volumeSelector.setCurrentNode(node.inputVolume)
        self.ui.segmentationSelector.setCurrentNode(node.segmentation)
        self.ui.segmentNameLineEdit.text = node.segmentName
        self.ui.checkpointPathLineEdit.currentPath = node.checkpoint
        for combo, name, _choices in combos:
            combo.setCurrentIndex(max(combo.findData(getattr(node, name)), 0))
        for widget in widgets:
            widget.blockSignals(False)
        self.updateButtons()

    def updateParameterNodeFromGUI(self, *unused):
        node = self._parameterNode
        if node is None:
            return
        node.inputVolume = self.ui.volumeSelector.currentNode()
        node.segmentation = self.ui.segmentationSelector.currentNode()
        node.segmentName = self.ui.segmentNameLineEdit.text or "MedSAM"
        node.checkpoint = self.ui.checkpointPathLineEdit.currentPath or ""
        for combo, name, _choices in self.choiceCombos():
            setattr(node, name, combo.currentData)
        self.updateButtons()

    def settings(self):
        from MedSAMSegmentLib.scene import effect

        node = self._parameterNode
        return effect.EffectSettings(strategy=node.strategy, intensity=node.intensity, model=node.model,
                                     checkpoint=node.checkpoint or None, device=node.device,
                                     **{name: getattr(node, name) for name in PUBLISHED})

    def updateButtons(self):
        node = self._parameterNode
        running = self._prepared is not None
        self.ui.checkpointPathLineEdit.enabled = bool(node)
        self.ui.segmentButton.enabled = bool(node) and node.inputVolume is not None and not running \
            and not self.unsupported
        self.ui.cancelButton.enabled = running

    def markupsNodes(self):
        return list(self.ui.markupsSelector.checkedNodes())

    def onLoadSample(self):
        with slicer.util.tryWithErrorDisplay("Could not load the sample.", waitCursor=True):
            sample = self.logic.loadSample()
            self._parameterNode.inputVolume = sample.volume_node
            self._parameterNode.segmentation = sample.segmentation_node
            self._parameterNode.segmentName = "lesion"
            self.updateGUIFromParameterNode()
            for node in self.ui.markupsSelector.checkedNodes():  # boxes checked before belong to other images
                self.ui.markupsSelector.setCheckState(node, qt.Qt.Unchecked)
            for node in sample.roi_nodes:
                self.ui.markupsSelector.setCheckState(node, qt.Qt.Checked)
            slicer.util.setSliceViewerLayers(background=sample.volume_node, fit=True)

    def onOpenEditor(self):
        slicer.util.selectModule("SegmentEditor")

    def onSegment(self):
        """Start a run on the worker process; returns at once. Problems are one dialog, never an exception."""
        if self._prepared is not None or self.unsupported:
            return
        settings = self.settings()
        if not ensureDependencies(settings.model, slicer.util.mainWindow()):
            return
        try:
            self.logic.effectLogic.use_server(None)  # this page runs here; the effect offers the server
            prepared = self.logic.effectLogic.prepare_run(self._parameterNode.inputVolume, self.markupsNodes(),
                                                          settings)
            self.logic.effectLogic.start(prepared, owner=self)
        except Exception as exc:  # noqa: BLE001 - one dialog; nothing was changed
            slicer.util.errorDisplay(f"MedSAM cannot start: {exc}")
            return
        self._prepared = prepared
        node = self._parameterNode
        self._runTarget = (node.inputVolume, node.segmentation, node.segmentName)
        self.ui.flaggedList.clear()
        self.ui.progressBar.maximum = 0
        self.ui.statusLabel.text = "Segmenting..."
        self.updateButtons()
        self.pollTimer.start()

    def onCancel(self):
        if self._prepared is not None:
            self.logic.effectLogic.background().cancel(owner=self)
            self.ui.statusLabel.text = "Cancelling..."

    def onPollWorker(self):
        """Timer slot: apply the worker's messages. Never raises."""
        try:
            for event in self.logic.effectLogic.background().poll(self):
                self._handleEvent(event)
        except Exception as exc:  # noqa: BLE001 - a slot must not raise into Qt
            logging.exception("MedSAM: handling the worker's reply failed")
            self._endRun(f"MedSAM failed: {exc}; nothing was changed.")
        if self._prepared is None:
            self.pollTimer.stop()

    def _handleEvent(self, event):
        from MedSAMSegmentLib.scene import effect

        if event.kind == "progress":
            self.ui.progressBar.maximum = max(event.total, 1)
            self.ui.progressBar.value = event.done
            self.ui.progressBar.format = f"{event.message}: %v / %m"
        elif event.kind == "cancelled":
            closed = self._runTarget is None  # onSceneStartClose dropped it
            self._endRun("Not written: the scene was closed during the run." if closed else
                         "Cancelled; nothing was changed.")
        elif event.kind == "failed":
            self._endRun(f"MedSAM failed: {event.message}. Nothing was changed.")
            slicer.util.errorDisplay(f"MedSAM segmentation failed; nothing was changed.\n\n{event.message}")
        elif event.kind == "finished":
            if self._runTarget is None:
                self._endRun("Not written: the scene was closed during the run.")
                return
            volume, segmentation, segmentName = self._runTarget
            for node, what in ((volume, "volume"), (segmentation, "segmentation")):
                if node is not None and not slicer.mrmlScene.IsNodePresent(node):
                    self._endRun(f"Not written: the {what} was removed during the run.")
                    return
            outcome = effect.RunOutcome.of(self._prepared, event.result)
            segmentation, _, outcome = effect.write_to_segmentation(
                slicer.mrmlScene, volume, outcome, segmentation, segmentName, slicer.app.applicationLogic())
            if self._parameterNode is not None:
                self._parameterNode.segmentation = segmentation
                self.updateGUIFromParameterNode()
            self.logic.lastSliceAxis = outcome.slice_axis
            self._flaggedVolume = volume  # flagged slices are slices of the volume the run segmented
            self._endRun(outcome.summary())
            for index, reason in outcome.flagged:
                item = qt.QListWidgetItem(f"slice {index}: {reason}")
                item.setData(qt.Qt.UserRole, index)
                self.ui.flaggedList.addItem(item)

    def _endRun(self, status):
        self._prepared = None
        self._runTarget = None
        self.ui.progressBar.maximum = max(self.ui.progressBar.maximum, 1)  # not left a busy indicator
        self.ui.statusLabel.text = status
        self.updateButtons()

    def onFlaggedClicked(self, item):
        volume = self._flaggedVolume
        if volume is not None and volume.GetScene() is not None:
            self.logic.jumpToSlice(volume, self.logic.lastSliceAxis, item.data(qt.Qt.UserRole))


#
# Logic: the module's entry points for scripts (no GUI)
#


class MedSAMSegmentLogic(ScriptedLoadableModuleLogic):
    """Batch use without the Segment Editor; delegates to ``MedSAMSegmentLib.scene.effect``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from MedSAMSegmentLib.scene import effect

        self.effectLogic = effect.shared_logic()
        self.lastSliceAxis = 0

    def getParameterNode(self):
        return ModuleParameters.MedSAMSegmentParameterNode(super().getParameterNode())

    def loadSample(self):
        from MedSAMSegmentLib.scene import sample_scene

        return sample_scene.load_sample(slicer.mrmlScene)

    def segment(self, volumeNode, markupsNodes, segmentationNode=None, segmentName="MedSAM", settings=None,
                progress=None, cancel=None):
        """Segment ``volumeNode`` from ROI/line markups into ``segmentName`` of ``segmentationNode``.

        Returns ``(segmentationNode, segmentId, outcome)``; raises ``engine.Cancelled`` when cancelled (nothing
        is changed then).
        """
        from MedSAMSegmentLib.scene import effect

        settings = settings or effect.EffectSettings()
        result = self.effectLogic.segment_to_segmentation(
            slicer.mrmlScene, volumeNode, markupsNodes, segmentationNode, segmentName, settings,
            progress=progress, cancel=cancel, app_logic=slicer.app.applicationLogic(),
        )
        self.lastSliceAxis = result[2].slice_axis
        return result

    @staticmethod
    def jumpToSlice(volumeNode, sliceAxis, sliceIndex):
        """Centre the slice views on a slice of the volume."""
        import numpy as np
        from MedSAMSegmentLib.scene import mrml

        dims = volumeNode.GetImageData().GetDimensions()[::-1]
        kji = np.array(dims, dtype=float) / 2.0
        kji[sliceAxis] = sliceIndex
        ras = (mrml.volume_ijk_to_world(volumeNode) @ np.r_[kji[::-1], 1.0])[:3]
        slicer.modules.markups.logic().JumpSlicesToLocation(ras[0], ras[1], ras[2], True)
