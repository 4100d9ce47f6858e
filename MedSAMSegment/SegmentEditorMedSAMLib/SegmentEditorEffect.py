"""The MedSAM Segment Editor effect: Qt widgets and view events only; the work is in MedSAMSegmentLib.effect."""

import logging
import os

import qt
import slicer
from MedSAMSegmentLib.mrml import SegmentWriteError, SegmentWriter
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

KEY_BOX_ATTRIBUTE = "MedSAM.KeyBox"
PARAMETERS = {  # segment editor node parameter -> default
    "MedSAM.Strategy": "interpolate",
    "MedSAM.Intensity": "auto",
    "MedSAM.Model": "lite",
    "MedSAM.Checkpoint": "",
    "MedSAM.Device": "auto",
}


class EffectSegmentWriter(SegmentWriter):
    """mrml.write_segment_mask's writer through this effect, so the editor's own undo stack holds the change."""

    def __init__(self, scriptedEffect):
        super().__init__(None)
        self.scriptedEffect = scriptedEffect

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

    def modify(self, modifier, mode, extent):
        modes = {
            "add": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd,
            "remove": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove,
        }
        self.scriptedEffect.modifySelectedSegmentByLabelmap(modifier, modes[mode], list(extent))

    def restore(self):
        try:
            slicer.modules.SegmentEditorWidget.editor.undo()
        except Exception:  # noqa: BLE001
            logging.exception("MedSAM: could not undo a partial change; use Undo in the Segment Editor")


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Place key boxes (ROIs) or RECIST lines every few slices, then segment every slice between them."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedSAM"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self._cancelRequested = False
        self._running = False
        self._observedNodes = []
        self._lastSliceAxis = 0

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        path = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "SegmentEditorMedSAM.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self):
        return (
            "<html>Segment a 3D target from key boxes with MedSAM.<br>"
            "<b>Place box</b> or <b>Place line</b> (a RECIST diameter) on the target every 3-10 slices, in one view, "
            "then press <b>Segment</b>. Every slice from the first to the last key box is segmented into the "
            "selected segment in one undo step. Move or add boxes and press Segment again: only changed slices "
            "are recomputed.</html>"
        )

    # -- widgets ----------------------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        from MedSAMSegmentLib import effect

        placeRow = qt.QHBoxLayout()
        self.placeBoxButton = qt.QPushButton("Place box")
        self.placeBoxButton.toolTip = "Click two opposite corners of a box around the target in a slice view"
        self.placeLineButton = qt.QPushButton("Place line")
        self.placeLineButton.toolTip = "Click both ends of the target's longest diameter (RECIST) in a slice view"
        placeRow.addWidget(self.placeBoxButton)
        placeRow.addWidget(self.placeLineButton)
        self.scriptedEffect.addOptionsWidget(placeRow)

        self.keyBoxTable = qt.QTableWidget(0, 4)
        self.keyBoxTable.setHorizontalHeaderLabels(["Name", "Slice", "Size (px)", "Note"])
        self.keyBoxTable.horizontalHeader().setStretchLastSection(True)
        self.keyBoxTable.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.keyBoxTable.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.keyBoxTable.toolTip = "Click a row to jump to its slice; press Delete to remove the key box"
        self.scriptedEffect.addLabeledOptionsWidget("Key boxes:", self.keyBoxTable)
        self.deleteShortcut = qt.QShortcut(qt.QKeySequence(qt.Qt.Key_Delete), self.keyBoxTable)
        self.deleteShortcut.setContext(qt.Qt.WidgetShortcut)

        self.strategyCombo = self._combo(effect.STRATEGY_CHOICES, "Strategy:")
        self.intensityCombo = self._combo(effect.INTENSITY_CHOICES, "Intensity:")
        self.modelCombo = self._combo(effect.MODEL_CHOICES, "Model:")
        import ctk

        self.checkpointPath = ctk.ctkPathLineEdit()
        self.checkpointPath.filters = ctk.ctkPathLineEdit.Files
        self.checkpointPath.nameFilters = ["MedSAM ViT-B checkpoint (*.pth)"]
        self.scriptedEffect.addLabeledOptionsWidget("Checkpoint:", self.checkpointPath)
        self.deviceCombo = self._combo(effect.DEVICE_CHOICES, "Device:")

        buttons = qt.QHBoxLayout()
        self.segmentButton = qt.QPushButton("Segment")
        self.segmentButton.objectName = self.__class__.__name__ + "Apply"
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.enabled = False
        buttons.addWidget(self.segmentButton)
        buttons.addWidget(self.cancelButton)
        self.scriptedEffect.addOptionsWidget(buttons)
        self.progressBar = qt.QProgressBar()
        self.progressBar.visible = False
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)
        self.flaggedList = qt.QListWidget()
        self.flaggedList.toolTip = "Slices to review; click one to jump to it"
        self.scriptedEffect.addLabeledOptionsWidget("Flagged slices:", self.flaggedList)

        self.placeBoxButton.connect("clicked()", lambda: self.startPlacing("vtkMRMLMarkupsROINode"))
        self.placeLineButton.connect("clicked()", lambda: self.startPlacing("vtkMRMLMarkupsLineNode"))
        self.keyBoxTable.connect("cellClicked(int,int)", self.onKeyBoxClicked)
        self.deleteShortcut.connect("activated()", self.onDeleteKeyBox)
        self.flaggedList.connect("itemClicked(QListWidgetItem*)", self.onFlaggedClicked)
        self.segmentButton.connect("clicked()", self.onSegment)
        self.cancelButton.connect("clicked()", self.onCancel)
        for combo in (self.strategyCombo, self.intensityCombo, self.modelCombo, self.deviceCombo):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.checkpointPath.connect("currentPathChanged(QString)", self.updateMRMLFromGUI)

    def _combo(self, choices, label):
        combo = qt.QComboBox()
        for key, text in choices.items():
            combo.addItem(text, key)
        self.scriptedEffect.addLabeledOptionsWidget(label, combo)
        return combo

    def setMRMLDefaults(self):
        for name, value in PARAMETERS.items():
            self.scriptedEffect.setParameterDefault(name, value)

    def updateGUIFromMRML(self):
        for combo, name in (
            (self.strategyCombo, "MedSAM.Strategy"),
            (self.intensityCombo, "MedSAM.Intensity"),
            (self.modelCombo, "MedSAM.Model"),
            (self.deviceCombo, "MedSAM.Device"),
        ):
            wasBlocked = combo.blockSignals(True)
            index = combo.findData(self.scriptedEffect.parameter(name))
            combo.setCurrentIndex(max(index, 0))
            combo.blockSignals(wasBlocked)
        wasBlocked = self.checkpointPath.blockSignals(True)
        self.checkpointPath.currentPath = self.scriptedEffect.parameter("MedSAM.Checkpoint")
        self.checkpointPath.blockSignals(wasBlocked)
        self.checkpointPath.enabled = self.modelCombo.currentData == "vit_b"
        self.segmentButton.enabled = not self._running
        self.updateKeyBoxTable()

    def updateMRMLFromGUI(self, *unused):
        self.scriptedEffect.setParameter("MedSAM.Strategy", self.strategyCombo.currentData)
        self.scriptedEffect.setParameter("MedSAM.Intensity", self.intensityCombo.currentData)
        self.scriptedEffect.setParameter("MedSAM.Model", self.modelCombo.currentData)
        self.scriptedEffect.setParameter("MedSAM.Device", self.deviceCombo.currentData)
        self.scriptedEffect.setParameter("MedSAM.Checkpoint", self.checkpointPath.currentPath)

    def settings(self):
        from MedSAMSegmentLib import effect

        return effect.EffectSettings(
            strategy=self.scriptedEffect.parameter("MedSAM.Strategy"),
            intensity=self.scriptedEffect.parameter("MedSAM.Intensity"),
            model=self.scriptedEffect.parameter("MedSAM.Model"),
            checkpoint=self.scriptedEffect.parameter("MedSAM.Checkpoint") or None,
            device=self.scriptedEffect.parameter("MedSAM.Device"),
        )

    # -- key boxes --------------------------------------------------------------------------------------------
    def sourceVolume(self):
        node = self.scriptedEffect.parameterSetNode()
        return node.GetSourceVolumeNode() if node else None

    def keyBoxNodes(self):
        nodes = []
        for className in ("vtkMRMLMarkupsROINode", "vtkMRMLMarkupsLineNode"):
            for node in slicer.util.getNodesByClass(className):
                if node.GetAttribute(KEY_BOX_ATTRIBUTE) == "1":
                    nodes.append(node)
        return nodes

    def startPlacing(self, className):
        """A new ROI/line node, tagged as a key box, in place mode; the ROI becomes thin across the slice."""
        kind = "box" if className.endswith("ROINode") else "line"
        node = slicer.mrmlScene.AddNewNodeByClass(className, slicer.mrmlScene.GenerateUniqueName(f"MedSAM {kind}"))
        node.SetAttribute(KEY_BOX_ATTRIBUTE, "1")
        node.CreateDefaultDisplayNodes()
        self._observe(node)
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        selectionNode.SetReferenceActivePlaceNodeClassName(className)
        selectionNode.SetActivePlaceNodeID(node.GetID())
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        interactionNode.SetCurrentInteractionMode(interactionNode.Place)

    def _observe(self, node):
        import vtk

        tag = node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *unused: self.updateKeyBoxTable())
        self._observedNodes.append((node, tag))

    def deactivate(self):
        for node, tag in self._observedNodes:
            node.RemoveObserver(tag)
        self._observedNodes = []

    def activate(self):
        for node in self.keyBoxNodes():
            self._observe(node)
        self.updateKeyBoxTable()

    def updateKeyBoxTable(self):
        from MedSAMSegmentLib import effect

        volume = self.sourceVolume()
        nodes = self.keyBoxNodes()
        rows = effect.key_box_rows(nodes, volume) if volume is not None and nodes else []
        self.keyBoxTable.setRowCount(len(rows))
        for r, row in enumerate(rows):
            size = f"{row.width:.0f} x {row.height:.0f}" if row.width is not None else ""
            values = [row.name, "" if row.slice_index is None else str(row.slice_index), size, row.problem]
            for c, value in enumerate(values):
                item = qt.QTableWidgetItem(value)
                item.setData(qt.Qt.UserRole, row.node_id)
                self.keyBoxTable.setItem(r, c, item)

    def _rowNode(self, row):
        item = self.keyBoxTable.item(row, 0)
        return slicer.mrmlScene.GetNodeByID(item.data(qt.Qt.UserRole)) if item else None

    def onKeyBoxClicked(self, row, column):
        node = self._rowNode(row)
        if node is None:
            return
        center = [0.0, 0.0, 0.0]
        if node.IsA("vtkMRMLMarkupsROINode"):
            node.GetCenterWorld(center)
        else:
            a, b = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(0, a)
            node.GetNthControlPointPositionWorld(1, b)
            center = [(x + y) / 2.0 for x, y in zip(a, b)]
        slicer.modules.markups.logic().JumpSlicesToLocation(center[0], center[1], center[2], True)

    def onDeleteKeyBox(self):
        node = self._rowNode(self.keyBoxTable.currentRow())
        if node is not None:
            slicer.mrmlScene.RemoveNode(node)
            self.updateKeyBoxTable()

    def onFlaggedClicked(self, item):
        import MedSAMSegment

        index = item.data(qt.Qt.UserRole)
        MedSAMSegment.MedSAMSegmentLogic.jumpToSlice(self.sourceVolume(), self._lastSliceAxis, index)

    # -- running ----------------------------------------------------------------------------------------------
    def onCancel(self):
        self._cancelRequested = True

    def _progress(self, done, total, message):
        self.progressBar.maximum = max(total, 1)
        self.progressBar.value = done
        self.progressBar.format = f"{message}: %v / %m"
        slicer.app.processEvents()  # keeps the UI alive and Cancel clickable between batches

    def onSegment(self):
        from MedSAMSegmentLib import effect
        from MedSAMSegmentLib.engine import Cancelled

        import MedSAMSegment

        settings = self.settings()
        if not MedSAMSegment.ensureDependencies(settings.model, slicer.util.mainWindow()):
            return
        volume = self.sourceVolume()
        if volume is None:
            slicer.util.errorDisplay("Select a source volume in the Segment Editor first.")
            return
        self._cancelRequested = False
        self._running = True
        self.segmentButton.enabled = False
        self.cancelButton.enabled = True
        self.progressBar.visible = True
        self.flaggedList.clear()
        logic = effect.shared_logic()
        try:
            with slicer.util.tryWithErrorDisplay("MedSAM segmentation failed; the segment was not changed.",
                                                 waitCursor=True):
                outcome = logic.compute(volume, self.keyBoxNodes(), settings, progress=self._progress,
                                        cancel=lambda: self._cancelRequested)
                logic.apply(EffectSegmentWriter(self.scriptedEffect), volume, outcome)
                self._lastSliceAxis = outcome.slice_axis
                self.statusLabel.text = outcome.summary()
                for index, reason in outcome.flagged:
                    item = qt.QListWidgetItem(f"slice {index}: {reason}")
                    item.setData(qt.Qt.UserRole, index)
                    self.flaggedList.addItem(item)
        except Cancelled:
            self.statusLabel.text = "Cancelled; the segment was not changed."
        finally:
            self._running = False
            self.segmentButton.enabled = True
            self.cancelButton.enabled = False
            self.progressBar.visible = False
