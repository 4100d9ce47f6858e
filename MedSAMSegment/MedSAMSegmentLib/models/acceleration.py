"""The encoder and decoder runners for LiteMedSAM inference: the runtime (PyTorch or OpenVINO) and the numeric path
(fp32, bf16 with an fp32 residual stream, fp16 on GPUs) for a device, falling back to PyTorch when OpenVINO is
missing or fails. Hardware, threads, batch size and precision choice: :mod:`hardware`; the OpenVINO runners:
:mod:`openvino_runners`.

Qt-free; torch (and openvino) are imported lazily inside the functions. Every fp32 path gives the published
recipe's embedding within :data:`FP32_EMBEDDING_REL_TOL`; bf16 is opt-in (:data:`hardware.CPU_AUTO_BF16`).

Environment defaults (an explicit argument wins): ``MEDSAM_BACKEND`` (auto|torch|openvino), and those of
:mod:`hardware` and :mod:`openvino_runners`.
"""

from __future__ import annotations

import logging

from .hardware import (
    _explicit_or_environment,
    configure_allocator,
    configure_torch_threads,
    describe_acceleration,
    resolve_precision,
)
from .openvino_runners import OpenVINODecoderRunner, OpenVINOEncoderRunner, openvino_available

log = logging.getLogger(__name__)

#: Largest relative L2 deviation of the bf16 path's embedding (bf16 GEMMs, fp32 residual stream) from fp32.
BF16_EMBEDDING_REL_TOL = 0.06
#: Smallest Dice between masks decoded (same box) from the bf16 and from the fp32 embedding.
BF16_MASK_DICE_FLOOR = 0.97
#: Largest relative L2 deviation of any fp32 path (channels_last, OpenVINO, another allocator) from the recipe's.
FP32_EMBEDDING_REL_TOL = 1e-4


def _amp_dtype(precision):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def _float_output_hook(_module, _inputs, output):
    return output.float()  # no-op (same tensor) when already fp32


def bf16_fp32_residual_encoder(encoder, attention_fp32: bool = False):
    """A copy of the encoder whose Linear/Conv2d outputs are cast back to fp32.

    Under ``torch.autocast(dtype=bfloat16)`` every Linear/Conv2d then multiplies in bf16 (AMX) but the residual
    stream, LayerNorm, BatchNorm, GELU and softmax stay fp32 (plain autocast lets the residual stream drift into
    bf16). ``attention_fp32`` also keeps the attention modules (qkv, q@k, softmax, @v, proj) fp32.
    """
    import copy

    import torch
    import torch.nn as nn

    enc = copy.deepcopy(encoder).eval()
    for m in enc.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.register_forward_hook(_float_output_hook)
    if attention_fp32:
        for m in enc.modules():
            if type(m).__name__ == "Attention":
                fwd = m.forward

                def forward(x, fwd=fwd):
                    with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
                        return fwd(x.float())

                m.forward = forward
    return enc


# --------------------------------------------------------------------------- the encoder runner
class EncoderRunner:
    """Calls the image encoder with the chosen precision; input (B,3,256,256) float in [0,1].

    Returns the fp32 embedding (B,256,64,64) on ``device``.  Thread-safe for sequential use
    from one worker thread.
    """

    def __init__(self, encoder, device="cpu", precision="fp32"):
        import torch

        self.encoder = encoder.eval()
        self.device = torch.device(device)
        self.precision = precision
        self._amp = _amp_dtype(precision)
        if precision == "bf16" and self.device.type == "cpu":
            # bf16 GEMMs on AMX, fp32 residual stream: halves the deviation of plain autocast
            self.encoder = bf16_fp32_residual_encoder(encoder)
        # channels_last input lets oneDNN keep NHWC through the conv stages (faster on CPU, same numbers)
        self.channels_last = self.device.type == "cpu"

    @property
    def description(self) -> str:
        return describe_acceleration(self.device, self.precision)

    def __call__(self, batch):
        import torch

        x = batch.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self._amp is not None:
                with torch.autocast(self.device.type, dtype=self._amp):
                    out = self.encoder(x)
                out = out.float()
            else:
                out = self.encoder(x)
        return out.contiguous()


def resolve_backend(device="cpu", backend: str = "auto") -> str:
    """'auto' -> 'openvino' on CPUs when the openvino package is installed, else 'torch'."""
    backend = _explicit_or_environment(backend, "MEDSAM_BACKEND")
    if backend not in ("auto", "torch", "openvino"):
        raise ValueError(f"backend must be auto, torch or openvino, not {backend!r}")
    if str(device).startswith(("cuda", "mps")):
        return "torch"
    if backend == "auto":
        return "openvino" if openvino_available() else "torch"
    return backend


def make_encoder_runner(encoder, device="cpu", precision="auto", configure=True, backend="auto", cache_dir=None):
    """Build the encoder callable for ``device``: ``runner(batch (B,3,256,256) in [0,1]) -> (B,256,64,64) fp32``.

    ``precision``: 'auto' (fp32 unless ``CPU_AUTO_BF16``), 'fp32', 'bf16' (AMX CPUs, GPUs), 'fp16' (GPU).
    ``backend``: 'auto' (OpenVINO on CPU when the ``openvino`` pip package is installed, else
    torch), 'torch' or 'openvino'; OpenVINO falls back to torch with a logged warning when it is
    missing or fails to convert or compile. OpenVINO fp32 equals torch fp32 within :data:`FP32_EMBEDDING_REL_TOL`.
    ``configure`` also sets threads from physical cores and the allocator thresholds (CPU).
    The runner has ``.precision``, ``.device`` and ``.description`` (for the CLI's "using ..." line).
    """
    import torch

    device = torch.device(device)
    if configure and device.type == "cpu":
        configure_torch_threads()
        configure_allocator()
    precision = resolve_precision(device, precision)
    runner = None
    if resolve_backend(device, backend) == "openvino":
        try:
            runner = OpenVINOEncoderRunner(encoder, precision=precision, cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001 - missing package or conversion failure: use torch
            log.warning("OpenVINO encoder unavailable (%s); using torch", exc)
    if runner is None:
        runner = EncoderRunner(encoder.to(device), device, precision)
    return runner


def make_decoder_runner(net, device="cpu", backend="auto", cache_dir=None):
    """The box-prompt decoder callable for ``device``: OpenVINO on CPUs where it is installed (``backend``
    'auto' or 'openvino'), else None (the caller runs :func:`models.box_prompt_decode` in PyTorch)."""
    if resolve_backend(device, backend) != "openvino":
        return None
    try:
        return OpenVINODecoderRunner(net, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - missing package or conversion failure: use torch
        log.warning("OpenVINO decoder unavailable (%s); using torch", exc)
        return None
