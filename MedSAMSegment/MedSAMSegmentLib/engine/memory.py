"""Encoder batch sizes and what to do when a batch does not fit in memory.

The policy on an out-of-memory error: halve the batch; at one slice a batch on a GPU, move the model to the CPU;
on the CPU at one slice, give up with a :class:`MemoryError` that says so. Each step warns with a
``ResourceWarning`` (the command line shows those).
"""

from __future__ import annotations

import warnings

from ..models import SliceModel


def default_batch_size(model: SliceModel) -> int:
    """Slices per encoder batch: measured best on the device, bounded by free memory (see ``hardware``)."""
    from ..models import hardware

    return hardware.encoder_batch_size(model.device, model.precision)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception from torch means the device ran out of memory."""
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def release_accelerator_memory() -> None:
    """Return torch's cached GPU memory to the device (nothing on the CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def batch_size_after_out_of_memory(model: SliceModel, batch_size: int, exc: BaseException) -> int:
    """The batch size to retry with after ``exc`` (an out-of-memory error) encoding ``batch_size`` slices.

    Halves the batch; at 1 on a GPU moves ``model`` to the CPU and returns 1; at 1 on the CPU raises
    :class:`MemoryError`. Its warnings name the line that called the encoding function."""
    release_accelerator_memory()
    if batch_size > 1:
        smaller = max(1, batch_size // 2)
        warnings.warn(f"out of memory on {model.device}; retrying with batches of {smaller} slices",
                      ResourceWarning, stacklevel=3)
        return smaller
    if model.device != "cpu":
        previous = model.device
        model.move_to("cpu")
        warnings.warn(f"out of memory on {previous} even one slice at a time; continuing on the CPU",
                      ResourceWarning, stacklevel=3)
        return 1
    raise MemoryError(f"out of memory encoding one slice on the CPU ({exc}); close other programs") from exc
