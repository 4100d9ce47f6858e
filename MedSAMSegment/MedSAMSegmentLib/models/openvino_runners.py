"""The OpenVINO runners for the CPU: LiteMedSAM's encoder and its box-prompt decoder converted with
``openvino.convert_model``, and the per-user cache of converted models (IR files checked by SHA-256).

Qt-free; torch and openvino are imported lazily inside the functions, openvino only through
:func:`import_openvino`. ``MEDSAM_CACHE_DIR`` sets where converted models are kept (default
``~/.cache/medsam-segment``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Dict, Optional

from .hardware import allowed_cpus, describe_acceleration, inference_threads

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Per-user cache folder (MEDSAM_CACHE_DIR, else XDG_CACHE_HOME or ~/.cache, /medsam-segment)."""
    env = os.environ.get("MEDSAM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medsam-segment"


def _weights_key(module) -> str:
    """Short hash of a module's weights (so a cached converted model matches its checkpoint)."""
    import hashlib

    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def import_openvino():
    """The ``openvino`` module, imported with its usage telemetry left out.

    Importing ``openvino`` imports its conversion tool, which sends usage events to an analytics service from a
    forked child process unless the user opted out (``openvino_telemetry``). A medical tool sends nothing, and a
    forked child that waits on a network it cannot reach would also hold the worker's pipes open after the worker
    died. When this process has not imported openvino yet, ``openvino_telemetry`` is made unimportable, so the
    conversion tool uses its own no-op stub. Raises ImportError when openvino is not installed.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None in sys.modules: `import` raises ImportError
    import openvino

    return openvino


def openvino_available() -> bool:
    try:
        import_openvino()
    except ImportError:
        return False
    return True


def _ir_digest(xml: Path) -> str:
    """SHA-256 of an IR's .xml and .bin together."""
    import hashlib

    digest = hashlib.sha256()
    for path in (xml, xml.with_suffix(".bin")):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_cached(core, xml: Path):
    """The cached IR at ``xml`` when its .xml and .bin match the SHA-256 saved beside them, else None."""
    try:
        if xml.with_suffix(".sha256").read_text().strip() != _ir_digest(xml):
            return None
        return core.read_model(str(xml))
    except Exception:  # noqa: BLE001 - a missing, truncated or unreadable file: the model is converted again
        return None


def load_or_convert(core, name: str, cache_dir, convert):
    """An OpenVINO model read from the per-user cache (``<cache>/openvino/<name>_ov<version>.xml``, or in
    ``cache_dir``), else made by ``convert()`` (a TorchScript trace: tens of seconds on 2 cores) and saved there
    for next time. A cached model is used only when its .xml and .bin match the SHA-256 saved with them
    (``.sha256``): a truncated, corrupt or half-replaced entry is converted again, never run. A cache that cannot
    be written is logged and skipped."""
    ov = import_openvino()
    import torch

    cache = Path(cache_dir) if cache_dir else default_cache_dir() / "openvino"
    xml = cache / f"{name}_ov{ov.__version__.split('-')[0]}.xml"
    if xml.exists():
        model = _read_cached(core, xml)
        if model is not None:
            return model
        log.info("the cached OpenVINO model %s does not verify; converting it again", xml)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings from the vendored modules
        model = convert()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = xml.with_suffix(f".{os.getpid()}.tmp.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        tmp_digest = tmp.with_suffix(".sha256")
        tmp_digest.write_text(_ir_digest(tmp))
        # The digest goes last: a reader sees no digest, or one that its files match or do not (then it converts).
        os.replace(tmp, xml)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp_digest, xml.with_suffix(".sha256"))
    except OSError as exc:
        log.info("could not cache the OpenVINO model in %s: %s", cache, exc)
    return model


def cpu_threading(num_threads: Optional[int] = None) -> Dict[str, object]:
    """OpenVINO's CPU thread settings: ``num_threads`` (default :func:`hardware.inference_threads`), pinned to
    cores only when they fill the cores this process may use. OpenVINO pins its threads to the first cores of the
    process's mask, so processes that share a mask (Ray actors on one node) would all pin to the same cores; with
    fewer threads than cores the threads are left to the operating system."""
    threads = int(num_threads or inference_threads())
    return {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": threads >= len(allowed_cpus())}


class OpenVINOEncoderRunner:
    """The TinyViT encoder converted with ``openvino.convert_model`` and compiled for the CPU.

    Batch 1 per infer call (:data:`CPU_MAX_BATCH`); ``precision`` 'fp32' sets INFERENCE_PRECISION_HINT=f32,
    'bf16' lets OpenVINO use bf16 on AMX. Needs the ``openvino`` pip package only (no ONNX file). The converted
    model is kept in ``cache_dir`` (see :func:`load_or_convert`).
    """

    def __init__(self, encoder, precision="fp32", cache_dir=None, num_threads=None):
        ov = import_openvino()
        import torch

        self.device = torch.device("cpu")
        self.precision = precision
        self.channels_last = False
        core = ov.Core()
        model = load_or_convert(
            core, f"tinyvit_encoder_{_weights_key(encoder)}", cache_dir,
            lambda: ov.convert_model(encoder.eval(), example_input=torch.zeros(1, 3, 256, 256), input=[1, 3, 256, 256]),
        )
        cfg = {"PERFORMANCE_HINT": "LATENCY",
               "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
               **cpu_threading(num_threads)}
        self._compiled = core.compile_model(model, "CPU", cfg)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return describe_acceleration("cpu", self.precision, backend="openvino")

    def __call__(self, batch):
        import numpy as np
        import torch

        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = []
        with self._lock:
            for i in range(x.shape[0]):
                self._request.infer({0: x[i : i + 1]})
                outs.append(np.array(self._request.get_output_tensor(0).data, copy=True))
        return torch.from_numpy(np.concatenate(outs))


class OpenVINODecoderRunner:
    """LiteMedSAM's prompt encoder (boxes only) and mask decoder as one OpenVINO fp32 model, for the CPU.

    ``runner(embeddings (B, 256, 64, 64), boxes (B, 1, 4) in model pixels) -> (low-res logits (B, 1, 256, 256),
    predicted IoU (B, 1))``, the outputs of :func:`models.box_prompt_decode` within 1e-4 (max abs). The graph is
    converted from :class:`box_decoder.TokenMajorBoxDecoder` (the same weights and maths without the image-token
    transposes of SAM's code, faster under OpenVINO: docs/speed.md). The IR is cached like the encoder's.
    """

    def __init__(self, net, num_threads=None, cache_dir=None):
        ov = import_openvino()
        import torch

        from .box_decoder import GRAPH_VERSION, TokenMajorBoxDecoder

        module = TokenMajorBoxDecoder(net).eval()
        example = (torch.zeros(2, 256, 64, 64), torch.tensor([[[10.0, 20.0, 100.0, 120.0]]] * 2))
        core = ov.Core()
        model = load_or_convert(
            core, f"litemedsam_token_major_decoder_v{GRAPH_VERSION}_{_weights_key(module)}", cache_dir,
            lambda: ov.convert_model(module, example_input=example,
                                     input=[ov.PartialShape([-1, 256, 64, 64]), ov.PartialShape([-1, 1, 4])]),
        )
        cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **cpu_threading(num_threads)}
        self._compiled = core.compile_model(model, "CPU", cfg)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, embeddings, boxes):
        import numpy as np
        import torch

        e = embeddings.detach().to("cpu", torch.float32).contiguous().numpy()
        b = boxes.detach().to("cpu", torch.float32).contiguous().numpy()
        with self._lock:
            self._request.infer({0: e, 1: b}, share_inputs=True)
            low_res = np.array(self._request.get_output_tensor(0).data, copy=True)
            iou = np.array(self._request.get_output_tensor(1).data, copy=True)
        return torch.from_numpy(low_res), torch.from_numpy(iou)


