"""The interactive session: one volume, key boxes arriving as events, the current 3D result readable at any time.

>>> session = SegmentationSession.open(load_model("lite"), image.array, slice_axis=0)
>>> session.add_box(40, (120, 96, 170, 150))     # work starts at once, on a background thread
>>> session.add_box(45, (118, 95, 172, 152))
>>> result = session.result()                    # decodes, and encodes only what is still missing

While the user draws, the session works ahead of them, in this order, after every event:

1. run the segmentation of the boxes so far: it encodes exactly the views it reads (the guided boxes' crops
   included, which depend on the neighbouring masks and so cannot be planned from the boxes alone), and its
   decodes are kept, so :meth:`result` reads them back; with ``preview``, :meth:`SegmentationSession.preview`
   then shows it;
2. encode speculatively past the newest key box, away from the others, as many slices as the user's spacing
   (:func:`engine.lookahead.speculation_depth`), so that the next box lands on slices already encoded.

Each event cancels the work for the boxes before it at the next encoder batch (a batch in flight finishes and
goes to the cache whole: it is a correct embedding of those pixels whatever the boxes are). :meth:`result`
makes the speculation yield and runs on the caller's thread. With ``background=False`` nothing runs by itself:
the owner calls :meth:`work_ahead` (the Slicer worker process does, on its own thread).

The session is thread-safe: events and :meth:`result` may come from any thread. Its volume, slice axis, model and
intensity settings are fixed; :meth:`update_settings` changes the others.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Dict, List, Optional, Sequence, Set

import numpy as np

from . import pipeline
from .engine import (
    CancelCheck,
    Cancelled,
    EmbeddingCache,
    ProgressCallback,
    SegmentationResult,
    SliceCallback,
    VolumeSegmenter,
)
from .engine.encoding import View
from .engine.lookahead import speculation_depth, views_ahead
from .geometry import Box, GeometryError, KeyBox, KeyBoxSet, validate_key_boxes
from .models import SliceModel
from .settings import SegmentationSettings

#: Settings that change the voxels the model sees: fixed for a session.
NORMALISATION_FIELDS = ("modality", "window", "mr_rule")


@dataclasses.dataclass
class SessionStats:
    """What the session's work cost: views encoded ahead (``speculated`` of them past the newest key box), views
    encoded while a :meth:`~SegmentationSession.result` call waited, runs completed ahead (``previews``), and
    ``wasted``: speculative views that the last result's plan does not read (counted at each
    :meth:`~SegmentationSession.result`)."""

    encoded_ahead: int = 0
    speculated: int = 0
    encoded_in_results: int = 0
    previews: int = 0
    wasted: int = 0


class SegmentationSession:
    """Key boxes as events on one :class:`~engine.VolumeSegmenter`, with the work done ahead of the user.

    ``settings`` as for a run (intensity fields must be those ``segmenter``'s volume was normalised with);
    ``background``: work ahead on a thread of the session's own; ``preview``: publish the run of the boxes so far
    after each event; ``speculate``: encode past the newest key box. ``on_preview(result)`` is called, on the
    worker thread, with each new preview.
    """

    def __init__(self, segmenter: VolumeSegmenter, settings: SegmentationSettings, *, background: bool = True,
                 preview: bool = True, speculate: bool = True,
                 on_preview: Optional[Callable[[SegmentationResult], None]] = None) -> None:
        self.segmenter = segmenter
        self._settings = settings
        self.preview_enabled = preview
        self.speculate = speculate
        self.on_preview = on_preview
        self.stats = SessionStats()
        self._boxes: Dict[int, KeyBox] = {}
        self._newest: Optional[int] = None
        self._speculated: Set[View] = set()
        self._preview: Optional[SegmentationResult] = None
        self._error: Optional[BaseException] = None
        self._state = threading.Condition()
        self._engine = threading.RLock()  # one run at a time on the segmenter
        self._generation = 0  # bumped by every event
        self._done_generation = 0  # the generation whose work ahead is complete
        self._waiting = 0  # result() calls waiting: speculation yields
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        if background:
            self._thread = threading.Thread(target=self._run_background, name="medsam-session", daemon=True)
            self._thread.start()

    @classmethod
    def open(cls, model: SliceModel, volume: np.ndarray, slice_axis: int,
             settings: Optional[SegmentationSettings] = None, *, cache: Optional[EmbeddingCache] = None,
             batch_size: Optional[int] = None, is_colour: bool = False, **options) -> SegmentationSession:
        """A session on ``volume`` (``[k, j, i]``, any intensities; never modified) along ``slice_axis``, normalised
        with ``settings`` (default: the command line's); ``options`` as for the constructor."""
        settings = settings or SegmentationSettings()
        segmenter = pipeline.make_segmenter(model, volume, slice_axis, settings, cache, batch_size, is_colour)
        return cls(segmenter, settings, **options)

    # ------------------------------------------------------------------------------------------------- state

    @property
    def settings(self) -> SegmentationSettings:
        return self._settings

    @property
    def slice_axis(self) -> int:
        return self.segmenter.slice_axis

    @property
    def key_boxes(self) -> KeyBoxSet:
        """The key boxes now, sorted by slice (checked and clipped to the image)."""
        with self._state:
            return KeyBoxSet(self.slice_axis, [self._boxes[s] for s in sorted(self._boxes)])

    @property
    def error(self) -> Optional[str]:
        """One line saying why the last work ahead failed, or None (:meth:`result` raises the error itself)."""
        with self._state:
            return None if self._error is None else (" ".join(str(self._error).split()) or type(self._error).__name__)

    def preview(self) -> Optional[SegmentationResult]:
        """The latest preview (None before the first); it may lag the boxes: :meth:`wait_until_idle` first for
        the preview of the boxes now."""
        with self._state:
            return self._preview

    def is_idle(self) -> bool:
        """Whether the work ahead for the boxes now is done (or failed: see :attr:`error`)."""
        with self._state:
            return self._done_generation == self._generation

    def wait_until_idle(self, timeout: Optional[float] = None) -> bool:
        """Wait until the work ahead for the boxes now is done; False when ``timeout`` seconds passed first."""
        with self._state:
            return self._state.wait_for(lambda: self._done_generation == self._generation or self._closed, timeout)

    # ------------------------------------------------------------------------------------------------ events

    def add_box(self, slice_index: int, box: Sequence[float], source: str = "") -> None:
        """A new key box ``[x0, y0, x1, y1]`` on ``slice_index``; GeometryError when that slice has one already or
        the box is not on the image."""
        with self._state:
            if int(slice_index) in self._boxes:
                raise GeometryError(f"slice {int(slice_index)} has a key box already; move it or remove it first")
            self._accept({**self._boxes, int(slice_index): KeyBox(int(slice_index), _box(box), source)},
                         int(slice_index))

    def move_box(self, slice_index: int, box: Sequence[float], to_slice: Optional[int] = None) -> None:
        """Change the key box on ``slice_index`` to ``box``, on ``to_slice`` when given."""
        with self._state:
            old = self._existing(slice_index)
            target = int(slice_index if to_slice is None else to_slice)
            boxes = {s: k for s, k in self._boxes.items() if s != old.slice_index}
            if target in boxes:
                raise GeometryError(f"slice {target} has a key box already; remove it before moving another there")
            boxes[target] = KeyBox(target, _box(box), old.source)
            self._accept(boxes, target)

    def remove_box(self, slice_index: int) -> None:
        """Remove the key box on ``slice_index``."""
        with self._state:
            self._existing(slice_index)
            boxes = {s: k for s, k in self._boxes.items() if s != int(slice_index)}
            newest = self._newest if self._newest in boxes else None
            self._accept(boxes, newest)

    def set_boxes(self, key_boxes: KeyBoxSet, newest: Optional[int] = None) -> None:
        """Replace every key box at once (``newest``: the slice of the box placed or moved last, for the
        speculation; default: the one slice whose box is new or changed, if there is one). Boxes equal to the
        current ones are not an event."""
        if key_boxes.slice_axis != self.slice_axis:
            raise GeometryError(f"the key boxes lie along axis {key_boxes.slice_axis} but this session slices "
                                f"along axis {self.slice_axis}; open a session for that axis")
        with self._state:
            boxes = {int(k.slice_index): KeyBox(int(k.slice_index), _box(k.box), k.source) for k in key_boxes.boxes}
            if len(boxes) != len(key_boxes.boxes):
                validate_key_boxes(key_boxes, self.segmenter.volume.shape[:3])  # names the two boxes on one slice
            checked = self._checked(boxes)
            if checked == self._boxes:
                return
            if newest is None:
                changed = [s for s, k in checked.items() if self._boxes.get(s) != k]
                newest = changed[0] if len(changed) == 1 else self._newest
            self._commit(checked, newest if newest in checked else None)

    def update_settings(self, settings: SegmentationSettings) -> None:
        """Use ``settings`` from now on; the intensity fields (:data:`NORMALISATION_FIELDS`) cannot change: they
        change the voxels, so open a new session for them."""
        changed = [name for name in NORMALISATION_FIELDS if getattr(settings, name) != getattr(self._settings, name)]
        if changed:
            raise ValueError(f"{', '.join(changed)} change the voxels the model sees; open a new session for them")
        with self._state:
            if settings != self._settings:
                self._settings = settings
                self._bump()

    # ------------------------------------------------------------------------------------------------ results

    def result(self, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
               on_slice: Optional[SliceCallback] = None) -> SegmentationResult:
        """The complete 3D result for the key boxes now, computed on the caller's thread (work ahead yields);
        the same mask a one-shot run gives. Raises :class:`~engine.Cancelled` when ``cancel()`` turns true, and
        GeometryError before any key box exists."""
        with self._state:
            self._waiting += 1
            self._state.notify_all()
        try:
            with self._engine:
                with self._state:
                    keys, settings, generation = self.key_boxes, self._settings, self._generation
                if not keys.boxes:
                    raise GeometryError("no key boxes yet; draw a box on the target first")
                before = self.segmenter.encoded_views
                try:
                    result = pipeline.segment_with(self.segmenter, keys, settings, progress, cancel, on_slice)
                finally:
                    self.stats.encoded_in_results += self.segmenter.encoded_views - before
                planned = set(self._plan(keys, settings, None, 0))
                self.stats.wasted = len(self._speculated - planned)
        finally:
            with self._state:
                self._waiting -= 1
                self._state.notify_all()
        with self._state:
            if generation == self._generation:
                self._preview = result
                self._done_generation = generation
                self._state.notify_all()
        return result

    def work_ahead(self, cancel: Optional[CancelCheck] = None, beyond: Optional[int] = None) -> int:
        """Do the work ahead for the boxes now on the caller's thread (encode, preview, speculate: see the
        module); ``beyond`` overrides the speculation depth. Returns the views encoded; raises
        :class:`~engine.Cancelled` when ``cancel()`` turns true, an event arrives or a result is asked for."""
        with self._state:
            generation = self._generation
        return self._work(generation, cancel, beyond)

    def close(self) -> None:
        """Stop the work ahead and the background thread (the result so far stays readable)."""
        with self._state:
            self._closed = True
            self._state.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> SegmentationSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------------- internals

    def _existing(self, slice_index: int) -> KeyBox:
        if int(slice_index) not in self._boxes:
            raise GeometryError(f"slice {int(slice_index)} has no key box; add one there first")
        return self._boxes[int(slice_index)]

    def _checked(self, boxes: Dict[int, KeyBox]) -> Dict[int, KeyBox]:
        if not boxes:
            return {}
        keys = validate_key_boxes(KeyBoxSet(self.slice_axis, list(boxes.values())), self.segmenter.volume.shape[:3])
        return {k.slice_index: k for k in keys.boxes}

    def _accept(self, boxes: Dict[int, KeyBox], newest: Optional[int]) -> None:
        self._commit(self._checked(boxes), newest)

    def _commit(self, boxes: Dict[int, KeyBox], newest: Optional[int]) -> None:
        self._boxes, self._newest = boxes, newest
        self._bump()

    def _bump(self) -> None:
        self._generation += 1
        self._error = None
        self._state.notify_all()

    def _plan(self, keys: KeyBoxSet, settings: SegmentationSettings, newest: Optional[int], beyond: int) -> List[View]:
        segmenter = self.segmenter
        return views_ahead(keys, settings, segmenter.slice_size, segmenter.model.input_size, segmenter.n_slices,
                           newest, beyond)

    def _work(self, generation: int, cancel: Optional[CancelCheck], beyond: Optional[int]) -> int:
        def stop() -> bool:
            return (self._generation != generation or self._closed or self._waiting > 0
                    or (cancel is not None and cancel()))

        with self._engine:
            with self._state:
                if stop():
                    raise Cancelled("a newer event or a result came first")
                keys, settings, newest = self.key_boxes, self._settings, self._newest
            if not keys.boxes:
                return 0
            encoder = self.segmenter.encoder
            before = encoder.encoded
            try:
                preview = self.segmenter.segment(keys, settings, cancel=stop)
                self.stats.previews += 1
                if self.preview_enabled:
                    with self._state:
                        if self._generation == generation:
                            self._preview = preview
                    if self.on_preview is not None:
                        self.on_preview(preview)
                if self.speculate or beyond:
                    key_slices = [k.slice_index for k in keys.boxes]
                    depth = speculation_depth(key_slices, newest) if beyond is None else beyond
                    planned = set(self._plan(keys, settings, None, 0))
                    guesses = [v for v in self._plan(keys, settings, newest, depth) if v not in planned]
                    missing = [v for v in guesses if not encoder.cache.contains(encoder.key(*v))]
                    speculated_before = encoder.encoded
                    try:
                        encoder.encode(missing, cancel=stop)
                    finally:
                        done = encoder.encoded - speculated_before
                        self._speculated.update(missing[:done])
                        self.stats.speculated += done
            finally:
                self.stats.encoded_ahead += encoder.encoded - before
            return encoder.encoded - before

    def _run_background(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._closed or (self._done_generation != self._generation
                                                              and self._waiting == 0))
                if self._closed:
                    return
                generation = self._generation
            try:
                self._work(generation, None, None)
            except Cancelled:
                continue
            except Exception as exc:  # noqa: BLE001 - reported by .error; result() raises it on the caller's thread
                with self._state:
                    if self._generation == generation:
                        self._error = exc
            with self._state:
                if self._generation == generation:
                    self._done_generation = generation
                    self._state.notify_all()


def _box(values: Sequence[float]) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError):
        raise GeometryError(f"a key box is four numbers [x0, y0, x1, y1], got {values!r}") from None
    return (x0, y0, x1, y1)


def run_segmentation(
    model: SliceModel,
    array: np.ndarray,
    key_boxes: KeyBoxSet,
    settings: Optional[SegmentationSettings] = None,
    cache: Optional[EmbeddingCache] = None,
    batch_size: Optional[int] = None,
    is_colour: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    on_slice: Optional[SliceCallback] = None,
) -> SegmentationResult:
    """Segment ``array`` (``[k, j, i]``, any intensities) from key boxes; see :mod:`engine` for the strategies.

    A one-shot :class:`SegmentationSession`: every box given at once, nothing done ahead."""
    settings = settings or SegmentationSettings()  # the command line's defaults
    segmenter = pipeline.make_segmenter(model, array, key_boxes.slice_axis, settings, cache, batch_size, is_colour)
    with SegmentationSession(segmenter, settings, background=False, preview=False, speculate=False) as session:
        session.set_boxes(key_boxes)
        return session.result(progress, cancel, on_slice)
