"""Which slices the expert corrected since MedSAM wrote a segment (edits.WrittenRun), and the wire form of a
refinement request and result."""

from types import SimpleNamespace

import numpy as np
import pytest
from MedSAMSegmentLib.engine import SegmentationResult
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.scene.edits import WrittenRun
from MedSAMSegmentLib.scene.key_box_nodes import RunTarget
from MedSAMSegmentLib.service import (
    ModelSpec,
    ServiceResult,
    corrected_from_wire,
    corrected_to_wire,
    result_from_wire,
    result_header,
)
from MedSAMSegmentLib.settings import SegmentationSettings

SHAPE = (12, 20, 24)


def _written(slice_axis: int = 0, slice_range=(3, 8)) -> WrittenRun:
    written = np.zeros(SHAPE, dtype=bool)
    selector = [slice(None)] * 3
    selector[slice_axis] = slice(slice_range[0], slice_range[1] + 1)
    written[tuple(selector)] = True  # a run that filled its slices
    keys = KeyBoxSet(slice_axis, [KeyBox(slice_range[0], (1, 1, 5, 5)), KeyBox(slice_range[1], (1, 1, 5, 5))])
    prepared = SimpleNamespace(token="vol@1", ijk_to_world=np.eye(4), key_boxes=keys, model=ModelSpec(),
                               settings=SegmentationSettings())
    return WrittenRun.of(prepared, RunTarget("vol", "seg", "s1"), slice_range, written)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_only_the_runs_slices_that_differ_are_corrected(slice_axis):
    run = _written(slice_axis)
    current = run.written.copy()
    assert run.edited_slices(current) == frozenset() and run.corrections(current) == {}
    index = [slice(None)] * 3
    for edited in (4, 7):
        index[slice_axis] = edited
        view = current[tuple(index)]
        view[0, 0] = False  # one voxel erased is a correction
    index[slice_axis] = 10  # outside the run: the expert's own business, never read
    current[tuple(index)] = True
    assert run.edited_slices(current) == frozenset({4, 7})
    corrections = run.corrections(current)
    assert sorted(corrections) == [4, 7]
    index[slice_axis] = 4
    np.testing.assert_array_equal(corrections[4], current[tuple(index)])
    corrections[4][:] = False  # a copy: the segment's array is not changed through it
    assert current[tuple(index)].sum() > 0


def test_slices_corrected_before_a_refinement_stay_corrected():
    run = _written()
    current = run.written.copy()
    current[4, 0, 0] = current[5, 0, 0] = False
    refined = current.copy()
    refined[6] = False  # the refinement re-segmented slice 6
    after = run.after(refined, run.corrections(current))
    assert after.corrected == frozenset({4, 5}) and after.target == run.target and after.token == run.token
    assert after.edited_slices(refined) == frozenset()  # what was written is the new reference ...
    assert sorted(after.corrections(refined)) == [4, 5]  # ... but the expert's slices are still theirs
    refined[8, 2, 2] = False
    assert sorted(after.corrections(refined)) == [4, 5, 8]


def test_a_segment_of_another_shape_gets_one_line():
    with pytest.raises(ValueError, match="press Segment again"):
        _written().edited_slices(np.zeros((3, 4, 5), dtype=bool))


def test_corrected_slices_and_the_refinement_travel_on_the_wire():
    masks = {7: np.eye(4, dtype=bool), 2: np.ones((4, 4), dtype=bool)}
    indices, stack = corrected_to_wire(masks)
    assert indices == [2, 7] and stack.dtype == np.uint8 and stack.shape == (2, 4, 4)
    back = corrected_from_wire(indices, stack)
    assert sorted(back) == [2, 7] and all(np.array_equal(back[i], masks[i]) for i in masks)
    with pytest.raises(ValueError, match="2 corrected slice indices but 1 masks"):
        corrected_from_wire(indices, stack[:1])
    result = SegmentationResult(mask=np.zeros(SHAPE, dtype=bool), slice_axis=0, slice_range=(3, 8),
                                boxes={i: (1.0, 1.0, 5.0, 5.0) for i in range(3, 9)}, iou={}, flagged=[],
                                recomputed=[], encoded=0, filled=[], seconds=1.0)
    for refined in (True, False, None):
        header, arrays = result_header(ServiceResult(result, "CT", "cpu", [], refined, "a note" if refined else ""))
        served = result_from_wire(header, arrays)
        assert served.refined is refined and served.note == ("a note" if refined else "")


def test_undoing_a_refinement_does_not_make_its_slices_corrections():
    run = _written()
    edited = run.written.copy()
    edited[4, 0, 0] = edited[5, 0, 0] = False
    refined = edited.copy()
    refined[6:9, 5:10, 5:10] = False  # slices 6-8 segmented again
    after = run.after(refined, run.corrections(edited))
    assert after.edited_slices(edited) == frozenset()  # the undo brought back the run's 6-8: not edits
    assert sorted(after.corrections(edited)) == [4, 5]
    edited[7, 1, 1] = False  # an edit matching neither write is a correction
    assert sorted(after.corrections(edited)) == [4, 5, 7]
