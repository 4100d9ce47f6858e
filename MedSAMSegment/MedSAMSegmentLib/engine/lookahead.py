"""The slice views a run will encode, planned from the key boxes placed so far, so that they can be encoded while
the user is still drawing (the embeddings do not depend on the boxes, only on the view's pixels)."""

from __future__ import annotations

from typing import List, Optional, Tuple

from ..geometry import KeyBoxSet, interpolate_boxes
from ..settings import SegmentationSettings
from .alternate import reads_ahead, skipped_slices
from .encoding import View
from .views import first_view

#: At most this many slices are encoded on speculation past the newest key box.
SPECULATION_LIMIT = 10
#: Slices guessed around a first key box, before the user's spacing is known.
FIRST_GUESS = 3


def views_ahead(keys: KeyBoxSet, settings: SegmentationSettings, slice_size: Tuple[int, int], input_size: int,
                n_slices: int, newest: Optional[int] = None, beyond: int = 0) -> List[View]:
    """The views worth encoding before Segment is pressed, most useful first, without repeats.

    1. Every slice from the first to the last key box: the view its interpolated box is decoded in first under
       ``settings.zoom``, and the whole slice where a crop is decoded first and the whole slice may be read too
       (``zoom`` ``best``/``union``, ``retry``). Key slices come first.
    2. Speculation: up to ``beyond`` slices past ``newest`` (the slice of the key box placed last) when it is the
       first or last key slice, away from the others; around it both ways when it is the only one. Where every
       slice is read whole anyway (``zoom`` ``best``/``union``, ``retry``), the whole slice: it does not depend
       on the boxes still to come; otherwise the view the newest box would need there (its crop snaps to a grid,
       so a box drawn nearby keeps it). Under ``slices="alternate"``, only the guessed slices an alternate run
       would read if the next key box landed on the farthest guess.

    ``keys`` must already be checked against the volume (:func:`geometry.validate_key_boxes`).
    """
    boxes = interpolate_boxes(keys.boxes, settings.box_sizes)
    key_slices = sorted(k.slice_index for k in keys.boxes)
    both_views = settings.zoom in ("best", "union", "size") or settings.retry != "off"
    skipped = skipped_slices(key_slices, settings)
    views: List[View] = []
    for s in key_slices + [s for s in sorted(boxes) if s not in key_slices and s not in skipped]:
        view = first_view(boxes[s], settings.zoom, slice_size, input_size)
        views.append((s, view))
        if view is not None and both_views:
            views.append((s, None))
    for s in reads_ahead(_speculative_slices(key_slices, newest, beyond, n_slices), key_slices, settings):
        views.append((s, None if both_views else first_view(boxes[newest], settings.zoom, slice_size, input_size)))
    return list(dict.fromkeys(views))


def _speculative_slices(key_slices: List[int], newest: Optional[int], beyond: int, n_slices: int) -> List[int]:
    if beyond <= 0 or newest is None or newest not in key_slices:
        return []
    first, last = key_slices[0], key_slices[-1]
    if first == last:
        around = [newest + sign * step for step in range(1, beyond + 1) for sign in (1, -1)]
        return [s for s in around if 0 <= s < n_slices][:beyond]
    if newest == last:
        return [s for s in range(last + 1, last + 1 + beyond) if s < n_slices]
    if newest == first:
        return [s for s in range(first - 1, first - 1 - beyond, -1) if s >= 0]
    return []


def speculation_depth(key_slices: List[int], newest: Optional[int], limit: int = SPECULATION_LIMIT) -> int:
    """How many slices to guess past ``newest``: the user's spacing (the distance from the newest key slice to the
    nearest other), so that the next key box lands on slices already encoded; :data:`FIRST_GUESS` for a single key
    box; never more than ``limit``."""
    if newest is None or newest not in key_slices:
        return 0
    others = [abs(s - newest) for s in key_slices if s != newest]
    return max(0, min(limit, min(others) if others else FIRST_GUESS))
