"""MedSAM Segment: the Slicer module (Qt shell only).

It registers the "MedSAM" Segment Editor effect at startup, offers the same settings for batch use without the
editor, loads the bundled sample, installs the Python dependencies on demand (only when the user starts a run),
and holds the end-to-end self-test. All work is done by ``MedSAMSegmentLib`` (``effect.py``, ``mrml.py``).
"""

import logging
import os
import tempfile

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
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
    """Register the MedSAM effect with the Segment Editor (called once Slicer has started)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as editorEffects

    instance = editorEffects.qSlicerSegmentEditorScriptedEffect(None)
    path = os.path.join(os.path.dirname(__file__), "SegmentEditorMedSAMLib", "SegmentEditorEffect.py")
    instance.setPythonSource(path.replace("\\", "/"))
    instance.self().register()


#
# Dependencies, installed only when the user starts a run
#


def ensureDependencies(model="lite", parent=None):
    """Make sure PyTorch and the model packages can be imported; ask before installing anything.

    Returns True when everything is importable. PyTorch comes from the PyTorch Utils extension (which picks the
    build that matches the GPU driver); the other packages from ``slicer.util.pip_install`` with Slicer's own
    numpy, SimpleITK, etc. pinned by a constraints file.
    """
    from MedSAMSegmentLib import effect

    missing = effect.missing_requirements(model)
    if not missing:
        return True
    message = (
        "MedSAM needs these Python packages, which are not installed yet:\n\n  " + "\n  ".join(missing) + "\n\n"
        "PyTorch is installed by the PyTorch Utils extension, the others with pip. This downloads several hundred "
        "megabytes and can take some minutes. Install now?"
    )
    if not slicer.util.confirmOkCancelDisplay(message, "MedSAM: install dependencies", parent=parent):
        return False
    progress = slicer.util.createProgressDialog(
        parent=parent, labelText="Installing MedSAM dependencies...", maximum=0, windowTitle="MedSAM"
    )
    restartNeeded = False
    try:
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay(
                    "The PyTorch Utils extension is missing. Install 'PyTorch' from the Extensions Manager, "
                    "restart Slicer, and press Segment again."
                )
                return False
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                progress.labelText = "Installing PyTorch (PyTorch Utils)..."
                slicer.app.processEvents()
                if torchLogic.installTorch(askConfirmation=False) is None:
                    slicer.util.errorDisplay("PyTorch was not installed; MedSAM cannot run without it.")
                    return False
        others = [name for name in effect.missing_requirements(model) if name != "torch"]
        if others:
            constraints = os.path.join(tempfile.mkdtemp(prefix="medsam-"), "constraints.txt")
            with open(constraints, "w") as handle:
                handle.write(effect.pip_constraints())
            for name in others:
                progress.labelText = f"Installing {name}..."
                slicer.app.processEvents()
                slicer.util.pip_install([name, "-c", constraints])  # list form: paths with spaces are safe
        import importlib

        importlib.invalidate_caches()
        still = effect.missing_requirements(model)
        if still:
            restartNeeded = True
            slicer.util.warningDisplay(
                "The packages were installed but cannot be imported yet (" + ", ".join(still) + "). "
                "Restart Slicer, then press Segment again."
            )
            return False
    except Exception as exc:  # noqa: BLE001 - shown to the user
        logging.exception("MedSAM dependency installation failed")
        slicer.util.errorDisplay(f"Installing the MedSAM dependencies failed: {exc}\n\nSee the Python console.")
        return False
    finally:
        progress.close()
    if not restartNeeded:
        slicer.util.showStatusMessage("MedSAM dependencies installed.", 3000)
    return True


#
# Widget: wiring only
#


class MedSAMSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._cancelRequested = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MedSAMSegmentLib import effect

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSAMSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSAMSegmentLogic()

        for combo, choices in (
            (self.ui.strategyComboBox, effect.STRATEGY_CHOICES),
            (self.ui.intensityComboBox, effect.INTENSITY_CHOICES),
            (self.ui.modelComboBox, effect.MODEL_CHOICES),
            (self.ui.deviceComboBox, effect.DEVICE_CHOICES),
        ):
            for key, label in choices.items():
                combo.addItem(label, key)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.openEditorButton.connect("clicked(bool)", self.onOpenEditor)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.updateButtons)
        self.ui.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.flaggedList.connect("itemDoubleClicked(QListWidgetItem*)", self.onFlaggedClicked)
        self.ui.cancelButton.enabled = False
        self.updateButtons()

    def cleanup(self):
        self.removeObservers()

    def settings(self):
        from MedSAMSegmentLib import effect

        checkpoint = self.ui.checkpointPathLineEdit.currentPath or None
        return effect.EffectSettings(
            strategy=self.ui.strategyComboBox.currentData,
            intensity=self.ui.intensityComboBox.currentData,
            model=self.ui.modelComboBox.currentData,
            checkpoint=checkpoint,
            device=self.ui.deviceComboBox.currentData,
        )

    def updateButtons(self, *unused):
        self.ui.checkpointPathLineEdit.enabled = self.ui.modelComboBox.currentData == "vit_b"
        self.ui.segmentButton.enabled = self.ui.volumeSelector.currentNode() is not None

    def markupsNodes(self):
        return list(self.ui.markupsSelector.checkedNodes())

    def onLoadSample(self):
        with slicer.util.tryWithErrorDisplay("Could not load the sample.", waitCursor=True):
            sample = self.logic.loadSample()
            self.ui.volumeSelector.setCurrentNode(sample.volume_node)
            self.ui.segmentationSelector.setCurrentNode(sample.segmentation_node)
            self.ui.segmentNameLineEdit.text = "lesion"
            for node in sample.roi_nodes:
                self.ui.markupsSelector.setCheckState(node, qt.Qt.Checked)
            slicer.util.setSliceViewerLayers(background=sample.volume_node, fit=True)

    def onOpenEditor(self):
        slicer.util.selectModule("SegmentEditor")

    def onCancel(self):
        self._cancelRequested = True

    def _progress(self, done, total, message):
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done
        self.ui.progressBar.format = f"{message}: %v / %m"
        slicer.app.processEvents()  # keeps the window alive and the Cancel button clickable

    def onSegment(self):
        from MedSAMSegmentLib.engine import Cancelled

        settings = self.settings()
        if not ensureDependencies(settings.model, slicer.util.mainWindow()):
            return
        self._cancelRequested = False
        self.ui.segmentButton.enabled = False
        self.ui.cancelButton.enabled = True
        self.ui.flaggedList.clear()
        try:
            with slicer.util.tryWithErrorDisplay("MedSAM segmentation failed.", waitCursor=True):
                segmentation, segmentId, outcome = self.logic.segment(
                    self.ui.volumeSelector.currentNode(),
                    self.markupsNodes(),
                    self.ui.segmentationSelector.currentNode(),
                    self.ui.segmentNameLineEdit.text or "MedSAM",
                    settings,
                    progress=self._progress,
                    cancel=lambda: self._cancelRequested,
                )
                self.ui.segmentationSelector.setCurrentNode(segmentation)
                self.ui.statusLabel.text = outcome.summary()
                for index, reason in outcome.flagged:
                    item = qt.QListWidgetItem(f"slice {index}: {reason}")
                    item.setData(qt.Qt.UserRole, index)
                    self.ui.flaggedList.addItem(item)
        except Cancelled:
            self.ui.statusLabel.text = "Cancelled; nothing was changed."
        finally:
            self.ui.cancelButton.enabled = False
            self.updateButtons()

    def onFlaggedClicked(self, item):
        volume = self.ui.volumeSelector.currentNode()
        self.logic.jumpToSlice(volume, self.logic.lastSliceAxis, item.data(qt.Qt.UserRole))


#
# Logic: the module's entry points for scripts (no GUI)
#


class MedSAMSegmentLogic(ScriptedLoadableModuleLogic):
    """Batch use without the Segment Editor; delegates to ``MedSAMSegmentLib.effect``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from MedSAMSegmentLib import effect

        self.effectLogic = effect.shared_logic()
        self.lastSliceAxis = 0

    def loadSample(self):
        from MedSAMSegmentLib import effect

        return effect.load_sample(slicer.mrmlScene)

    def segment(self, volumeNode, markupsNodes, segmentationNode=None, segmentName="MedSAM", settings=None,
                progress=None, cancel=None):
        """Segment ``volumeNode`` from ROI/line markups into ``segmentName`` of ``segmentationNode``.

        Returns ``(segmentationNode, segmentId, outcome)``; raises ``engine.Cancelled`` when cancelled (nothing
        is changed then).
        """
        from MedSAMSegmentLib import effect

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
        from MedSAMSegmentLib import mrml

        dims = volumeNode.GetImageData().GetDimensions()[::-1]
        kji = np.array(dims, dtype=float) / 2.0
        kji[sliceAxis] = sliceIndex
        ras = (mrml.volume_ijk_to_world(volumeNode) @ np.r_[kji[::-1], 1.0])[:3]
        slicer.modules.markups.logic().JumpSlicesToLocation(ras[0], ras[1], ras[2], True)


#
# Self-test: runs the sample end to end inside the Slicer application
#


class MedSAMSegmentTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_effect_registered()
        self.setUp()
        self.test_sample_end_to_end()

    def test_effect_registered(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as editorEffects

        names = [e.name for e in editorEffects.qSlicerSegmentEditorEffectFactory.instance().registeredEffects()]
        self.assertIn("MedSAM", names)

    def test_sample_end_to_end(self):
        import numpy as np
        from MedSAMSegmentLib import effect, mrml
        from MedSAMSegmentLib.metrics import dice

        self.delayDisplay("Loading the sample")
        if effect.missing_requirements("lite"):
            self.skipTest("MedSAM dependencies are not installed; press Segment once to install them")
        logic = MedSAMSegmentLogic()
        sample = logic.loadSample()
        self.delayDisplay("Segmenting with LiteMedSAM")
        segmentation, segmentId, outcome = logic.segment(
            sample.volume_node, sample.roi_nodes, sample.segmentation_node, "lesion",
            effect.EffectSettings(intensity="none"),
        )
        mask = mrml.segment_mask(segmentation, segmentId, sample.volume_node)
        first, last = outcome.slice_range
        self.assertEqual((first, last), (5, 11))
        outside = np.ones(mask.shape, dtype=bool)
        outside[first : last + 1] = False
        self.assertFalse(mask[outside].any(), "voxels written outside the key-box slice range")
        score = dice(mask, sample.reference)
        self.delayDisplay(f"DSC against the reference: {score:.3f}")
        self.assertGreater(score, 0.7)
        self.delayDisplay("Test passed")
