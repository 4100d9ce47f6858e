"""Runtime settings for LiteMedSAM inference: threads, allocator, batch size, precision and the encoder and decoder
runtimes (PyTorch or OpenVINO), each default chosen from measurements (``docs/speed.md``).

Qt-free; torch (and openvino) are imported lazily inside the functions. Every fp32 path gives the published
recipe's embedding within :data:`FP32_EMBEDDING_REL_TOL`; bf16 is opt-in (:data:`CPU_AUTO_BF16`).

Environment defaults (an explicit argument wins): ``MEDSAM_PRECISION`` (fp32|bf16|fp16|auto), ``MEDSAM_BACKEND``
(auto|torch|openvino), ``MEDSAM_NUM_THREADS``, ``MEDSAM_BATCH_SIZE`` (upper bound), ``MEDSAM_NO_MALLOPT=1``,
``MEDSAM_CACHE_DIR`` (where converted OpenVINO models are kept; default ``~/.cache/medsam-segment``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: Largest relative L2 deviation of the bf16 path's embedding (bf16 GEMMs, fp32 residual stream) from fp32.
BF16_EMBEDDING_REL_TOL = 0.06
#: Smallest Dice between masks decoded (same box) from the bf16 and from the fp32 embedding.
BF16_MASK_DICE_FLOOR = 0.97
#: Largest relative L2 deviation of any fp32 path (channels_last, OpenVINO, another allocator) from the recipe's.
FP32_EMBEDDING_REL_TOL = 1e-4

#: Peak extra memory per slice in one encoder batch (TinyViT's attention maps, MLP hidden, qkv and residual
#: copies, with a margin): the unit :func:`encoder_batch_size` divides free memory by.
ENCODER_BYTES_PER_SLICE = {"fp32": 200 * 2**20, "bf16": 160 * 2**20, "fp16": 160 * 2**20}
#: Bytes kept per cached embedding (1, 256, 64, 64) fp32.
EMBEDDING_BYTES = 256 * 64 * 64 * 4
#: Largest encoder batch on a CPU (batch 1 was the fastest per slice there).
CPU_MAX_BATCH = 1
#: Largest encoder batch on a GPU; free memory bounds it further.
GPU_MAX_BATCH = 16
#: Whether 'auto' picks bf16 on AMX CPUs. False: bf16 moves some cases' DSC by more than the speed target
#: allows (docs/speed.md); users opt in with precision='bf16' (CLI --precision bf16) or MEDSAM_PRECISION=bf16.
CPU_AUTO_BF16 = False

_ALLOCATOR_DONE = False
_LOCK = threading.Lock()


# --------------------------------------------------------------------------- hardware facts
def cpu_flags() -> set:
    """x86 CPU feature flags from /proc/cpuinfo (empty set elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_amx_bf16() -> bool:
    return "amx_bf16" in cpu_flags()


def cpu_has_avx512_bf16() -> bool:
    return "avx512_bf16" in cpu_flags()


def physical_cores() -> int:
    """Number of physical cores available to this process (hyper-threads not counted)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        allowed = set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "core_id") as f1, open(base + "physical_package_id") as f2:
                cores.add((f2.read().strip(), f1.read().strip()))
        except OSError:
            cores.add(("?", str(cpu)))
    n = len(cores) or len(allowed) or 1
    try:  # psutil knows better on macOS / Windows
        import psutil  # type: ignore

        p = psutil.cpu_count(logical=False)
        if p and not os.path.exists("/sys/devices/system/cpu/cpu0/topology/core_id"):
            n = p
    except ImportError:
        pass
    return max(1, n)


def configure_torch_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to the physical core count (or MEDSAM_NUM_THREADS).

    Hyper-threads share the AVX-512/AMX units; one thread per physical core is the
    fastest setting for the encoder's GEMMs.  Returns the number set.
    """
    import torch

    if num_threads is None:
        env = os.environ.get("MEDSAM_NUM_THREADS")
        num_threads = int(env) if env else physical_cores()
    num_threads = max(1, int(num_threads))
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return num_threads


def configure_allocator(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 1 * 2**30,
                        top_pad: int = 256 * 2**20) -> bool:
    """Keep freed large tensors in glibc's heap instead of unmapping them (Linux/glibc only).

    Equivalent to MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_/MALLOC_TOP_PAD_ but callable
    after the process started (Slicer, the CLI).  32 MiB is glibc's largest mmap threshold;
    the trim threshold bounds how much freed memory stays mapped (it is reused by the next
    batch, so the peak does not grow).  Idempotent; returns True when applied.
    """
    global _ALLOCATOR_DONE
    if _ALLOCATOR_DONE:
        return True
    if os.environ.get("MEDSAM_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl or another libc: nothing to do
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, int(mmap_threshold)) == 1
    ok &= mallopt(m_trim_threshold, int(trim_threshold)) == 1
    ok &= mallopt(m_top_pad, int(top_pad)) == 1
    _ALLOCATOR_DONE = bool(ok)
    return _ALLOCATOR_DONE


# --------------------------------------------------------------------------- memory and batch size
def available_memory_bytes(device="cpu") -> int:
    """Free memory on the device: CUDA mem_get_info, else psutil / /proc/meminfo MemAvailable."""
    dev = str(device)
    if dev.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(dev))
        return int(free)
    try:
        import psutil  # type: ignore

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            info = {ln.split(":")[0]: ln.split()[1] for ln in fh if ":" in ln}
        return int(info.get("MemAvailable", info.get("MemFree", 0))) * 1024
    except (OSError, ValueError):
        return 2 * 2**30  # unknown platform: assume a modest 2 GiB


def choose_batch_size(free_memory_bytes: int, per_slice_bytes: int, max_batch: int = CPU_MAX_BATCH,
                      min_batch: int = 1, fraction: float = 0.5, budget_bytes: int | None = None) -> int:
    """Largest batch whose working set fits in ``fraction`` of the free memory.

    ``budget_bytes`` (e.g. a peak-memory budget minus what the caller already holds)
    bounds it further.  Never below ``min_batch`` (1): a single slice always runs.
    """
    if per_slice_bytes <= 0:
        raise ValueError("per_slice_bytes must be positive")
    usable = max(0, int(free_memory_bytes * fraction))
    if budget_bytes is not None:
        usable = min(usable, max(0, int(budget_bytes)))
    n = usable // int(per_slice_bytes)
    env = os.environ.get("MEDSAM_BATCH_SIZE")
    if env:
        max_batch = min(max_batch, max(1, int(env)))
    return int(max(min_batch, min(max_batch, n)))


def encoder_batch_size(device="cpu", precision: str = "fp32", budget_bytes: int | None = None) -> int:
    """Batch size for the encoder on ``device`` from free memory and the measured per-slice bytes."""
    dev = str(device)
    per_slice = ENCODER_BYTES_PER_SLICE.get(precision, ENCODER_BYTES_PER_SLICE["fp32"])
    max_batch = GPU_MAX_BATCH if dev.startswith("cuda") or dev.startswith("mps") else CPU_MAX_BATCH
    return choose_batch_size(available_memory_bytes(dev), per_slice, max_batch=max_batch, budget_bytes=budget_bytes)


# --------------------------------------------------------------------------- precision
def _explicit_or_environment(value: str | None, variable: str) -> str:
    """An explicit choice wins; only ``auto`` (or nothing) defers to the environment variable, then to ``auto``."""
    value = (value or "auto").lower()
    return value if value != "auto" else (os.environ.get(variable) or "auto").lower()


def resolve_precision(device="cpu", precision: str = "auto") -> str:
    """'auto' -> the fastest path whose masks were checked against fp32 on this kind of hardware."""
    precision = _explicit_or_environment(precision, "MEDSAM_PRECISION")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    dev = str(device)
    if precision != "auto":
        if precision == "fp16" and not dev.startswith(("cuda", "mps")):
            raise ValueError("fp16 is only offered on GPUs")
        return precision
    if dev.startswith(("cuda", "mps")):
        return "fp32"  # GPUs: bf16/fp16 masks deviate from fp32 (docs/speed.md) and fp32 is fast enough
    if CPU_AUTO_BF16 and cpu_has_amx_bf16() and _torch_cpu_bf16_ok():
        return "bf16"
    return "fp32"


def _torch_cpu_bf16_ok() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return bool(torch.backends.mkldnn.is_available())


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


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
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
    import openvino as ov
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


class OpenVINOEncoderRunner:
    """The TinyViT encoder converted with ``openvino.convert_model`` and compiled for the CPU.

    Batch 1 per infer call (:data:`CPU_MAX_BATCH`); ``precision`` 'fp32' sets INFERENCE_PRECISION_HINT=f32,
    'bf16' lets OpenVINO use bf16 on AMX. Needs the ``openvino`` pip package only (no ONNX file). The converted
    model is kept in ``cache_dir`` (see :func:`load_or_convert`).
    """

    def __init__(self, encoder, precision="fp32", cache_dir=None, num_threads=None):
        import openvino as ov
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
               "INFERENCE_NUM_THREADS": int(num_threads or physical_cores())}
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


class OpenVINODecoderRunner:
    """LiteMedSAM's prompt encoder (boxes only) and mask decoder as one OpenVINO fp32 model, for the CPU.

    ``runner(embeddings (B, 256, 64, 64), boxes (B, 1, 4) in model pixels) -> (low-res logits (B, 1, 256, 256),
    predicted IoU (B, 1))``, the outputs of :func:`models.box_prompt_decode` within 1e-4 (max abs). The graph is
    converted from :class:`box_decoder.TokenMajorBoxDecoder` (the same weights and maths without the image-token
    transposes of SAM's code, faster under OpenVINO: docs/speed.md). The IR is cached like the encoder's.
    """

    def __init__(self, net, num_threads=None, cache_dir=None):
        import openvino as ov
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
        cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
               "INFERENCE_NUM_THREADS": int(num_threads or physical_cores())}
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


def describe_acceleration(device="cpu", precision: str | None = None, backend: str = "torch") -> str:
    """One line for the CLI's 'using ...': device, numeric path, threads, allocator."""
    import torch

    device = torch.device(device)
    precision = precision or resolve_precision(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name} (CUDA), encoder {precision}"
    if device.type == "mps":
        return f"Apple GPU (MPS), encoder {precision}"
    flags = cpu_flags()
    isa = "AMX-BF16" if "amx_bf16" in flags else ("AVX512-BF16" if "avx512_bf16" in flags else
                                                 ("AVX-512" if "avx512f" in flags else
                                                  ("AVX2" if "avx2" in flags else "generic")))
    if backend == "openvino":
        path = f"OpenVINO {precision}"
    else:
        path = {"bf16": "torch bf16 (AMX GEMMs, fp32 residual)", "fp32": "torch fp32"}.get(precision, precision)
    alloc = ", glibc mallopt" if _ALLOCATOR_DONE else ""
    return f"CPU {isa}, {torch.get_num_threads()} threads, encoder {path}{alloc}"
