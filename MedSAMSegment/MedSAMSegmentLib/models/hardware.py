"""What the machine offers and how LiteMedSAM inference uses it: CPU features, physical cores, torch threads, the
glibc allocator, free memory and the encoder batch size, the precision 'auto' resolves to, and the one-line
description of all that for the CLI. Each default was chosen from measurements (``docs/speed.md``).

Qt-free; torch is imported lazily inside the functions.

Environment defaults (an explicit argument wins): ``MEDSAM_PRECISION`` (fp32|bf16|fp16|auto), ``MEDSAM_NUM_THREADS``,
``MEDSAM_BATCH_SIZE`` (upper bound), ``MEDSAM_NO_MALLOPT=1``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import List

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


def allowed_cpus() -> List[int]:
    """The logical CPUs this process may run on (its affinity mask; every CPU where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Number of physical cores available to this process (hyper-threads not counted)."""
    allowed = allowed_cpus()
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


def inference_threads() -> int:
    """Threads the model's runtimes (torch, OpenVINO) use: ``MEDSAM_NUM_THREADS`` when set (a cluster worker
    sets it to the CPUs it was given), else the physical cores available to this process. Hyper-threads share
    the AVX-512/AMX units; one thread per physical core is the fastest setting for the encoder's GEMMs."""
    env = os.environ.get("MEDSAM_NUM_THREADS")
    return max(1, int(env)) if env else physical_cores()


def configure_torch_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``num_threads`` (default :func:`inference_threads`); returns the number
    set (at least one)."""
    import torch

    if num_threads is None:
        num_threads = inference_threads()
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
        libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them (find_library would fork ldconfig)
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
