"""The MedSAM Segment module's self-test (Reload and Test, and ``slicer_add_python_unittest``): the effect is
registered, and the bundled sample segments end to end through the worker process inside Slicer. The module file
imports the class, so that Slicer finds it as ``MedSAMSegmentTest`` there."""

import time

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class MedSAMSegmentTest(ScriptedLoadableModuleTest):
    """Run in Slicer (Reload and Test): the effect is registered, and the sample segments end to end through
    the worker process, as the effect and the module page run it."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_effect_registered()
        from MedSAMSegmentLib.scene import dependencies

        missing = dependencies.missing_requirements("lite")
        if missing:  # skipTest here would show as "Reload and Test failed"
            self.delayDisplay("Not run: MedSAM's packages are not installed (" + ", ".join(missing) + "); press "
                              "Segment once to install them, then run the test again.")
            return
        self.setUp()
        self.test_sample_end_to_end()

    def test_effect_registered(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as editorEffects

        names = [e.name for e in editorEffects.qSlicerSegmentEditorEffectFactory.instance().registeredEffects()]
        self.assertIn("MedSAM", names)

    def test_sample_end_to_end(self):
        import numpy as np
        from MedSAMSegmentLib.metrics import dice
        from MedSAMSegmentLib.scene import effect, mrml_segments
        from MedSAMSegmentLib.scene.gui_stalls import StallMeter

        self.delayDisplay("Loading the sample")
        from MedSAMSegment import MedSAMSegmentLogic

        logic = MedSAMSegmentLogic()
        sample = logic.loadSample()
        self.delayDisplay("Segmenting with LiteMedSAM in the worker process")
        prepared = logic.effectLogic.prepare_run(sample.volume_node, sample.roi_nodes,
                                                 effect.EffectSettings(intensity="none"))
        logic.effectLogic.start(prepared, owner=self)
        # The GUI thread's gaps less its waits for a CPU: what the run held it up by, however busy the machine.
        finished, stalls = None, StallMeter()
        deadline = time.monotonic() + 300
        while finished is None and time.monotonic() < deadline:
            slicer.app.processEvents()
            for event in logic.effectLogic.background().poll(self):
                if event.kind in ("finished", "failed", "cancelled"):
                    finished = event
            stalls.tick()
            time.sleep(0.02)
        self.assertIsNotNone(finished, "the worker did not answer within 300 s")
        self.assertEqual(finished.kind, "finished", finished.message)
        self.assertLess(stalls.longest, 0.1, "the GUI thread was blocked for 100 ms or more during the run")
        outcome = effect.RunOutcome.of(prepared, finished.result)
        segmentation, segmentId, outcome = effect.write_to_segmentation(
            slicer.mrmlScene, sample.volume_node, outcome, sample.segmentation_node, "lesion",
            slicer.app.applicationLogic())
        mask = mrml_segments.segment_mask(segmentation, segmentId, sample.volume_node)
        first, last = outcome.slice_range
        self.assertEqual((first, last), (5, 11))
        outside = np.ones(mask.shape, dtype=bool)
        outside[first : last + 1] = False
        self.assertFalse(mask[outside].any(), "voxels written outside the key-box slice range")
        score = dice(mask, sample.reference)
        self.delayDisplay(f"DSC against the reference: {score:.3f}")
        self.assertGreater(score, 0.7)
        self.delayDisplay("Test passed")
