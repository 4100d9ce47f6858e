"""The MedSAM effect's encoding ahead and live preview: once the key boxes are still, the worker encodes the views
Segment will need (the model's embeddings do not depend on the boxes) and, with Live preview on, shows the result
of the boxes so far in its own light-yellow segmentation node (never in the user's segment, never saved). Qt and
MRML only; the requests are ``MedSAMSegmentLib.scene.effect``'s, the node ``mrml_preview``'s."""

import logging

import qt
import slicer

#: Quiet time after the last key box change before encoding ahead starts (a drag changes a box many times).
ENCODE_AHEAD_DELAY_MS = 300


class EncodeAhead:
    """``scriptedEffect`` is the effect's adaptor, ``owner`` the effect (whose background requests these are),
    ``settings()`` its ``EffectSettings``, ``running()`` whether a run of its own is on, and ``showStatus(text)``
    its status line. ``previewNode`` is the preview's node while one is shown."""

    def __init__(self, scriptedEffect, owner, settings, running, showStatus):
        self.scriptedEffect = scriptedEffect
        self.owner = owner
        self.settings = settings
        self.running = running
        self.showStatus = showStatus
        self.previewNode = None
        self.timer = qt.QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(ENCODE_AHEAD_DELAY_MS)
        self.timer.connect("timeout()", self.encode)

    def schedule(self):
        """Encode once the boxes have been still for ENCODE_AHEAD_DELAY_MS (every call restarts the wait)."""
        self.timer.start()

    def _target_volume(self):
        from MedSAMSegmentLib.scene import key_box_nodes

        try:
            target = key_box_nodes.target_from_editor(self.scriptedEffect.parameterSetNode())
        except key_box_nodes.TargetError:
            return None, None
        return target, slicer.mrmlScene.GetNodeByID(target.volume_id)

    def encode(self):
        """Encode the views between the key boxes and a few slices past the newest one (and decode them for the
        preview when one is wanted and none is shown). Nothing happens during a run, while the effect is not
        active, or when the model's packages are missing; a request that cannot start is dropped."""
        from MedSAMSegmentLib.scene import dependencies, effect, key_box_nodes

        if self.running() or not self.scriptedEffect.active():
            return
        settings = self.settings()
        if settings.device != "server" and dependencies.missing_requirements(settings.model):
            return
        target, volume = self._target_volume()
        if target is None:
            return
        nodes = key_box_nodes.key_box_nodes(slicer.mrmlScene, target)
        if not nodes:
            self.remove()
        if nodes and volume is not None:
            newest = max(nodes, key=lambda node: node.GetMTime())
            try:
                again = settings.preview and self.previewNode is None
                effect.shared_logic().encode_ahead(volume, nodes, settings, newest, owner=self.owner, again=again)
            except Exception as exc:  # noqa: BLE001 - a guess that cannot start is dropped; Segment reports problems
                logging.info("MedSAM: not encoding ahead: %s", exc)

    def show(self, served, encoded):
        """Show the worker's preview ``served`` when it is wanted and the target is still there; a preview that no
        longer fits (the source volume changed meanwhile) is removed: the next one replaces it."""
        from MedSAMSegmentLib.scene import mrml_preview

        unused, volume = self._target_volume()
        if volume is None or not self.settings().preview:
            return
        try:
            self.previewNode = mrml_preview.show_preview(slicer.mrmlScene, volume, served.result, self.previewNode,
                                                         slicer.app.applicationLogic())
        except Exception as exc:  # noqa: BLE001 - a preview is a courtesy: never an error dialog
            logging.info("MedSAM: preview not shown: %s", exc)
            self.remove()
            return
        first, last = served.result.slice_range
        self.showStatus(f"Preview of slices {first}-{last} in light yellow ({encoded} slice views encoded ahead); "
                        "press Segment to write it into the segment.")

    def remove(self):
        from MedSAMSegmentLib.scene import mrml_preview

        mrml_preview.remove_preview(slicer.mrmlScene, self.previewNode)
        self.previewNode = None

    def stop(self):
        """Stop waiting to encode and remove the preview (the effect was deselected)."""
        self.timer.stop()
        self.remove()

    def forget(self):
        """The scene was closed: the preview node went with it."""
        self.previewNode = None
