"""The MedSAM Segment Editor effect: Qt widgets and view events only; the work is in MedSAMSegmentLib.

Runs go to a worker process (``MedSAMSegmentLib.background_run``) and are polled by a timer, so the GUI thread
never waits for the model; the result is written on the GUI thread, in one undo step, into the target captured
when Segment was pressed.
"""

import logging
import os

import qt
import slicer
from MedSAMSegmentLib.mrml_segments import SegmentWriteError, SegmentWriter
from MedSAMSegmentLib.settings import PUBLISHED, SegmentationSettings
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

#: The accuracy options' effect parameters -> their settings names (every accuracy option of the command line).
ACCURACY_PARAMETERS = {"".join(part.title() for part in name.split("_")): name for name in PUBLISHED}
#: Effect parameters (``scriptedEffect.setParameter`` stores them as ``MedSAM.<name>``) -> default.
PARAMETERS = {"Strategy": SegmentationSettings().strategy, "Intensity": "auto", "Model": "lite", "Checkpoint": "",
              "Device": "auto", "Preview": "1",
              **{parameter: getattr(SegmentationSettings(), name) for parameter, name in ACCURACY_PARAMETERS.items()}}
#: How often the GUI reads the worker's messages, milliseconds.
POLL_INTERVAL_MS = 50
#: Quiet time after the last key box change before encoding ahead starts (a drag changes a box many times).
ENCODE_AHEAD_DELAY_MS = 300


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


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Place key boxes (ROIs) or RECIST lines every few slices, then segment every slice between them."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedSAM"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.placement = None  # KeyBoxPlacement, made with the widgets
        self.watcher = None  # KeyBoxWatcher, while the effect is active
        self._sceneCloseTags = []
        self._prepared = None  # the active run's PreparedRun
        self._target = None  # the active run's RunTarget
        self._lastSliceAxis = 0
        self._previewNode = None  # the live preview's segmentation node, while one is shown
        self._written = {}  # (segmentation id, segment id) -> edits.WrittenRun: what the last run wrote there
        self._refining = None  # (WrittenRun, corrected slice indices) while Refine from my edits runs
        self.pollTimer = None

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
            "<b>Place box</b> or <b>Place line</b> (a RECIST diameter) on the target every 3-10 slices, in one view; "
            "boxes are placed one after another until you press the button again or right-click in the view "
            "(Esc deselects the effect, which also stops placing). Then press "
            "<b>Segment</b>: every slice from the first to the last key box is segmented into the selected segment "
            "in one undo step. Each segment keeps its own key boxes. Move or add boxes and press Segment again: "
            "only changed slices are recomputed. Then correct a few slices (paint, erase) and press <b>Refine from "
            "my edits</b>: MedSAM learns from your slices and segments the others again, leaving yours as they "
            "are, in one undo step.</html>"
        )

    # -- widgets ----------------------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        from MedSAMSegmentLib import effect
        from MedSAMSegmentLib.key_box_placement import KeyBoxPlacement

        placeRow = qt.QHBoxLayout()
        self.placeBoxButton = qt.QPushButton("Place box")
        self.placeBoxButton.checkable = True
        self.placeBoxButton.toolTip = "Click two opposite corners of a box around the target in a slice view"
        self.placeLineButton = qt.QPushButton("Place line")
        self.placeLineButton.checkable = True
        self.placeLineButton.toolTip = "Click both ends of the target's longest diameter (RECIST) in a slice view"
        self.takeInButton = qt.QPushButton("Take in markups")
        self.takeInButton.toolTip = "Make ROIs and lines drawn elsewhere on this volume's slices key boxes here"
        placeRow.addWidget(self.placeBoxButton)
        placeRow.addWidget(self.placeLineButton)
        placeRow.addWidget(self.takeInButton)
        self.scriptedEffect.addOptionsWidget(placeRow)

        self.keyBoxTable = qt.QTableWidget(0, 4)
        self.keyBoxTable.setHorizontalHeaderLabels(["Name", "Slice", "Size (px)", "Note"])
        self.keyBoxTable.horizontalHeader().setStretchLastSection(True)
        self.keyBoxTable.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.keyBoxTable.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.keyBoxTable.toolTip = "The selected segment's key boxes: click a row to jump to it, Delete removes it"
        self.scriptedEffect.addLabeledOptionsWidget("Key boxes:", self.keyBoxTable)
        self.deleteShortcut = qt.QShortcut(qt.QKeySequence(qt.Qt.Key_Delete), self.keyBoxTable)
        self.deleteShortcut.setContext(qt.Qt.WidgetShortcut)

        self.strategyCombo = self._combo(effect.STRATEGY_CHOICES, "Strategy:")
        self.intensityCombo = self._combo(effect.INTENSITY_CHOICES, "Intensity:")
        self.modelCombo = self._combo(effect.MODEL_CHOICES, "Model:")
        import ctk

        self.checkpointPath = ctk.ctkPathLineEdit()
        self.checkpointPath.filters = ctk.ctkPathLineEdit.Files
        self.checkpointPath.nameFilters = ["Model checkpoint (*.pth)"]
        self.checkpointPath.toolTip = effect.CHECKPOINT_TIP
        self.scriptedEffect.addLabeledOptionsWidget("Checkpoint:", self.checkpointPath)
        self.deviceCombo = self._combo(effect.DEVICE_CHOICES, "Device:")
        self._setupServerFields()

        accuracy = ctk.ctkCollapsibleButton()
        accuracy.text = "Accuracy options"
        accuracy.toolTip = "The command line's accuracy options; the defaults are what the evaluation chose"
        accuracy.collapsed = True
        accuracyLayout = qt.QFormLayout(accuracy)
        self.accuracyCombos = {}
        for parameter, name in ACCURACY_PARAMETERS.items():
            label, unused = effect.ACCURACY_OPTIONS[name]
            combo = qt.QComboBox()
            for key, text in effect.accuracy_menu(name).items():
                combo.addItem(text, key)
            accuracyLayout.addRow(label + ":", combo)
            self.accuracyCombos[parameter] = combo
        self.scriptedEffect.addOptionsWidget(accuracy)

        buttons = qt.QHBoxLayout()
        self.segmentButton = qt.QPushButton("Segment")
        self.segmentButton.objectName = self.__class__.__name__ + "Apply"
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.enabled = False
        self.previewCheckBox = qt.QCheckBox("Live preview")
        self.previewCheckBox.toolTip = ("While you draw, show the result of the key boxes placed so far (light "
                                        "yellow, not saved); Segment writes the result into the segment")
        self.refineButton = qt.QPushButton("Refine from my edits")
        self.refineButton.toolTip = ("After Segment, paint or erase at least 2 slices of the result; MedSAM adapts "
                                     "its decoder to them and segments the slices you did not touch again (kept "
                                     "only when it predicts your own slices better)")
        buttons.addWidget(self.segmentButton)
        buttons.addWidget(self.refineButton)
        buttons.addWidget(self.cancelButton)
        buttons.addWidget(self.previewCheckBox)
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

        self.encodeAheadTimer = qt.QTimer()
        self.encodeAheadTimer.setSingleShot(True)
        self.encodeAheadTimer.setInterval(ENCODE_AHEAD_DELAY_MS)
        self.encodeAheadTimer.connect("timeout()", self.onEncodeAhead)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollWorker)

        self.placeBoxButton.connect("clicked()", lambda: self.onPlaceClicked("vtkMRMLMarkupsROINode"))
        self.placeLineButton.connect("clicked()", lambda: self.onPlaceClicked("vtkMRMLMarkupsLineNode"))
        self.takeInButton.connect("clicked()", self.onTakeIn)
        self.keyBoxTable.connect("cellClicked(int,int)", self.onKeyBoxClicked)
        self.deleteShortcut.connect("activated()", self.onDeleteKeyBox)
        self.flaggedList.connect("itemClicked(QListWidgetItem*)", self.onFlaggedClicked)
        self.segmentButton.connect("clicked()", self.onSegment)
        self.refineButton.connect("clicked()", self.onRefine)
        self.cancelButton.connect("clicked()", self.onCancel)
        for combo in (self.strategyCombo, self.intensityCombo, self.modelCombo, self.deviceCombo,
                      *self.accuracyCombos.values()):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.checkpointPath.connect("currentPathChanged(QString)", self.updateMRMLFromGUI)
        self.previewCheckBox.connect("toggled(bool)", self.onPreviewToggled)
        self.placement = KeyBoxPlacement(slicer.mrmlScene, slicer.app.applicationLogic(), self.target,
                                         self.updateKeyBoxTable)
        self._sceneCloseTags = [
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, lambda *unused: self.onSceneStartClose()),
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndCloseEvent, lambda *unused: self.onSceneClosed())]

    def _setupServerFields(self):
        """The server's address and token, shown for Device "MedSAM server"; kept in Slicer's settings (never in
        the scene), read by :meth:`applyServer`."""
        from MedSAMSegmentLib.server_address import stored_server

        self.serverFrame = qt.QWidget()
        form = qt.QFormLayout(self.serverFrame)
        self.serverUrlEdit = qt.QLineEdit()
        self.serverUrlEdit.placeholderText = "http://gpu-server:8765"
        self.serverUrlEdit.toolTip = "The address 'medsam-segment serve' printed"
        self.serverTokenEdit = qt.QLineEdit()
        self.serverTokenEdit.echoMode = qt.QLineEdit.Password
        self.serverTokenEdit.placeholderText = "empty for a server on this machine"
        self.serverTokenEdit.toolTip = "The server's token (kept in Slicer's settings, never saved with the scene)"
        form.addRow("Server:", self.serverUrlEdit)
        form.addRow("Token:", self.serverTokenEdit)
        stored = stored_server(qt.QSettings())
        if stored is not None:
            self.serverUrlEdit.text, self.serverTokenEdit.text = stored.url, stored.token or ""
        self.scriptedEffect.addOptionsWidget(self.serverFrame)
        for edit in (self.serverUrlEdit, self.serverTokenEdit):
            edit.connect("editingFinished()", self.onServerEdited)

    def onServerEdited(self):
        from MedSAMSegmentLib.server_address import store_server

        store_server(qt.QSettings(), self.serverUrlEdit.text, self.serverTokenEdit.text)
        self.applyServer()

    def applyServer(self):
        """Send background runs to the server when Device is "MedSAM server", else to the local worker."""
        from MedSAMSegmentLib import effect
        from MedSAMSegmentLib.server_address import SERVER_DEVICE, stored_server

        onServer = self.parameter("Device") == SERVER_DEVICE
        self.serverFrame.visible = onServer
        effect.shared_logic().use_server(stored_server(qt.QSettings()) if onServer else None)

    def _combo(self, choices, label):
        combo = qt.QComboBox()
        for key, text in choices.items():
            combo.addItem(text, key)
        self.scriptedEffect.addLabeledOptionsWidget(label, combo)
        return combo

    def cleanup(self):
        """Remove observers and stop the timer (the effect is being destroyed)."""
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        for tag in self._sceneCloseTags:
            slicer.mrmlScene.RemoveObserver(tag)
        self._sceneCloseTags = []
        if self.pollTimer is not None:
            self.pollTimer.stop()
        self.encodeAheadTimer.stop()
        from MedSAMSegmentLib import effect

        effect.shared_logic().background().cancel(owner=self)  # a later run may then start at once

    def setMRMLDefaults(self):
        for name, value in PARAMETERS.items():
            self.scriptedEffect.setParameterDefault(name, value)

    def updateGUIFromMRML(self):
        for combo, name in (
            (self.strategyCombo, "Strategy"),
            (self.intensityCombo, "Intensity"),
            (self.modelCombo, "Model"),
            (self.deviceCombo, "Device"),
            *((combo, parameter) for parameter, combo in self.accuracyCombos.items()),
        ):
            wasBlocked = combo.blockSignals(True)
            index = combo.findData(self.parameter(name))
            combo.setCurrentIndex(max(index, 0))
            combo.blockSignals(wasBlocked)
        wasBlocked = self.checkpointPath.blockSignals(True)
        self.checkpointPath.currentPath = self.parameter("Checkpoint")
        self.checkpointPath.blockSignals(wasBlocked)
        wasBlocked = self.previewCheckBox.blockSignals(True)
        self.previewCheckBox.checked = self.parameter("Preview") != "0"
        self.previewCheckBox.blockSignals(wasBlocked)
        self.applyServer()
        self.updateKeyBoxTable()

    def updateMRMLFromGUI(self, *unused):
        self.scriptedEffect.setParameter("Strategy", self.strategyCombo.currentData)
        self.scriptedEffect.setParameter("Intensity", self.intensityCombo.currentData)
        self.scriptedEffect.setParameter("Model", self.modelCombo.currentData)
        self.scriptedEffect.setParameter("Device", self.deviceCombo.currentData)
        self.scriptedEffect.setParameter("Checkpoint", self.checkpointPath.currentPath)
        self.scriptedEffect.setParameter("Preview", "1" if self.previewCheckBox.checked else "0")
        for parameter, combo in self.accuracyCombos.items():
            self.scriptedEffect.setParameter(parameter, combo.currentData)
        self.applyServer()

    def parameter(self, name):
        """An effect parameter, or its default when it is not stored: ``scriptedEffect.parameter`` logs an error for
        a parameter that is not on the node, and an empty default (Checkpoint) is never stored
        (qSlicerSegmentEditorAbstractEffect::setCommonParameter skips an empty value that is not there yet)."""
        if not self.scriptedEffect.parameterDefined(name):
            return PARAMETERS[name]
        return self.scriptedEffect.parameter(name)

    def settings(self):
        from MedSAMSegmentLib import effect

        return effect.EffectSettings(
            strategy=self.parameter("Strategy"),
            intensity=self.parameter("Intensity"),
            model=self.parameter("Model"),
            checkpoint=self.parameter("Checkpoint") or None,
            device=self.parameter("Device"),
            preview=self.parameter("Preview") != "0",
            **{name: self.parameter(parameter) for parameter, name in ACCURACY_PARAMETERS.items()},
        )

    # -- activation -------------------------------------------------------------------------------------------
    def activate(self):
        from MedSAMSegmentLib import dependencies, effect
        from MedSAMSegmentLib.key_box_placement import KeyBoxWatcher

        self.pollTimer.start()
        self.watcher = KeyBoxWatcher(slicer.mrmlScene, self.scriptedEffect.parameterSetNode(),
                                     self.onKeyBoxesMayHaveChanged)
        self.updateKeyBoxTable()
        self.applyServer()
        settings = self.settings()
        if settings.model == "lite" and (settings.device == "server" or not dependencies.missing_requirements("lite")):
            effect.shared_logic().background().prepare(settings.model_spec(), owner=self)  # no wait at Segment
        self.encodeAheadTimer.start()  # the boxes already placed: their slices are encoded while the user draws

    def deactivate(self):
        self.encodeAheadTimer.stop()
        self.removePreview()
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self.stopPlacing()
        if self._prepared is not None:
            self.onCancel()
        if self._prepared is None:
            self.pollTimer.stop()

    def onKeyBoxesMayHaveChanged(self):
        if self.scriptedEffect.active():
            self.updateKeyBoxTable()
            self.encodeAheadTimer.start()  # restarted by every change: encodes once the boxes are still

    def onEncodeAhead(self):
        """Encode, while the user goes on drawing, what Segment will need (the model's embeddings do not depend
        on the boxes): the views between the key boxes and a few slices past the newest one."""
        from MedSAMSegmentLib import dependencies, effect, key_box_nodes

        if self._prepared is not None or not self.scriptedEffect.active():
            return
        settings = self.settings()
        if settings.device != "server" and dependencies.missing_requirements(settings.model):
            return
        try:
            target = key_box_nodes.target_from_editor(self.scriptedEffect.parameterSetNode())
        except key_box_nodes.TargetError:
            return
        nodes = key_box_nodes.key_box_nodes(slicer.mrmlScene, target)
        volume = slicer.mrmlScene.GetNodeByID(target.volume_id)
        if not nodes:
            self.removePreview()
        if nodes and volume is not None:
            newest = max(nodes, key=lambda node: node.GetMTime())
            try:
                again = settings.preview and self._previewNode is None  # a preview is wanted and none is shown
                effect.shared_logic().encode_ahead(volume, nodes, settings, newest, owner=self, again=again)
            except Exception as exc:  # noqa: BLE001 - a guess that cannot start is dropped; Segment reports problems
                logging.info("MedSAM: not encoding ahead: %s", exc)

    def onPreviewToggled(self, checked):
        self.updateMRMLFromGUI()
        if checked:
            self.encodeAheadTimer.start()
        else:
            self.removePreview()

    def showPreview(self, served, encoded):
        """Show the worker's preview of the key boxes so far in the preview node (never in the segment); a preview
        that no longer fits (the source volume changed meanwhile) is dropped: the next one replaces it."""
        from MedSAMSegmentLib import key_box_nodes, mrml_preview

        try:
            target = key_box_nodes.target_from_editor(self.scriptedEffect.parameterSetNode())
        except key_box_nodes.TargetError:
            return
        volume = slicer.mrmlScene.GetNodeByID(target.volume_id)
        if volume is None or not self.settings().preview:
            return
        try:
            self._previewNode = mrml_preview.show_preview(slicer.mrmlScene, volume, served.result,
                                                          self._previewNode, slicer.app.applicationLogic())
        except Exception as exc:  # noqa: BLE001 - a preview is a courtesy: never an error dialog
            logging.info("MedSAM: preview not shown: %s", exc)
            self.removePreview()
            return
        first, last = served.result.slice_range
        self.statusLabel.text = (f"Preview of slices {first}-{last} in light yellow ({encoded} slice views encoded "
                                 "ahead); press Segment to write it into the segment.")

    def removePreview(self):
        from MedSAMSegmentLib import mrml_preview

        mrml_preview.remove_preview(slicer.mrmlScene, self._previewNode)
        self._previewNode = None

    def interactionNodeModified(self, interactionNode):
        """Keep the effect selected in Place mode (the C++ default deselects it); boxes are placed one after
        another (KeyBoxPlacement)."""
        self.placement.interaction_mode_changed(interactionNode)
        self._updatePlaceButtons()

    # -- key boxes --------------------------------------------------------------------------------------------
    def target(self):
        """The selected volume, segmentation and segment, or None (with the reason in the status line)."""
        from MedSAMSegmentLib import key_box_nodes

        try:
            return key_box_nodes.target_from_editor(self.scriptedEffect.parameterSetNode())
        except key_box_nodes.TargetError as exc:
            self.statusLabel.text = str(exc)[0].upper() + str(exc)[1:] + "."
            return None

    def keyBoxNodes(self, target=None):
        from MedSAMSegmentLib import key_box_nodes

        target = target or self.target()
        return key_box_nodes.key_box_nodes(slicer.mrmlScene, target) if target else []

    def onPlaceClicked(self, className):
        self.placement.toggle(className)
        self._updatePlaceButtons()

    def stopPlacing(self):
        """Leave Place mode; an unfinished key box node is removed."""
        self.placement.stop()
        self._updatePlaceButtons()

    def _updatePlaceButtons(self):
        for button, className in ((self.placeBoxButton, "vtkMRMLMarkupsROINode"),
                                  (self.placeLineButton, "vtkMRMLMarkupsLineNode")):
            button.checked = self.placement.placing_class == className

    def onTakeIn(self):
        from MedSAMSegmentLib import key_box_nodes

        target = self.target()
        if target is not None:
            count = key_box_nodes.take_in(key_box_nodes.take_in_candidates(slicer.mrmlScene, target), target)
            self.statusLabel.text = f"Took in {count} markups as key boxes of the selected segment."
            self.updateKeyBoxTable()

    def updateKeyBoxTable(self):
        from MedSAMSegmentLib import key_box_nodes

        target = self.target()
        volume = slicer.mrmlScene.GetNodeByID(target.volume_id) if target else None
        nodes = self.keyBoxNodes(target) if target else []
        rows = key_box_nodes.key_box_rows(nodes, volume) if volume is not None and nodes else []
        self.keyBoxTable.setRowCount(len(rows))
        for r, row in enumerate(rows):
            size = f"{row.width:.0f} x {row.height:.0f}" if row.width is not None else ""
            values = [row.name, "" if row.slice_index is None else str(row.slice_index), size, row.problem]
            for c, value in enumerate(values):
                item = qt.QTableWidgetItem(value)
                item.setData(qt.Qt.UserRole, row.node_id)
                self.keyBoxTable.setItem(r, c, item)
        others = len(key_box_nodes.take_in_candidates(slicer.mrmlScene, target)) if target else 0
        self.takeInButton.text = f"Take in {others} markups" if others else "Take in markups"
        self.takeInButton.enabled = others > 0 and target is not None

    def _rowNode(self, row):
        item = self.keyBoxTable.item(row, 0)
        return slicer.mrmlScene.GetNodeByID(item.data(qt.Qt.UserRole)) if item else None

    def onKeyBoxClicked(self, row, column):
        from MedSAMSegmentLib.key_box_placement import markups_center_ras

        node = self._rowNode(row)
        if node is not None:
            slicer.modules.markups.logic().JumpSlicesToLocation(*markups_center_ras(node), True)

    def onDeleteKeyBox(self):
        node = self._rowNode(self.keyBoxTable.currentRow())
        if node is not None:
            slicer.mrmlScene.RemoveNode(node)
            self.updateKeyBoxTable()

    def onFlaggedClicked(self, item):
        import MedSAMSegment

        volume = slicer.mrmlScene.GetNodeByID(self._target.volume_id) if self._target else None
        if volume is None:
            target = self.target()
            volume = slicer.mrmlScene.GetNodeByID(target.volume_id) if target else None
        if volume is not None:
            MedSAMSegment.MedSAMSegmentLogic.jumpToSlice(volume, self._lastSliceAxis, item.data(qt.Qt.UserRole))

    # -- running ----------------------------------------------------------------------------------------------
    def onSegment(self):
        """Start a run on the worker process; returns at once. Every problem is one dialog, never an exception."""
        from MedSAMSegmentLib import effect

        import MedSAMSegment

        if self._prepared is not None:
            return
        settings = self.settings()
        try:  # a server needs nothing more here: the model runs there
            ready = settings.device == "server" or MedSAMSegment.ensureDependencies(settings.model,
                                                                                    slicer.util.mainWindow())
        except Exception as exc:  # noqa: BLE001 - a slot must not raise; one dialog
            logging.exception("MedSAM: checking the dependencies failed")
            slicer.util.errorDisplay(f"MedSAM cannot check its Python packages: {exc}")
            return
        if not ready:
            return
        target = self.target()
        if target is None:
            slicer.util.errorDisplay(self.statusLabel.text)
            return
        self.stopPlacing()
        logic = effect.shared_logic()
        try:
            volume = slicer.mrmlScene.GetNodeByID(target.volume_id)
            prepared = logic.prepare_run(volume, self.keyBoxNodes(target), settings)
            logic.start(prepared, owner=self)
        except Exception as exc:  # noqa: BLE001 - shown as one dialog; nothing was changed
            logging.info("MedSAM run not started: %s", exc)
            slicer.util.errorDisplay(f"MedSAM cannot start: {exc}")
            return
        self._prepared, self._target = prepared, target
        self._startedRun("Segmenting...")

    def onRefine(self):
        """Start Refine from my edits on the worker for the selected segment; returns at once. A problem (no run
        to refine, too few corrected slices) is one dialog, and nothing changes."""
        from MedSAMSegmentLib import effect, mrml_segments

        if self._prepared is not None:
            return
        target = self.target()
        if target is None:
            slicer.util.errorDisplay(self.statusLabel.text)
            return
        written = self._written.get((target.segmentation_id, target.segment_id))
        if written is None:
            slicer.util.errorDisplay("Press Segment first: Refine from my edits learns from your corrections of "
                                     "the MedSAM result in the selected segment.")
            return
        self.stopPlacing()
        logic = effect.shared_logic()
        try:
            volume = slicer.mrmlScene.GetNodeByID(target.volume_id)
            segmentation = slicer.mrmlScene.GetNodeByID(target.segmentation_id)
            current = mrml_segments.segment_mask(segmentation, target.segment_id, volume)
            corrected = logic.corrections(written, volume, current)
            logic.start_refine(written, volume, corrected, owner=self)
        except Exception as exc:  # noqa: BLE001 - shown as one dialog; nothing was changed
            logging.info("MedSAM refinement not started: %s", exc)
            slicer.util.errorDisplay(f"MedSAM cannot refine: {exc}")
            return
        self._prepared, self._target, self._refining = written, target, (written, frozenset(corrected))
        self._startedRun(f"Refining from your {len(corrected)} corrected slices...")

    def _startedRun(self, status):
        self.segmentButton.enabled = False
        self.refineButton.enabled = False
        self.cancelButton.enabled = True
        self.progressBar.visible = True
        self.progressBar.maximum = 0  # busy until the first progress message
        self.flaggedList.clear()
        self.statusLabel.text = status
        self.pollTimer.start()

    def onCancel(self):
        from MedSAMSegmentLib import effect

        if self._prepared is not None:
            effect.shared_logic().background().cancel(owner=self)
            self.statusLabel.text = "Cancelling..."

    def onSceneStartClose(self):
        """The scene is closing: the active run's result belongs to it and is never written (a scene loaded next
        can have the same node and segment IDs)."""
        self._target = None
        self.onCancel()

    def onSceneClosed(self):
        from MedSAMSegmentLib import effect

        self.stopPlacing()
        self._previewNode = None  # gone with the scene
        self._written = {}
        effect.shared_logic().forget()

    def onPollWorker(self):
        """Timer slot: apply the worker's messages. Never raises."""
        from MedSAMSegmentLib import effect

        try:
            for event in effect.shared_logic().background().poll(self):
                self._handleEvent(event)
        except Exception as exc:  # noqa: BLE001 - a slot must not raise into Qt
            logging.exception("MedSAM: handling the worker's reply failed")
            self._endRun(f"MedSAM failed: {exc}; the segment was not changed.")
            slicer.util.errorDisplay(f"MedSAM failed: {exc}\n\nThe segment was not changed.")
        if self._prepared is None and not self.scriptedEffect.active():
            self.pollTimer.stop()

    def _handleEvent(self, event):
        if event.kind == "progress":
            self.progressBar.maximum = max(event.total, 1)
            self.progressBar.value = event.done
            self.progressBar.format = f"{event.message}: %v / %m"
        elif event.kind == "status" and self._prepared is None:  # a run's own status line wins while it runs
            self.statusLabel.text = event.message[0].upper() + event.message[1:] + "."
        elif event.kind == "encoded" and self._prepared is None:
            self.statusLabel.text = f"Ready to segment ({event.done} slice views encoded ahead)."
            if event.result is not None:
                self.showPreview(event.result, event.done)
        elif event.kind == "cancelled":
            self._endRun(event.message if self._target is not None else
                         "Not written: the scene was closed during the run.")
        elif event.kind == "failed":
            self._endRun(f"MedSAM failed: {event.message}. The segment was not changed.")
            slicer.util.errorDisplay(f"MedSAM segmentation failed; the segment was not changed.\n\n{event.message}")
        elif event.kind == "finished":
            self._finish(event.result)

    def _finish(self, served):
        from MedSAMSegmentLib import edits, effect, key_box_nodes, mrml_segments

        prepared, target, refining = self._prepared, self._target, self._refining
        if target is None:
            self._endRun("Not written: the scene was closed during the run.")
            return
        problem = key_box_nodes.target_problem(slicer.mrmlScene, self.scriptedEffect.parameterSetNode(), target)
        if problem is not None:
            again = "Refine from my edits" if refining else "Segment"
            self._endRun(f"Not written: {problem}. Nothing was changed; select the segment and press {again} again "
                         "(the image is cached, so it is quick).")
            return
        if refining:
            outcome = effect.RunOutcome.of_refinement(refining[0], served)
            if not served.refined:  # the segment already holds the run with the expert's slices
                self._endRun(outcome.summary())
                return
        else:
            outcome = effect.RunOutcome.of(prepared, served)
        volume = slicer.mrmlScene.GetNodeByID(target.volume_id)
        try:
            effect.MedSAMEffectLogic.apply(EffectSegmentWriter(self.scriptedEffect), volume, outcome)
        except Exception as exc:  # noqa: BLE001 - one dialog; the writer restored the segmentation
            logging.exception("MedSAM: writing the segment failed")
            self._endRun(f"Writing the segment failed: {exc}. The segment was not changed.")
            slicer.util.errorDisplay(f"Writing the segment failed; the segment was not changed.\n\n{exc}")
            return
        self._lastSliceAxis = outcome.slice_axis
        segmentation = slicer.mrmlScene.GetNodeByID(target.segmentation_id)
        now = mrml_segments.segment_mask(segmentation, target.segment_id, volume)  # as written, masking included
        self._written[(target.segmentation_id, target.segment_id)] = (
            refining[0].after(now, refining[1]) if refining else edits.WrittenRun.of(prepared, target,
                                                                                     outcome.slice_range, now))
        self.removePreview()
        self._endRun(outcome.summary())
        for index, reason in outcome.flagged:
            item = qt.QListWidgetItem(f"slice {index}: {reason}")
            item.setData(qt.Qt.UserRole, index)
            self.flaggedList.addItem(item)

    def _endRun(self, status):
        self._prepared = None
        self._refining = None
        self.statusLabel.text = status
        self.segmentButton.enabled = True
        self.refineButton.enabled = True
        self.cancelButton.enabled = False
        self.progressBar.visible = False
