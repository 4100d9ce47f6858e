"""Model weight files: loading a checkpoint safely (tensors only, no pickled objects), the provenance a
fine-tuned checkpoint carries, and file digests.

Qt-free; torch is imported when a checkpoint is loaded.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional, Tuple

from ..io.error_text import first_line

#: The key under which a fine-tuned checkpoint keeps its provenance (a JSON string) beside its ``model`` weights.
PROVENANCE_KEY = "medsam_segment_provenance"


class ModelError(RuntimeError):
    """A model that cannot be loaded or run; the message says why and how to fix it."""


class CheckpointError(ModelError):
    """The checkpoint file the user gave does not exist or is not a checkpoint (the user's input, not a fault)."""


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str) -> Tuple[dict, Optional[dict]]:
    """A checkpoint's state dict, loaded safely (tensors only), with clear errors for files that are not one, and
    the provenance ``medsam-segment finetune`` stored beside it (None for other checkpoints)."""
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist; check the path") from exc
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({first_line(exc)}); --checkpoint must be the "
                              "model's weights file, e.g. medsam_vit_b.pth for --model vit_b") from exc
    provenance = None
    if isinstance(state, dict):
        if isinstance(state.get(PROVENANCE_KEY), str):
            try:
                provenance = json.loads(state[PROVENANCE_KEY])
            except ValueError as exc:
                raise CheckpointError(f"{path}: its provenance is not JSON ({first_line(exc)}); fine-tune again to "
                                      "write a complete checkpoint") from exc
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds no model weights (a state dict was expected); --checkpoint must be the "
                              "model's weights file")
    return state, provenance


def load_state_dict(path: str) -> dict:
    """A checkpoint's state dict (:func:`load_checkpoint`)."""
    return load_checkpoint(path)[0]


def fine_tune_description(provenance: Optional[dict]) -> str:
    """One phrase saying what a fine-tuned checkpoint was trained on ("" for other checkpoints)."""
    if not provenance:
        return ""
    cases = provenance.get("cases") or []
    return f"decoder fine-tuned on {len(cases)} case(s) on {provenance.get('created', 'an unknown date')}"
