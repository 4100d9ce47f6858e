"""Slicer side of issue 6 on a real slicer-core scene: closing the scene mid-run writes nothing and adds no undo
state; a failure inside the write leaves the segment as it was. (Cancel, a model failure mid-run and the
embedding cache after voxel/geometry changes are covered in test_effect.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from MedSAMSegmentLib.scene import effect, mrml_segments
from slicer_scene import mrml_scene_fixture, slicer  # noqa: F401
from stand_in_model import StandInModel
from test_effect import BOXES, SETTINGS, SHAPE, _key_rois, _setup


def _existing_segment(writer, volume):
    before = np.zeros(SHAPE, dtype=bool)
    before[2:9, 10:20, 10:20] = True
    mrml_segments.write_segment_mask(writer, volume, before, 0, (0, SHAPE[0] - 1))
    writer.logic.ClearUndoState()
    return before


def test_closing_the_scene_mid_run_writes_nothing(mrml_scene):
    volume, segmentation, _, writer, ids = _setup(mrml_scene)
    before = _existing_segment(writer, volume)
    rois = _key_rois(mrml_scene, volume, BOXES)
    logic = effect.MedSAMEffectLogic(model_loader=lambda *a: StandInModel(), batch_size=2)
    cleared = []

    def progress(done, total, message):
        if not cleared:
            mrml_scene.scene.Clear(0)  # the user closes the scene while the run is going
            cleared.append(done)

    with pytest.raises(mrml_segments.SegmentWriteError, match="no segmentation is selected"):
        logic.run(writer, volume, rois, SETTINGS, progress=progress)
    # cleared at the first progress report, with slices still to go (the run raised instead of finishing)
    assert len(cleared) == 1 and cleared[0] >= 1
    assert not writer.logic.CanUndo()
    assert mrml_scene.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    # The (now orphaned) segmentation node still holds exactly what it had: nothing was written into it.
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), before)


def test_scene_closed_between_compute_and_apply(mrml_scene):
    volume, segmentation, _, writer, ids = _setup(mrml_scene)
    before = _existing_segment(writer, volume)
    rois = _key_rois(mrml_scene, volume, BOXES)
    logic = effect.MedSAMEffectLogic(model_loader=lambda *a: StandInModel(), batch_size=4)
    outcome = logic.compute(volume, rois, SETTINGS)
    assert outcome.result.mask.any()
    mrml_scene.scene.Clear(0)
    with pytest.raises(mrml_segments.SegmentWriteError):
        logic.apply(writer, volume, outcome)
    assert not outcome.written and not writer.logic.CanUndo()
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), before)
