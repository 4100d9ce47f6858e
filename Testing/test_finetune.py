"""``medsam-segment finetune`` with the real LiteMedSAM: the slices and views it learns from, the training and its
validation, the checkpoint (complete, safe to load, atomic, with its provenance) and the command line, whose
checkpoint ``segment`` then runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import require_shared_data, shared_data_path
from MedSAMSegmentLib import demo, pipeline
from MedSAMSegmentLib import io as image_io
from MedSAMSegmentLib.learning.finetune import (
    HEAD_PREFIX,
    FinetuneError,
    FinetuneSettings,
    case_views,
    checkpoint_provenance,
    examples_of,
    fine_tune,
    fine_tuned_state,
    save_fine_tuned,
)
from MedSAMSegmentLib.models import LiteMedSAM
from MedSAMSegmentLib.models.checkpoints import PROVENANCE_KEY, file_sha256
from MedSAMSegmentLib.settings import SegmentationSettings

FAST = FinetuneSettings(epochs=4, slices_per_case=7, views_per_step=4)


@pytest.fixture(scope="module")
def demo_case(lite_model, embedding_cache, demo_lesion):
    image, reference = demo_lesion
    settings = SegmentationSettings(modality="none", zoom="union")  # views cropped and whole: the harder path
    segmenter = pipeline.make_segmenter(lite_model, image.array, 0, settings, cache=embedding_cache)
    views = case_views("demo", segmenter, reference, FAST, settings.zoom, settings.box_sizes)
    return segmenter, reference, views


@pytest.fixture(scope="module")
def demo_fine_tuned(lite_model, demo_case):
    before = {k: v.clone() for k, v in lite_model.net.state_dict().items()}
    train, validation = examples_of(lite_model, [demo_case[2]], FAST)
    result = fine_tune(lite_model, train, validation, FAST)
    return result, before


def test_each_case_gives_evenly_spread_target_slices_with_every_fourth_held_out(demo_case):
    segmenter, reference, views = demo_case
    targets = [i for i in range(reference.shape[0]) if np.count_nonzero(reference[i]) >= 4]
    train_slices = sorted({v.slice_index for v in views.train})
    held = sorted({v.slice_index for v in views.validation})
    assert sorted(train_slices + held) == targets  # 7 target slices, all taken
    assert held == targets[2::4] and not set(held) & set(train_slices)
    for view in views.train + views.validation:
        assert view.target.any() and view.embedding.shape == (256, 64, 64)
        x0, y0, x1, y1 = view.box
        rows, cols = np.nonzero(view.target)
        assert x0 <= cols.min() and y0 <= rows.min() and x1 >= cols.max() and y1 >= rows.max()  # box holds the mask
    # union zoom: a small target is seen cropped and whole, as a run decodes it
    assert len(views.train) == 2 * len(train_slices)


def test_interpolated_boxes_are_the_boxes_a_run_gets_between_key_slices(demo_case):
    from MedSAMSegmentLib.geometry import KeyBox, box_from_mask, interpolate_boxes

    segmenter, reference, _ = demo_case
    settings = FinetuneSettings(slices_per_case=7, boxes="interpolated", key_spacing=3)
    views = case_views("demo", segmenter, reference, settings, "off", "rounded")  # whole slices: slice pixels
    targets = [i for i in range(reference.shape[0]) if np.count_nonzero(reference[i]) >= 4]
    keys = sorted(set(targets[::3]) | {targets[-1]})
    expected = interpolate_boxes([KeyBox(i, box_from_mask(reference[i], 3.0)) for i in keys], "rounded")
    seen = {v.slice_index: v.box for v in views.train + views.validation}
    assert sorted(seen) == targets and all(np.allclose(seen[i], expected[i]) for i in seen)
    assert any(not np.allclose(seen[i], box_from_mask(reference[i], 3.0)) for i in seen if i not in keys)
    with pytest.raises(FinetuneError, match="--boxes"):
        FinetuneSettings(boxes="drawn")


def test_validation_holds_out_whole_cases_given_enough_of_them():
    from MedSAMSegmentLib.learning.finetune import split_for_validation

    examples = {f"case{i}": ([f"t{i}a", f"t{i}b"], [f"v{i}"]) for i in range(8)}
    train, validation, held = split_for_validation(examples, FinetuneSettings())
    assert held == "2 held-out case(s)" and validation == ["t2a", "t2b", "v2", "t6a", "t6b", "v6"]
    assert train == [e for i in (0, 1, 3, 4, 5, 7) for e in (f"t{i}a", f"t{i}b", f"v{i}")]
    few = {name: examples[name] for name in ("case0", "case1", "case2")}  # fewer than validation_every
    train, validation, held = split_for_validation(few, FinetuneSettings())
    assert held == "held-out slices of the training cases" and validation == ["v0", "v1", "v2"]
    assert split_for_validation(examples, FinetuneSettings(hold_out="slices"))[1] == [f"v{i}" for i in range(8)]
    with pytest.raises(FinetuneError, match="--hold-out"):
        FinetuneSettings(hold_out="none")


def test_cases_that_cannot_be_learnt_from_are_named(demo_case):
    segmenter, reference, _ = demo_case
    with pytest.raises(FinetuneError, match="empty"):
        case_views("blank", segmenter, np.zeros_like(reference), FAST, "union", "rounded")
    with pytest.raises(FinetuneError, match="shape"):
        case_views("cut", segmenter, reference[:, :-1], FAST, "union", "rounded")
    with pytest.raises(FinetuneError, match="epochs"):
        FinetuneSettings(epochs=0)


def test_fine_tuning_lowers_the_loss_keeps_the_best_epoch_and_leaves_the_model_alone(lite_model, demo_fine_tuned):
    result, before = demo_fine_tuned
    assert len(result.history) == FAST.epochs
    assert result.history[-1].train_loss < result.history[0].train_loss
    best = max(result.history, key=lambda record: record.validation_dice)
    assert result.best_epoch == best.epoch and result.validation_dice == best.validation_dice
    assert 0 < result.base_validation_dice <= 1 and result.train_examples == 10 and result.validation_examples == 4
    after = lite_model.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the shared model is untouched
    state = fine_tuned_state(lite_model, result.head)
    changed = {k for k in state if not torch.equal(state[k], before[k])}
    assert changed and all(k.startswith(HEAD_PREFIX) for k in changed)


def test_the_checkpoint_is_complete_loads_without_pickle_and_carries_its_provenance(lite_model, demo_fine_tuned,
                                                                                    demo_case, tmp_path):
    result, _ = demo_fine_tuned
    path = str(tmp_path / "decoder.pth")
    save_fine_tuned(path, lite_model, result.head, {"cases": [{"name": "demo"}], "created": "2026-12-01"})
    raw = torch.load(path, map_location="cpu", weights_only=True)  # tensors and a string: no pickled objects
    assert isinstance(raw[PROVENANCE_KEY], str) and set(raw) == {"model", PROVENANCE_KEY}
    assert checkpoint_provenance(path) == {"cases": [{"name": "demo"}], "created": "2026-12-01"}
    loaded = LiteMedSAM(device="cpu", checkpoint=path)
    assert "decoder fine-tuned on 1 case(s) on 2026-12-01" in loaded.acceleration
    assert loaded.fingerprint != lite_model.fingerprint  # its runs never share a cache entry with the bundled model
    head = loaded.net.mask_decoder.output_hypernetworks_mlps[0].state_dict()
    assert all(torch.equal(v, result.head.state_dict()[k]) for k, v in head.items())
    # It decodes differently from the bundled decoder, from the same embedding and box.
    segmenter, _, views = demo_case
    view = views.validation[0]
    embedding = torch.from_numpy(np.asarray(view.embedding)[None])
    tuned, _ = loaded.decode(embedding, np.asarray([view.box]), view.target.shape)
    bundled, _ = lite_model.decode(embedding, np.asarray([view.box]), view.target.shape)
    assert not np.allclose(tuned, bundled, atol=1e-3)


def test_a_failed_save_leaves_the_previous_checkpoint_as_it_was(lite_model, demo_fine_tuned, tmp_path, monkeypatch):
    result, _ = demo_fine_tuned
    path = tmp_path / "decoder.pth"
    path.write_bytes(b"the previous checkpoint")

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_fine_tuned(str(path), lite_model, result.head, {})
    assert path.read_bytes() == b"the previous checkpoint" and os.listdir(tmp_path) == ["decoder.pth"]
    with pytest.raises(FinetuneError, match="does not exist"):
        save_fine_tuned(str(tmp_path / "missing" / "decoder.pth"), lite_model, result.head, {})


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "MedSAMSegmentLib.cli", *args], capture_output=True, encoding="utf-8",
                          timeout=timeout)


@pytest.mark.slow
def test_the_command_fine_tunes_on_cases_and_segment_runs_its_checkpoint(tmp_path):
    require_shared_data()
    entry = next(e for e in json.load(open(shared_data_path("cases.json"))) if e["name"].startswith("ct_lesion"))
    entry = dict(entry, image=shared_data_path(entry["image"]), label=shared_data_path(entry["label"]))
    demo_entry = {"name": "demo", "image": demo.DEMO_IMAGE, "label": demo.DEMO_IMAGE, "modality": "CT",
                  "slice_axis": 0}
    cases = tmp_path / "revised.json"
    cases.write_text(json.dumps([entry, demo_entry]))
    out = tmp_path / "decoder.pth"
    done = run_cli("finetune", "--cases", str(cases), "--out", str(out), "--epochs", "3", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "held-out slices of the training cases: mean slice DSC" in done.stdout  # 2 cases: too few to hold one out
    assert os.path.getsize(tmp_path / "decoder.loss.png") > 5000
    provenance = checkpoint_provenance(str(out))
    assert [c["name"] for c in provenance["cases"]] == [entry["name"], "demo"]
    assert provenance["cases"][1]["image_sha256"] == file_sha256(demo.DEMO_IMAGE)
    assert len(provenance["history"]) == 3 and provenance["settings"]["epochs"] == 3
    assert provenance["base_weights_sha256"] == file_sha256(LiteMedSAM(device="cpu").checkpoint_path)
    segmented = run_cli("segment", demo.DEMO_IMAGE, "--boxes", demo.DEMO_BOXES, "-o", str(tmp_path / "mask.nii.gz"),
                        "--checkpoint", str(out), "--device", "cpu")
    assert segmented.returncode == 0, segmented.stderr
    assert "decoder fine-tuned on 2 case(s)" in segmented.stdout
    mask, _ = image_io.read_mask(str(tmp_path / "mask.nii.gz"))
    assert mask.any()


@pytest.mark.parametrize("change, message", [
    ({"out": "missing/decoder.pth"}, "folder does not exist"),
    ({"out": "decoder.ckpt"}, "name the checkpoint with .pth"),
    ({"cases": "nowhere.json"}, "--cases"),
    ({"epochs": "0"}, "epochs >= 1"),
])
def test_bad_input_gets_one_line_and_exit_2(tmp_path, change, message):
    cases = tmp_path / "revised.json"
    cases.write_text(json.dumps([{"name": "demo", "image": demo.DEMO_IMAGE, "label": demo.DEMO_IMAGE}]))
    options = {"cases": str(cases), "out": "decoder.pth", "epochs": "1", **change}
    options["out"] = str(tmp_path / options["out"])
    if change.get("cases"):
        options["cases"] = str(tmp_path / change["cases"])
    arguments = [item for name, value in options.items() for item in (f"--{name}", value)]
    done = run_cli("finetune", *arguments, "--device", "cpu", timeout=300)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not os.path.exists(options["out"])
