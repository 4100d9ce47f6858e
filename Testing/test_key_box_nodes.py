"""key_box_nodes.py on a real slicer-core scene: key boxes belong to one target, targets are captured and checked."""

from __future__ import annotations

import numpy as np
import pytest
from MedSAMSegmentLib.geometry import KeyBox
from MedSAMSegmentLib.scene import effect, key_box_nodes, mrml_markups, mrml_segments
from MedSAMSegmentLib.scene.key_box_nodes import RunTarget, TargetError
from slicer_scene import make_line, make_segment_editor, make_volume, mrml_scene_fixture, slicer  # noqa: F401
from stand_in_model import StandInModel
from test_effect import _volume_array


def _two_targets(mrml_scene):
    volume = make_volume(mrml_scene, _volume_array(), np.diag([0.8, 0.8, 2.0, 1.0]))
    segmentation, editor_node, logic, ids = make_segment_editor(mrml_scene, volume, ["lesion A", "lesion B"])
    targets = [RunTarget(volume.GetID(), segmentation.GetID(), segment_id) for segment_id in ids]
    return volume, segmentation, editor_node, logic, ids, targets


def test_each_segment_keeps_its_own_boxes_and_they_never_mix(mrml_scene):
    volume, segmentation, editor_node, logic, ids, (a, b) = _two_targets(mrml_scene)
    boxes_a = [(3, (12.0, 12.0, 30.0, 26.0)), (7, (10.0, 10.0, 32.0, 28.0))]
    boxes_b = [(5, (30.0, 5.0, 44.0, 15.0)), (9, (31.0, 6.0, 43.0, 14.0)), (11, (32.0, 6.0, 42.0, 13.0))]
    for target, boxes in ((a, boxes_a), (b, boxes_b)):
        for s, box in boxes:
            key_box_nodes.assign(key_box_nodes.add_roi_for_key_box(mrml_scene.scene, volume, 0, KeyBox(s, box)),
                                 target)
    stray = key_box_nodes.add_roi_for_key_box(mrml_scene.scene, volume, 0, KeyBox(4, (1.0, 1.0, 9.0, 9.0)))
    nodes_a = key_box_nodes.key_box_nodes(mrml_scene.scene, a)
    nodes_b = key_box_nodes.key_box_nodes(mrml_scene.scene, b)
    assert [k.slice_index for k in mrml_markups.markups_key_boxes(nodes_a, volume).sorted()] == [3, 7]
    assert [k.slice_index for k in mrml_markups.markups_key_boxes(nodes_b, volume).sorted()] == [5, 9, 11]
    assert key_box_nodes.unassigned_markups(mrml_scene.scene) == [stray]

    # Each target segments from its own boxes only, into its own segment.
    run = effect.MedSAMEffectLogic(model_loader=lambda *args: StandInModel(), batch_size=4)
    for target, segment_id, expected_range in ((a, ids[0], (3, 7)), (b, ids[1], (5, 11))):
        editor_node.SetSelectedSegmentID(segment_id)
        assert key_box_nodes.target_from_editor(editor_node) == target
        nodes = key_box_nodes.key_box_nodes(mrml_scene.scene, target)
        outcome = run.run(mrml_segments.SegmentWriter(logic), volume, nodes)
        assert outcome.slice_range == expected_range
    mask_a, mask_b = (mrml_segments.segment_mask(segmentation, i, volume) for i in ids)
    assert mask_a.any() and mask_b.any()
    assert not mask_a[:3].any() and not mask_a[8:].any() and not mask_b[:5].any()

    # Take in: the stray ROI (and a line made elsewhere) become key boxes of the chosen target.
    line = make_line(mrml_scene, (5.0, 5.0, 8.0), (12.0, 9.0, 8.0))
    assert set(key_box_nodes.unassigned_markups(mrml_scene.scene)) == {stray, line}
    assert key_box_nodes.take_in(key_box_nodes.unassigned_markups(mrml_scene.scene), b) == 2
    assert key_box_nodes.unassigned_markups(mrml_scene.scene) == []
    assert len(key_box_nodes.key_box_nodes(mrml_scene.scene, b)) == 5
    assert len(key_box_nodes.key_box_nodes(mrml_scene.scene, a)) == 2


def test_target_capture_and_what_stops_a_write(mrml_scene):
    volume, segmentation, editor_node, _, ids, (a, b) = _two_targets(mrml_scene)
    scene = mrml_scene.scene
    assert key_box_nodes.target_from_editor(editor_node) == a
    assert key_box_nodes.target_problem(scene, editor_node, a) is None
    editor_node.SetSelectedSegmentID(ids[1])
    assert "changed during the run" in key_box_nodes.target_problem(scene, editor_node, a)
    assert key_box_nodes.target_problem(scene, editor_node, b) is None
    segmentation.GetSegmentation().RemoveSegment(ids[1])
    assert "segment was deleted" in key_box_nodes.target_problem(scene, editor_node, b)
    scene.RemoveNode(segmentation)
    assert "removed during the run" in key_box_nodes.target_problem(scene, editor_node, a)
    for missing, match in (("volume", "source volume"), ("segmentation", "segmentation"), ("segment", "segment")):
        node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        if missing != "volume":
            node.SetAndObserveSourceVolumeNode(volume)
        if missing == "segment":
            other, _, _, _ = make_segment_editor(mrml_scene, volume, ["x"])
            node.SetAndObserveSegmentationNode(other)
        with pytest.raises(TargetError, match=match):
            key_box_nodes.target_from_editor(node)
    with pytest.raises(TargetError, match="parameter node"):
        key_box_nodes.target_from_editor(None)


def test_sample_boxes_belong_to_the_sample_segment(mrml_scene):
    from MedSAMSegmentLib.scene import sample_scene

    sample = sample_scene.load_sample(mrml_scene.scene)
    target = RunTarget(sample.volume_node.GetID(), sample.segmentation_node.GetID(), sample.segment_id)
    assert key_box_nodes.key_box_nodes(mrml_scene.scene, target) == sample.roi_nodes
    assert key_box_nodes.unassigned_markups(mrml_scene.scene) == []


def test_watcher_ignores_nodes_that_are_no_roi_or_line(mrml_scene):
    """A preview write adds and removes a segmentation and a temporary segment editor node: no key box change."""
    from MedSAMSegmentLib.scene.key_box_placement import KeyBoxWatcher

    volume, segmentation, editor_node, logic, ids, (a, _) = _two_targets(mrml_scene)
    calls = []
    watcher = KeyBoxWatcher(mrml_scene.scene, editor_node, lambda: calls.append(1))
    try:
        with mrml_segments.temporary_editor(mrml_scene.scene, mrml_scene.app_logic, segmentation, volume, ids[0]):
            pass
        mrml_scene.scene.RemoveNode(mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview"))
        assert calls == []
        roi = key_box_nodes.add_roi_for_key_box(mrml_scene.scene, volume, 0, KeyBox(3, (12.0, 12.0, 30.0, 26.0)))
        assert calls, "a new ROI is a change"
        calls.clear()
        key_box_nodes.assign(roi, a)
        assert calls, "an ROI assigned is a change"
        calls.clear()
        mrml_scene.scene.RemoveNode(roi)
        assert calls == [1]
    finally:
        watcher.stop()


def test_take_in_offers_only_markups_drawn_on_a_slice_of_the_volume(mrml_scene):
    """Crop Volume ROIs, rulers elsewhere or across slices and hidden markups are no key box candidates."""
    import vtk

    volume, segmentation, editor_node, logic, ids, (a, b) = _two_targets(mrml_scene)  # 48 x 40 x 14, 0.8/0.8/2 mm
    scene = mrml_scene.scene
    drawn = key_box_nodes.add_roi_for_key_box(scene, volume, 0, KeyBox(4, (1.0, 1.0, 9.0, 9.0)), "thin box")
    toolbar = scene.AddNewNodeByClass(mrml_markups.ROI_CLASS, "toolbar box")  # two clicks in an axial view
    toolbar.CreateDefaultDisplayNodes()
    toolbar.AddControlPoint(vtk.vtkVector3d(5.0, 5.0, 8.0))
    toolbar.AddControlPoint(vtk.vtkVector3d(20.0, 15.0, 8.0))
    line = make_line(mrml_scene, (5.0, 5.0, 8.0), (12.0, 9.0, 8.0), "diameter")
    flat_line = make_line(mrml_scene, (5.0, 5.0, 12.0), (15.0, 5.0, 12.0), "diameter along an image axis")
    crop = scene.AddNewNodeByClass(mrml_markups.ROI_CLASS, "Crop Volume ROI")  # a 3D box, its point at the centre
    crop.CreateDefaultDisplayNodes()
    crop.SetCenter(18.8, 15.6, 13.0)
    crop.SetSize(30.0, 30.0, 10.0)
    make_line(mrml_scene, (5.0, 5.0, 300.0), (12.0, 9.0, 300.0), "ruler above the volume")
    make_line(mrml_scene, (60.0, 60.0, 8.0), (70.0, 65.0, 8.0), "ruler beside the volume")
    make_line(mrml_scene, (2.0, 2.0, 2.0), (30.0, 25.0, 20.0), "ruler across slices")
    hidden = make_line(mrml_scene, (5.0, 5.0, 10.0), (12.0, 9.0, 10.0), "hidden")
    hidden.GetDisplayNode().SetVisibility2D(False)
    key_box_nodes.assign(key_box_nodes.add_roi_for_key_box(scene, volume, 0, KeyBox(6, (3.0, 3.0, 9.0, 9.0))), b)

    offered = key_box_nodes.take_in_candidates(scene, a)
    assert {n.GetName() for n in offered} == {"thin box", "toolbar box", "diameter", "diameter along an image axis"}
    assert key_box_nodes.take_in(offered, a) == 4
    assert set(key_box_nodes.key_box_nodes(scene, a)) == {drawn, toolbar, line, flat_line}
    assert key_box_nodes.take_in_candidates(scene, a) == []
    hidden.GetDisplayNode().SetVisibility2D(True)
    assert key_box_nodes.take_in_candidates(scene, a) == [hidden]
    no_volume = RunTarget("vtkMRMLScalarVolumeNodeMissing", a.segmentation_id, a.segment_id)
    assert key_box_nodes.take_in_candidates(scene, no_volume) == []


def test_key_boxes_drawn_on_one_volume_are_taken_in_and_run_on_another(mrml_scene):
    """Boxes of a segment drawn on volume A map through volume B's own geometry when taken in for B."""
    volume_a, segmentation, editor_node, logic, ids, (a, b) = _two_targets(mrml_scene)
    scene = mrml_scene.scene
    ijk_to_ras_b = np.array([[1.0, 0, 0, 4.0], [0, 1.0, 0, 2.0], [0, 0, 1.5, 3.0], [0, 0, 0, 1]])
    volume_b = make_volume(mrml_scene, np.full((20, 30, 30), 200, dtype=np.int16), ijk_to_ras_b, "volume B")
    inside = [key_box_nodes.add_roi_for_key_box(scene, volume_a, 0, KeyBox(s, (12.0, 12.0, 30.0, 26.0)))
              for s in (3, 7)]  # z = 6 and 14 mm: B's slices 2 and 7
    outside = key_box_nodes.add_roi_for_key_box(scene, volume_a, 0, KeyBox(0, (12.0, 12.0, 30.0, 26.0)))  # z = 0
    for node in inside + [outside]:
        key_box_nodes.assign(node, a)
    other_segment = key_box_nodes.add_roi_for_key_box(scene, volume_a, 0, KeyBox(5, (12.0, 12.0, 30.0, 26.0)))
    key_box_nodes.assign(other_segment, b)

    editor_node.SetAndObserveSourceVolumeNode(volume_b)
    on_b = key_box_nodes.target_from_editor(editor_node)
    assert on_b == RunTarget(volume_b.GetID(), a.segmentation_id, a.segment_id)
    assert key_box_nodes.key_box_nodes(scene, on_b) == []
    assert key_box_nodes.take_in_candidates(scene, on_b) == inside
    assert key_box_nodes.take_in(key_box_nodes.take_in_candidates(scene, on_b), on_b) == 2
    assert key_box_nodes.key_box_nodes(scene, on_b) == inside
    assert all(n.GetNodeReferenceID(key_box_nodes.VOLUME_REFERENCE) == volume_b.GetID() for n in inside)
    assert key_box_nodes.key_box_nodes(scene, a) == [outside]  # re-tied, not copied
    keys = mrml_markups.markups_key_boxes(inside, volume_b).sorted()
    assert [k.slice_index for k in keys] == [2, 7]
    assert keys[0].box == (6.0, 8.0, 20.0, 18.0)  # x 9.6-24 mm, y 9.6-20.8 mm: B's 1 mm voxels from (4, 2)

    run = effect.MedSAMEffectLogic(model_loader=lambda *args: StandInModel("inner"), batch_size=4)
    outcome = run.run(mrml_segments.SegmentWriter(logic), volume_b, key_box_nodes.key_box_nodes(scene, on_b))
    assert outcome.slice_range == (2, 7)
    mask = mrml_segments.segment_mask(segmentation, ids[0], volume_b)
    assert mask[2:8].any() and not mask[:2].any() and not mask[8:].any()
