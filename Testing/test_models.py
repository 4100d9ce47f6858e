"""Model backends: parity with a step-by-step implementation of each published recipe, and clear errors."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_data_path
from MedSAMSegmentLib.intensity import normalise_volume
from MedSAMSegmentLib.io.error_text import first_line
from MedSAMSegmentLib.models import LiteMedSAM, MedSAMViTB, ModelError, SliceModel, choose_device, load_model
from skimage import transform as skimage_transform


def real_slices():
    """A 512x512 CT lesion slice with its box, and a non-square 101x122 abdominal CT slice with the spleen's."""
    lesion = np.load(shared_data_path("ct_lesion", "CT_Lesion_000009_03_01_036-048.npz"))
    image, mask = lesion["imgs"][6], lesion["gts"][6] > 0
    import SimpleITK as sitk

    ct = sitk.GetArrayFromImage(sitk.ReadImage(shared_data_path("totalseg", "example_ct_sm.nii.gz")))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(shared_data_path("totalseg", "example_seg.nii.gz")))
    ct_u8 = normalise_volume(ct, "CT")
    s = int(np.argmax((seg == 1).sum(axis=(1, 2))))
    out = []
    for img, m in ((image, mask), (ct_u8[s], seg[s] == 1)):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        box = np.array([cols[0] - 3, rows[0] - 3, cols[-1] + 3, rows[-1] + 3], dtype=float)
        out.append((img, box))
    return out


def published_lite_recipe(net, image_2d, box):
    """LiteMedSAM's CVPR 2024 inference, step by step (GUIDE section 3)."""
    img_3c = np.repeat(image_2d[:, :, None], 3, axis=-1)
    h, w = img_3c.shape[:2]
    scale = 256 / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    img_256 = cv2.resize(img_3c, (new_w, new_h), interpolation=cv2.INTER_AREA)
    img_256 = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
    padded = np.pad(img_256, ((0, 256 - new_h), (0, 256 - new_w), (0, 0)))
    tensor = torch.tensor(padded).float().permute(2, 0, 1).unsqueeze(0)
    box256 = (box / max(h, w) * 256)[None, None, :]
    with torch.no_grad():
        embedding = net.image_encoder(tensor)
        sparse, dense = net.prompt_encoder(points=None, boxes=torch.as_tensor(box256, dtype=torch.float32), masks=None)
        low_res, iou = net.mask_decoder(
            image_embeddings=embedding,
            image_pe=net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits = F.interpolate(low_res[..., :new_h, :new_w], size=(h, w), mode="bilinear", align_corners=False)
    return logits[0, 0].numpy(), float(iou[0, 0])


def test_lite_matches_the_published_recipe(lite_model):
    for image, box in real_slices():
        expected_logits, expected_iou = published_lite_recipe(lite_model.net, image, box)
        embedding = lite_model.encode([image])
        logits, iou = lite_model.decode(embedding, box[None], image.shape)
        assert logits.shape == (1,) + image.shape
        np.testing.assert_allclose(logits[0], expected_logits, atol=2e-3 * max(1.0, np.abs(expected_logits).max()))
        agreement = ((logits[0] > 0) == (expected_logits > 0)).mean()
        assert agreement > 0.9995
        assert iou[0] == pytest.approx(expected_iou, abs=1e-3)
        assert (logits[0] > 0).sum() > 50  # the real model finds the target


def test_lite_batched_encoding_equals_single(lite_model):
    (a, box_a), (b, box_b) = real_slices()
    both = lite_model.encode([a, a])
    single = lite_model.encode([a])
    np.testing.assert_allclose(both[0].numpy(), single[0].numpy(), atol=1e-3)
    logits, _ = lite_model.decode(both, np.stack([box_a, box_a]), a.shape)
    assert np.array_equal(logits[0] > 0, logits[1] > 0)


def test_unknown_device_and_absent_cuda_are_refused():
    with pytest.raises(ModelError, match="unknown device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA was requested"):
            choose_device("cuda")
    assert choose_device("cpu").name == "cpu"


@pytest.fixture(scope="module")
def random_vit_b_checkpoint(tmp_path_factory):
    """A MedSAM ViT-B checkpoint file holding a randomly initialised model (the real one is 375 MB, not bundled)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    net = sam_model_registry["vit_b"]()
    path = tmp_path_factory.mktemp("vit_b") / "medsam_vit_b_random.pth"
    torch.save(net.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("shape", [(512, 512), (101, 122), (1500, 1100), (700, 1300, 3)],
                         ids=["same-aspect-up", "odd-up", "down", "colour-mixed"])
def test_the_published_resize_equals_scikit_images(shape):
    """MedSAM_Inference.py's ``transform.resize(..., order=3, preserve_range=True, anti_aliasing=True)
    .astype(np.uint8)``, up and down (where the Gaussian applies), grey and colour."""
    from MedSAMSegmentLib.models.published_resize import published_resize

    rng = np.random.default_rng(sum(shape))
    image = np.clip(rng.normal(110, 60, size=shape), 0, 255).astype(np.uint8)
    image[: shape[0] // 3] //= 3  # structure and edges, not only noise
    expected = skimage_transform.resize(image, (1024, 1024), order=3, preserve_range=True,
                                        anti_aliasing=True).astype(np.uint8)
    np.testing.assert_array_equal(published_resize(image, 1024), expected)


@pytest.mark.slow
def test_vit_b_follows_its_recipe(random_vit_b_checkpoint):
    model = load_model("vit_b", checkpoint=random_vit_b_checkpoint, device="cpu")
    image, box = real_slices()[1]
    h, w = image.shape
    embedding = model.encode([image])
    assert tuple(embedding.shape) == (1, 256, 64, 64)
    logits, iou = model.decode(embedding, box[None], image.shape)
    assert logits.shape == (1, h, w) and iou.shape == (1,)
    # MedSAM_Inference.py step by step: scikit-image's resize to uint8, min-max, the image encoder called directly,
    # the box scaled per axis, sigmoid, bilinear upsampling, 0.5.
    img_3c = np.repeat(image[:, :, None], 3, axis=-1)
    img_1024 = skimage_transform.resize(img_3c, (1024, 1024), order=3, preserve_range=True,
                                        anti_aliasing=True).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
    net = model.net
    with torch.no_grad():
        expected_embedding = net.image_encoder(torch.tensor(img_1024).float().permute(2, 0, 1)[None])
        box_1024 = box / np.array([w, h, w, h]) * 1024
        sparse, dense = net.prompt_encoder(points=None, boxes=torch.tensor(box_1024[None, None]).float(), masks=None)
        low_res, _ = net.mask_decoder(expected_embedding, net.prompt_encoder.get_dense_pe(), sparse, dense, False)
        prob = F.interpolate(torch.sigmoid(low_res), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_array_equal(model.preprocess(image), torch.tensor(img_1024).float().permute(2, 0, 1).numpy())
    np.testing.assert_allclose(embedding.numpy(), expected_embedding.numpy(), atol=1e-3)
    assert ((logits[0] > 0) == (prob.numpy() > 0.5)).mean() > 0.999


def test_checkpoint_errors_name_the_problem(tmp_path, lite_model):
    garbage = tmp_path / "not_a_checkpoint.pth"
    garbage.write_bytes(b"hello, this is not a checkpoint")
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        load_model("vit_b", checkpoint=str(garbage), device="cpu")
    with pytest.raises(ModelError, match="not a SAM ViT-B checkpoint"):
        load_model("vit_b", checkpoint=lite_model.checkpoint_path, device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        load_model("vit_b", checkpoint=str(tmp_path / "missing.pth"), device="cpu")
    with pytest.raises(ModelError, match="needs its checkpoint"):
        load_model("vit_b", device="cpu")
    with pytest.raises(ModelError, match="unknown model"):
        load_model("vit_h", device="cpu")


def test_every_model_declares_its_input_size(lite_model):
    """``zoom`` measures boxes in model input pixels: each backend says how many (a stand-in gets 256)."""
    assert SliceModel.input_size == LiteMedSAM.input_size == lite_model.input_size == 256
    assert MedSAMViTB.input_size == 1024


def test_first_line_keeps_the_line_that_names_the_error():
    torch_style = RuntimeError("Weights only load failed. Re-running may help.\n  details follow\n"
                               "WeightsUnpickler error: Unsupported operand 104\n")
    assert first_line(torch_style) == "WeightsUnpickler error: Unsupported operand 104"
    assert first_line(RuntimeError("Error(s) in loading state_dict for X:\n\tMissing key(s)")) == \
        "Error(s) in loading state_dict for X:"
    assert first_line(ValueError("invalid load key, 'h'.")) == "invalid load key, 'h'."
    assert first_line(ValueError()) == "ValueError"
