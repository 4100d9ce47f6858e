"""The bundled demo: a real CT lesion, three key boxes, LiteMedSAM, a picture and the DSC.

Used by ``medsam-segment demo`` (and ``make demo``) and by the Slicer module's "Load sample".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .geometry import Box, KeyBoxSet, take_slice

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DEMO_IMAGE = os.path.join(DATA_DIR, "demo_ct_lesion.npz")
DEMO_BOXES = os.path.join(DATA_DIR, "demo_boxes.json")


@dataclass
class DemoOutcome:
    dice: float
    nsd: float
    seconds: float
    files: Dict[str, str]


def run_demo(output_dir: str = "demo_output", device: str = "auto", verbose: bool = True) -> DemoOutcome:
    """Segment the bundled case, write ``segmentation.seg.nrrd``, ``segmentation.nii.gz`` and ``montage.png``."""
    from . import io, pipeline
    from .metrics import dice, normalised_surface_dice
    from .models import load_model
    from .session import run_segmentation

    started = time.perf_counter()
    volume = io.read_image(DEMO_IMAGE)
    reference, _ = io.read_mask(DEMO_IMAGE)
    key_boxes = io.read_key_boxes([DEMO_BOXES], volume)
    model = load_model("lite", device=device)
    if verbose:
        print(f"LiteMedSAM on {model.device_description} ({model.acceleration}); {len(key_boxes.boxes)} key "
              f"boxes on slices {[k.slice_index for k in key_boxes.sorted()]} of {DEMO_IMAGE}", flush=True)
    result = run_segmentation(model, volume.array, key_boxes, pipeline.SegmentationSettings())
    seconds = time.perf_counter() - started
    os.makedirs(output_dir, exist_ok=True)
    files = {
        "segmentation": os.path.join(output_dir, "segmentation.seg.nrrd"),
        "mask": os.path.join(output_dir, "segmentation.nii.gz"),
        "montage": os.path.join(output_dir, "montage.png"),
    }
    io.write_mask(files["segmentation"], result.mask, volume, segment_name="lesion")
    io.write_mask(files["mask"], result.mask, volume)
    write_montage(files["montage"], volume.array, key_boxes.slice_axis, result.mask, reference, result.boxes,
                  key_slices=[k.slice_index for k in key_boxes.boxes])
    score = dice(result.mask, reference)
    surface = normalised_surface_dice(result.mask, reference, volume.spacing_kji(), tolerance_mm=2.0)
    if verbose:
        first, last = result.slice_range
        print(f"segmented slices {first}-{last} in {seconds:.1f} s (model load included)")
        print(f"DSC against the reference mask: {score:.3f}   NSD (2 mm): {surface:.3f}")
        for name, path in files.items():
            print(f"wrote {name}: {path}")
    return DemoOutcome(score, surface, seconds, files)


def write_montage(
    path: str,
    volume_u8: np.ndarray,
    slice_axis: int,
    prediction: np.ndarray,
    reference: Optional[np.ndarray],
    boxes: Dict[int, Box],
    key_slices: Sequence[int] = (),
    tile: int = 256,
    columns: int = 4,
) -> None:
    """A PNG of the segmented slices around the target: reference outline green, prediction cyan,
    key boxes thick yellow, interpolated boxes thin orange."""
    import cv2

    slices = sorted(boxes)
    if not slices:
        raise ValueError("nothing to draw: no segmented slices")
    x0, y0, x1, y1 = _union_box([boxes[s] for s in slices])
    pad = max(16.0, 0.35 * max(x1 - x0, y1 - y0))
    rows_total, cols_total = take_slice(volume_u8, slice_axis, slices[0]).shape[:2]
    cx0, cy0 = int(max(0, x0 - pad)), int(max(0, y0 - pad))
    cx1, cy1 = int(min(cols_total - 1, x1 + pad)), int(min(rows_total - 1, y1 + pad))
    scale = tile / max(cx1 - cx0 + 1, cy1 - cy0 + 1)
    tiles = []
    for s in slices:
        image = take_slice(volume_u8, slice_axis, s)[cy0 : cy1 + 1, cx0 : cx1 + 1]
        image = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
        canvas = np.zeros((tile, tile, 3), dtype=np.uint8)
        resized = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_LINEAR)
        canvas[: size[1], : size[0]] = resized
        for mask, colour in ((reference, (0, 200, 0)), (prediction, (0, 220, 255))):
            if mask is None:
                continue
            crop = take_slice(mask, slice_axis, s)[cy0 : cy1 + 1, cx0 : cx1 + 1].astype(np.uint8)
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            layer = canvas[: size[1], : size[0]].copy()
            cv2.drawContours(layer, contours, -1, colour, 2)
            canvas[: size[1], : size[0]] = layer
        bx0, by0, bx1, by1 = boxes[s]
        p0 = (int(round((bx0 - cx0) * scale)), int(round((by0 - cy0) * scale)))
        p1 = (int(round((bx1 - cx0) * scale)), int(round((by1 - cy0) * scale)))
        is_key = s in key_slices
        cv2.rectangle(canvas, p0, p1, (255, 255, 0) if is_key else (255, 128, 0), 2 if is_key else 1)
        label = f"slice {s}" + (" (key)" if is_key else "")
        cv2.putText(canvas, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(canvas)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[n : n + columns]) for n in range(0, len(tiles), columns)]
    picture = np.vstack(rows)
    from .io.atomic_files import atomic_output

    with atomic_output(path) as tmp:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("could not encode the montage as PNG")
        with open(tmp, "wb") as handle:
            handle.write(encoded.tobytes())


def _union_box(boxes: Sequence[Box]) -> Tuple[float, float, float, float]:
    array = np.asarray(boxes, dtype=float)
    return float(array[:, 0].min()), float(array[:, 1].min()), float(array[:, 2].max()), float(array[:, 3].max())


def demo_key_boxes(volume_shape: Sequence[int]) -> KeyBoxSet:
    """The demo's key boxes as a :class:`KeyBoxSet` (for Slicer's "Load sample")."""
    from .io import read_box_json

    return read_box_json(DEMO_BOXES, volume_shape)
