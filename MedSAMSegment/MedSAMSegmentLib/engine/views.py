"""What the model sees of a slice: the whole slice or a crop around a small box, and the geometry between them.

Two rectangle types, never mixed:

* :data:`~MedSAMSegmentLib.geometry.Box`, ``(x0, y0, x1, y1)``: a prompt box in slice pixels, column before row,
  corners inclusive, floats (boxes are interpolated).
* :class:`Crop`, ``(row0, row1, col0, col1)``: the part of a slice array a crop view cuts out, row before column,
  integer, end exclusive, so ``image[row0:row1, col0:col1]`` is the crop. A view is a :data:`Region`: a
  :class:`Crop`, or ``None`` for the whole slice.

A crop view is given to the model as if it were a slice of the crop's size: its box is shifted into the crop
(:func:`shift_box`) and its mask pasted back into a slice-sized mask (:func:`paste`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Tuple

import numpy as np

from ..geometry import Box, KeyBoxSet
from ..settings import SegmentationSettings

#: ``zoom="auto"`` crops around boxes whose longest side is below this many model pixels (of a 256 input) ...
ZOOM_BELOW = 48.0
#: ... so that the box's longest side fills about this many pixels of the model input ...
ZOOM_TARGET = 96.0
#: ... but never crops less than this many slice pixels.
ZOOM_MIN_CROP = 48
#: ``refine="box"`` keeps mask pixels within this many pixels of the box.
CLIP_MARGIN = 2.0


class Crop(NamedTuple):
    """Rows ``row0 .. row1 - 1`` and columns ``col0 .. col1 - 1`` of a slice (end exclusive, array order).

    A plain tuple underneath: it unpacks as ``r0, r1, c0, c1``, compares and hashes as the 4-tuple."""

    row0: int
    row1: int
    col0: int
    col1: int

    @classmethod
    def from_slices(cls, rows: slice, cols: slice) -> Crop:
        """The crop that ``image[rows, cols]`` cuts (both slices with explicit start and stop)."""
        return cls(int(rows.start), int(rows.stop), int(cols.start), int(cols.stop))

    @property
    def shape(self) -> Tuple[int, int]:
        """(rows, columns) of the cropped image."""
        return (self.row1 - self.row0, self.col1 - self.col0)

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The cropped part of a slice image (a view, not a copy)."""
        return image[self.row0 : self.row1, self.col0 : self.col1]

    def holds(self, box: Box) -> bool:
        """Whether ``box`` (inclusive pixel corners) lies inside this crop."""
        x0, y0, x1, y1 = box
        return self.col0 <= x0 and x1 <= self.col1 - 1 and self.row0 <= y0 and y1 <= self.row1 - 1


#: A view of a slice: a :class:`Crop`, or None for the whole slice.
Region = Optional[Crop]


def view_image(image: np.ndarray, region: Region) -> np.ndarray:
    """The pixels of ``image`` (one slice) that the view ``region`` shows."""
    return image if region is None else region.cut(image)


def view_shape(region: Region) -> Optional[Tuple[int, int]]:
    """The decoder's output size for a view: the crop's shape, or None for the slice's own size."""
    return None if region is None else region.shape


def shift_box(box: Box, region: Region) -> Box:
    """``box`` in the pixel coordinates of the view ``region`` (unchanged, as a tuple, for the whole slice)."""
    if region is None:
        return tuple(box)
    x0, y0, x1, y1 = box
    return (x0 - region.col0, y0 - region.row0, x1 - region.col0, y1 - region.row0)


def paste(mask: np.ndarray, region: Region, slice_size: Tuple[int, int]) -> np.ndarray:
    """A slice-sized mask from the mask of the view ``region`` (False outside the crop)."""
    if region is None:
        return mask
    full = np.zeros(slice_size, dtype=bool)
    full[region.row0 : region.row1, region.col0 : region.col1] = mask
    return full


def target_is_small(key_boxes: KeyBoxSet, slice_size: Tuple[int, int], input_size: int = 256) -> bool:
    """Whether every key box's longest side is below :data:`ZOOM_BELOW` model pixels: a target small on every
    slice (a lesion), as opposed to a large target whose tips have small boxes."""
    scale = input_size / max(slice_size)
    return all(max(k.box[2] - k.box[0] + 1.0, k.box[3] - k.box[1] + 1.0) * scale < ZOOM_BELOW
               for k in key_boxes.boxes)


def target_zoom(zoom: str, key_boxes: KeyBoxSet, slice_size: Tuple[int, int], input_size: int = 256) -> str:
    """``zoom`` made concrete for this target: ``size`` becomes ``union`` when the target is small on every slice
    (:func:`target_is_small`), else ``best``; other values are returned as they are."""
    if zoom != "size":
        return zoom
    return "union" if target_is_small(key_boxes, slice_size, input_size) else "best"


def resolve_zoom(settings: SegmentationSettings, key_boxes: KeyBoxSet, slice_size: Tuple[int, int],
                 input_size: int = 256) -> SegmentationSettings:
    """``settings`` with its zoom made concrete for this target (:func:`target_zoom`)."""
    zoom = target_zoom(settings.zoom, key_boxes, slice_size, input_size)
    return settings if zoom == settings.zoom else dataclasses.replace(settings, zoom=zoom)


def zoom_region(box: Box, slice_size: Tuple[int, int], input_size: int = 256, force: bool = False) -> Region:
    """The crop for ``zoom="auto"``: None when the box is not small in model pixels, else a square (clipped to
    the slice) around it whose side makes the box about :data:`ZOOM_TARGET` model pixels.

    The side is snapped up to a step of 2**(1/4) and the corner to a grid of 1/8 of the side, so that a box
    moving a little keeps its crop and the crop's cached embedding. ``force`` crops whatever the box's size
    (for ``retry``), still not when the crop would be most of the slice. A box that does not fit its crop
    gets None (the whole slice)."""
    rows, cols = slice_size
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0 + 1.0, y1 - y0 + 1.0)
    longest = max(rows, cols)
    if side * input_size / longest >= ZOOM_BELOW and not force:
        return None
    wanted = max(side * input_size / ZOOM_TARGET, float(ZOOM_MIN_CROP))
    crop = int(round(2 ** (np.ceil(4 * np.log2(wanted)) / 4)))
    if crop >= 0.75 * longest:
        return None
    grid = max(1, crop // 8)

    def place(centre: float, size: int, extent: int) -> Tuple[int, int]:
        size = min(size, extent)
        start = int(round((centre - size / 2.0) / grid)) * grid
        start = min(max(start, 0), extent - size)
        return start, start + size

    region = Crop(*place((y0 + y1) / 2.0, crop, rows), *place((x0 + x1) / 2.0, crop, cols))
    return region if region.holds(box) else None


def first_view(box: Box, zoom: str, slice_size: Tuple[int, int], input_size: int) -> Region:
    """The view a box is decoded in first under ``zoom``: whole slices for ``off``, else :func:`zoom_region`."""
    return None if zoom == "off" else zoom_region(box, slice_size, input_size)


def other_view(box: Box, region: Region, slice_size: Tuple[int, int], input_size: int) -> Region:
    """The second view of a box decoded in ``region``: a forced crop after the whole slice, else the whole slice."""
    return zoom_region(box, slice_size, input_size, force=True) if region is None else None


def combine_boxes(interpolated: Box, guided: Box, how: str, slice_size: Tuple[int, int]) -> Box:
    """A guided slice's box from its interpolated box and the previous mask's box, clipped to the slice.

    ``how``: ``mask`` the mask's box alone, ``union`` the box holding both, ``mean`` their mean."""
    rows, cols = slice_size
    a, b = np.asarray(interpolated, dtype=float), np.asarray(guided, dtype=float)
    if how == "mask":
        combined = b
    elif how == "union":
        combined = np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])
    else:
        combined = (a + b) / 2.0
    x0, y0, x1, y1 = combined.tolist()
    return (max(x0, 0.0), max(y0, 0.0), min(x1, cols - 1.0), min(y1, rows - 1.0))


def refine_to_box(mask: np.ndarray, box: Box, margin: float = CLIP_MARGIN) -> np.ndarray:
    """``refine="box"``: the mask inside the box grown by ``margin``, holes filled."""
    from scipy import ndimage

    rows, cols = mask.shape
    x0, y0, x1, y1 = box
    r0, r1 = max(int(np.floor(y0 - margin)), 0), min(int(np.ceil(y1 + margin)), rows - 1)
    c0, c1 = max(int(np.floor(x0 - margin)), 0), min(int(np.ceil(x1 + margin)), cols - 1)
    out = np.zeros_like(mask, dtype=bool)
    out[r0 : r1 + 1, c0 : c1 + 1] = mask[r0 : r1 + 1, c0 : c1 + 1]
    if out.any():
        out = ndimage.binary_fill_holes(out)
    return out
