"""Paths a run takes when something goes wrong, with the real LiteMedSAM on the bundled demo CT lesion: cancel
while decoding and while propagating, a GPU that runs out of memory (a stand-in: no CUDA here), an OpenVINO
conversion that fails, a broken converted-model cache, and an embedding cache directory that cannot be made."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest
from conftest import REPO
from MedSAMSegmentLib import cli, models
from MedSAMSegmentLib.engine import Cancelled, EmbeddingCache
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.models import acceleration, load_model, openvino_runners
from MedSAMSegmentLib.predictor import VolumePredictor
from MedSAMSegmentLib.settings import SegmentationSettings

DEMO = os.path.join(REPO, "MedSAMSegment", "MedSAMSegmentLib", "data")


@pytest.fixture(scope="module")
def demo():
    """The bundled demo volume (16 x 512 x 512 uint8 CT) and its three key boxes (slices 5, 8, 11)."""
    with np.load(os.path.join(DEMO, "demo_ct_lesion.npz")) as data:
        image = data["imgs"]
    with open(os.path.join(DEMO, "demo_boxes.json"), encoding="utf-8") as handle:
        boxes = json.load(handle)
    return image, KeyBoxSet(0, [KeyBox(b["slice"], tuple(float(v) for v in b["box"])) for b in boxes["boxes"]])


def cancel_after(seen: list, masks: int):
    """A cancel check that turns true at its first call after ``masks`` slices were decoded."""

    def cancel() -> bool:
        return len(seen) >= masks

    return cancel


SETTINGS = {
    "interpolate": SegmentationSettings(modality="none"),
    "propagate": SegmentationSettings(modality="none", strategy="propagate"),
}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(SETTINGS))
def test_cancel_mid_run_raises_and_a_later_run_gives_the_uncancelled_mask(lite_model, embedding_cache, demo, strategy,
                                                                          tmp_path):
    """Cancelled after four decoded slices (interpolate: between decoded chunks; propagate: while walking): the
    run raises ``Cancelled``; the same predictor run again gives exactly the mask of an uncancelled run, and
    the disk cache holds only whole, verified entries."""
    image, keys = demo
    settings = SETTINGS[strategy]
    reference = VolumePredictor(lite_model, image, 0, settings, cache=embedding_cache).predict(keys)
    assert len(reference.slices) >= 7 and reference.mask.any()

    cache = EmbeddingCache(str(tmp_path / "cache"))
    predictor = VolumePredictor(lite_model, image, 0, settings, cache=cache, batch_size=1)
    seen = []
    with pytest.raises(Cancelled):
        predictor.predict(keys, cancel=cancel_after(seen, 4), on_slice=lambda s, m: seen.append(s))
    assert 4 <= len(seen) < len(reference.slices), seen  # stopped part-way, after decoding had begun
    assert not glob.glob(str(tmp_path / "cache" / "*" / ".tmp-*"))
    entries = glob.glob(str(tmp_path / "cache" / "*" / "*.emb"))
    assert entries and all(cache._read_disk(os.path.basename(p)[:-4]) is not None for p in entries)

    again = predictor.predict(keys)
    assert np.array_equal(again.mask, reference.mask)
    assert again.slices == reference.slices and again.iou == pytest.approx(reference.iou)


class OutOfMemoryOnTheGpu:
    """A stand-in for a CUDA device that runs out of memory on every encode: the model says it is on ``cuda:0``
    and its encoder raises torch's out-of-memory error until the engine moves it to the CPU."""

    def __init__(self, model, monkeypatch):
        import torch

        self.batches = []
        real_encode = model.encode

        def encode(slices):
            self.batches.append((model.device, len(slices)))
            if model.device != "cpu":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_encode(slices)

        monkeypatch.setattr(model, "encode", encode)
        monkeypatch.setattr(model, "device", "cuda:0")


@pytest.mark.slow
def test_out_of_memory_on_the_gpu_halves_the_batch_then_falls_back_to_the_cpu(lite_model, embedding_cache, demo,
                                                                               monkeypatch):
    image, keys = demo
    keys = KeyBoxSet(0, keys.boxes[:2])  # slices 5-8
    settings = SegmentationSettings(modality="none")
    cpu = VolumePredictor(lite_model, image, 0, settings, cache=embedding_cache).predict(keys)

    model = load_model("lite", device="cpu")
    gpu = OutOfMemoryOnTheGpu(model, monkeypatch)
    with pytest.warns(ResourceWarning) as caught:
        result = VolumePredictor(model, image, 0, settings, batch_size=2).predict(keys)
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert messages == ["out of memory on cuda:0; retrying with batches of 1 slices",
                        "out of memory on cuda:0 even one slice at a time; continuing on the CPU"]
    assert gpu.batches[:2] == [("cuda:0", 2), ("cuda:0", 1)]
    assert {device for device, _ in gpu.batches[2:]} == {"cpu"}
    assert model.device == "cpu"
    assert np.array_equal(result.mask, cpu.mask) and result.iou == pytest.approx(cpu.iou)


@pytest.mark.slow
def test_openvino_conversion_failure_falls_back_to_torch_with_a_warning(demo, monkeypatch, tmp_path, caplog):
    """No cached model and ``openvino.convert_model`` failing: the encoder and decoder run in PyTorch, a warning
    says so, and the run gives the torch backend's mask."""
    import openvino

    def fail(*args, **kwargs):
        raise RuntimeError("conversion failed for the test")

    monkeypatch.setenv("MEDSAM_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(openvino, "convert_model", fail)
    with caplog.at_level(logging.WARNING, logger=acceleration.__name__):
        model = load_model("lite", device="cpu", backend="openvino")
        decoder = acceleration.make_decoder_runner(model.net, "cpu", backend="openvino")
    assert decoder is None
    assert "encoder torch fp32" in model.acceleration and "OpenVINO" not in model.acceleration
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("OpenVINO encoder unavailable (conversion failed for the test); using torch")
               for m in warned), warned
    assert any(m.startswith("OpenVINO decoder unavailable (conversion failed for the test); using torch")
               for m in warned), warned

    image, keys = demo
    one = KeyBoxSet(0, keys.boxes[1:2])
    settings = SegmentationSettings(modality="none")
    torch_model = load_model("lite", device="cpu", backend="torch")
    want = VolumePredictor(torch_model, image, 0, settings).predict(one)
    got = VolumePredictor(model, image, 0, settings).predict(one)
    assert got.mask.any() and np.array_equal(got.mask, want.mask)


@pytest.fixture(scope="module")
def converted_decoder(lite_model):
    """The converted decoder IR files (.xml, .bin, .sha256) of the session's model in this session's cache (other
    tests may have converted other weights, e.g. a fine-tuned decoder)."""
    from MedSAMSegmentLib.models.box_decoder import GRAPH_VERSION, TokenMajorBoxDecoder

    weights = openvino_runners._weights_key(TokenMajorBoxDecoder(lite_model.net).eval())
    folder = openvino_runners.default_cache_dir() / "openvino"
    files = sorted(glob.glob(str(folder / f"litemedsam_token_major_decoder_v{GRAPH_VERSION}_{weights}_*")))
    assert len(files) == 3, files
    return files


@pytest.mark.parametrize("damage", [pytest.param("garbage xml", marks=pytest.mark.slow),
                                    pytest.param("truncated bin", marks=pytest.mark.slow), "overwritten weights",
                                    pytest.param("no checksum", marks=pytest.mark.slow)])
def test_a_broken_converted_model_is_converted_again(lite_model, converted_decoder, tmp_path, damage, caplog):
    """A damaged cache entry is never run: it is converted again (about 15 s), rewritten, and the decoder gives
    PyTorch's logits. Overwritten weights read without complaint by OpenVINO (NaN logits) before the checksum."""
    import torch
    from MedSAMSegmentLib.models import box_prompt_decode

    for path in converted_decoder:
        shutil.copy(path, tmp_path)
    xml = glob.glob(str(tmp_path / "*.xml"))[0]
    weights = xml[:-4] + ".bin"
    if damage == "garbage xml":
        with open(xml, "w") as handle:
            handle.write("<net garbage")
    elif damage == "truncated bin":
        with open(weights, "r+b") as handle:
            handle.truncate(1000)
    elif damage == "overwritten weights":
        with open(weights, "r+b") as handle:
            handle.seek(os.path.getsize(weights) // 2)
            handle.write(b"\x7f" * 4096)
    else:
        os.unlink(xml[:-4] + ".sha256")
    with caplog.at_level(logging.INFO, logger=openvino_runners.__name__):
        runner = acceleration.make_decoder_runner(lite_model.net, "cpu", backend="openvino", cache_dir=str(tmp_path))
    assert type(runner).__name__ == "OpenVINODecoderRunner"
    assert any("does not verify; converting it again" in r.getMessage() for r in caplog.records)
    embeddings = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 256, 64, 64)).astype(np.float32))
    boxes = torch.tensor([[[60.0, 50.0, 120.0, 110.0]]])
    low_res, iou = runner(embeddings, boxes)
    with torch.inference_mode():
        want, want_iou = box_prompt_decode(lite_model.net, embeddings, boxes)
    assert float((low_res - want).abs().max()) < 1e-4 and float((iou - want_iou).abs().max()) < 1e-5
    # the entry was rewritten whole: a later load reads it without converting
    for name in ("xml", "bin", "sha256"):
        assert open(xml[:-4] + "." + name, "rb").read() != b""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=openvino_runners.__name__):
        acceleration.make_decoder_runner(lite_model.net, "cpu", backend="openvino", cache_dir=str(tmp_path))
    assert not any("converting it again" in r.getMessage() for r in caplog.records)


def test_a_cache_dir_that_cannot_be_made_is_a_usage_error_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """``--cache-dir`` under a regular file (root ignores read-only modes, so this is the unwritable case that
    holds for every user): exit 2 with one line naming the option and the folder, before any model loads, and the
    output untouched."""

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"previous")
    monkeypatch.setattr(models, "load_from_settings", lambda model_settings: pytest.fail("the model loaded"))
    argv = ["segment", os.path.join(DEMO, "demo_ct_lesion.npz"), "--boxes", os.path.join(DEMO, "demo_boxes.json"),
            "-o", str(out), "--device", "cpu", "--quiet", "--cache-dir", str(blocker / "cache")]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"medsam-segment: error: --cache-dir {blocker / 'cache'}: cannot make the folder (Not a directory);"
                   " give a folder you can write to"]
    assert out.read_bytes() == b"previous"


def test_a_disk_cache_that_stops_taking_entries_does_not_end_the_run(lite_model, demo, tmp_path):
    image, keys = demo
    folder = tmp_path / "cache"
    cache = EmbeddingCache(str(folder))
    for n in range(256):  # every entry's sub-folder is taken by a regular file: no entry can be written
        (folder / f"{n:02x}").write_text("")
    one = KeyBoxSet(0, keys.boxes[1:2])
    with pytest.warns(ResourceWarning, match="takes no more entries .* embeddings in memory only") as caught:
        result = VolumePredictor(lite_model, image, 0, SegmentationSettings(modality="none"), cache=cache).predict(one)
    assert len([w for w in caught if issubclass(w.category, ResourceWarning)]) == 1  # warned once, not per entry
    expected = VolumePredictor(lite_model, image, 0, SegmentationSettings(modality="none"),
                               cache=EmbeddingCache()).predict(one)
    np.testing.assert_array_equal(result.mask, expected.mask)
    assert cache.disk_writes_failed and not any(p.is_dir() for p in folder.iterdir())
