"""The MedSAM Segment Editor effect: Qt widgets and view events only; the work is in MedSAMSegmentLib.

Runs go to a worker process (``MedSAMSegmentLib.remote.background_run``) and are polled by a timer, so the GUI thread
never waits for the model; the result is written on the GUI thread, in one undo step, into the target captured
when Segment was pressed.
"""

import logging
import os

import qt
import slicer
from MedSAMSegmentWidgets import EffectOptions
from MedSAMSegmentWidgets.EffectSegmentWriter import EffectSegmentWriter
from MedSAMSegmentWidgets.EncodeAhead import EncodeAhead
from MedSAMSegmentWidgets.KeyBoxPanel import KeyBoxPanel
from MedSAMSegmentWidgets.RunPanel import RunPanel
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

#: How often the GUI reads the worker's messages, milliseconds.
POLL_INTERVAL_MS = 50


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Place key boxes (ROIs) or RECIST lines every few slices, then segment every slice between them."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedSAM"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.watcher = None  # KeyBoxWatcher, while the effect is active
        self._sceneCloseTags = []
        self._prepared = None  # the active run's PreparedRun
        self._target = None  # the active run's RunTarget
        self._lastSliceAxis = 0
        self.ahead = None  # EncodeAhead, made with the widgets
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
        self.keyBoxes = KeyBoxPanel(self.target, self.showStatus)
        for name in ("placeBoxButton", "placeLineButton", "takeInButton", "deleteShortcut", "placement"):
            setattr(self, name, getattr(self.keyBoxes, name))
        self.keyBoxTable = self.keyBoxes.table
        self.scriptedEffect.addOptionsWidget(self.keyBoxes.placeRow)
        self.scriptedEffect.addLabeledOptionsWidget("Key boxes:", self.keyBoxTable)
        self.options = EffectOptions.EffectOptions(self.scriptedEffect)
        for name in ("strategyCombo", "intensityCombo", "modelCombo", "checkpointPath", "deviceCombo",
                     "serverFrame", "serverUrlEdit", "serverTokenEdit", "accuracyCombos", "previewCheckBox"):
            setattr(self, name, getattr(self.options, name))

        self.panel = RunPanel(self.scriptedEffect, self.previewCheckBox, self.jumpToFlagged)
        for name in ("segmentButton", "refineButton", "cancelButton", "progressBar", "statusLabel", "flaggedList"):
            setattr(self, name, getattr(self.panel, name))

        self.ahead = EncodeAhead(self.scriptedEffect, self, self.settings, lambda: self._prepared is not None,
                                 self.showStatus)
        self.encodeAheadTimer = self.ahead.timer
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollWorker)

        self.segmentButton.connect("clicked()", self.onSegment)
        self.refineButton.connect("clicked()", self.onRefine)
        self.cancelButton.connect("clicked()", self.onCancel)
        self.previewCheckBox.connect("toggled(bool)", self.onPreviewToggled)
        self._sceneCloseTags = [
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, lambda *unused: self.onSceneStartClose()),
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndCloseEvent, lambda *unused: self.onSceneClosed())]

    def showStatus(self, text):
        self.statusLabel.text = text

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
        self.ahead.timer.stop()
        from MedSAMSegmentLib.scene import effect

        effect.shared_logic().background().cancel(owner=self)  # a later run may then start at once

    def setMRMLDefaults(self):
        EffectOptions.setDefaults(self.scriptedEffect)

    def updateGUIFromMRML(self):
        self.options.load()
        self.keyBoxes.update()

    def updateMRMLFromGUI(self, *unused):
        self.options.store()

    def parameter(self, name):
        return EffectOptions.parameter(self.scriptedEffect, name)

    def settings(self):
        return EffectOptions.settings(self.scriptedEffect)

    # -- activation -------------------------------------------------------------------------------------------
    def activate(self):
        from MedSAMSegmentLib.scene import dependencies, effect
        from MedSAMSegmentLib.scene.key_box_placement import KeyBoxWatcher

        self.pollTimer.start()
        self.watcher = KeyBoxWatcher(slicer.mrmlScene, self.scriptedEffect.parameterSetNode(),
                                     self.onKeyBoxesMayHaveChanged)
        self.updateKeyBoxTable()
        self.options.applyServer()
        settings = self.settings()
        if settings.model == "lite" and (settings.device == "server" or not dependencies.missing_requirements("lite")):
            effect.shared_logic().background().prepare(settings.model_spec(), owner=self)  # no wait at Segment
        self.ahead.schedule()  # the boxes already placed: their slices are encoded while the user draws

    def deactivate(self):
        self.ahead.stop()
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
            self.ahead.schedule()  # restarted by every change: encodes once the boxes are still

    def onPreviewToggled(self, checked):
        self.updateMRMLFromGUI()
        if checked:
            self.ahead.schedule()
        else:
            self.ahead.remove()

    def interactionNodeModified(self, interactionNode):
        """Keep the effect selected in Place mode (the C++ default deselects it); boxes are placed one after
        another (KeyBoxPlacement)."""
        self.keyBoxes.interactionModeChanged(interactionNode)

    # -- key boxes --------------------------------------------------------------------------------------------
    def target(self):
        """The selected volume, segmentation and segment, or None (with the reason in the status line)."""
        from MedSAMSegmentLib.scene import key_box_nodes

        try:
            return key_box_nodes.target_from_editor(self.scriptedEffect.parameterSetNode())
        except key_box_nodes.TargetError as exc:
            self.statusLabel.text = str(exc)[0].upper() + str(exc)[1:] + "."
            return None

    def keyBoxNodes(self, target=None):
        return self.keyBoxes.nodes(target)

    def stopPlacing(self):
        self.keyBoxes.stopPlacing()

    def updateKeyBoxTable(self):
        self.keyBoxes.update()

    def jumpToFlagged(self, sliceIndex):
        import MedSAMSegment

        volume = slicer.mrmlScene.GetNodeByID(self._target.volume_id) if self._target else None
        if volume is None:
            target = self.target()
            volume = slicer.mrmlScene.GetNodeByID(target.volume_id) if target else None
        if volume is not None:
            MedSAMSegment.MedSAMSegmentLogic.jumpToSlice(volume, self._lastSliceAxis, sliceIndex)

    # -- running ----------------------------------------------------------------------------------------------
    def onSegment(self):
        """Start a run on the worker process; returns at once. Every problem is one dialog, never an exception."""
        from MedSAMSegmentLib.scene import effect

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
        from MedSAMSegmentLib.scene import effect, mrml_segments

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
        self.panel.started(status)
        self.pollTimer.start()

    def onCancel(self):
        from MedSAMSegmentLib.scene import effect

        if self._prepared is not None:
            effect.shared_logic().background().cancel(owner=self)
            self.statusLabel.text = "Cancelling..."

    def onSceneStartClose(self):
        """The scene is closing: the active run's result belongs to it and is never written (a scene loaded next
        can have the same node and segment IDs)."""
        self._target = None
        self.onCancel()

    def onSceneClosed(self):
        from MedSAMSegmentLib.scene import effect

        self.stopPlacing()
        self.ahead.forget()
        self._written = {}
        effect.shared_logic().forget()

    def onPollWorker(self):
        """Timer slot: apply the worker's messages. Never raises."""
        from MedSAMSegmentLib.scene import effect

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
            self.panel.progress(event.done, event.total, event.message)
        elif event.kind == "status" and self._prepared is None:  # a run's own status line wins while it runs
            self.statusLabel.text = event.message[0].upper() + event.message[1:] + "."
        elif event.kind == "encoded" and self._prepared is None:
            self.statusLabel.text = f"Ready to segment ({event.done} slice views encoded ahead)."
            if event.result is not None:
                self.ahead.show(event.result, event.done)
        elif event.kind == "cancelled":
            self._endRun(event.message if self._target is not None else
                         "Not written: the scene was closed during the run.")
        elif event.kind == "failed":
            self._endRun(f"MedSAM failed: {event.message}. The segment was not changed.")
            slicer.util.errorDisplay(f"MedSAM segmentation failed; the segment was not changed.\n\n{event.message}")
        elif event.kind == "finished":
            self._finish(event.result)

    def _finish(self, served):
        from MedSAMSegmentLib.scene import edits, effect, key_box_nodes, mrml_segments

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
        self.ahead.remove()
        self._endRun(outcome.summary(), outcome.flagged)

    def _endRun(self, status, flagged=()):
        self._prepared = None
        self._refining = None
        self.panel.ended(status, flagged)
