"""What the MedSAM Segment Editor effect and the module do, without Qt (testable with ``slicer-core``).

The Qt effect (``SegmentEditorMedSAMLib/SegmentEditorEffect.py``) and the module widget only wire widgets to
:class:`MedSAMEffectLogic`:

1. :meth:`MedSAMEffectLogic.prepare_run` gathers, on the main thread, what a run needs from the scene: the key
   boxes of the target's markups nodes, the intensity choice resolved against the volume's display, a token for
   the volume's current voxels, and the settings. Nothing in the scene changes.
2. The run itself goes to the worker process (:mod:`background_run`: model loading, encoding and decoding never
   run on the GUI thread), or runs in this process (:meth:`MedSAMEffectLogic.compute`, for scripts and tests),
   through the same :class:`~service.SegmentationService` and :mod:`pipeline` path as the command line.
3. :meth:`MedSAMEffectLogic.apply` writes the mask into the selected segment through :mod:`mrml_segments` (one undo
   state, the key-box slice range only, the editor's masking and overwrite settings).
4. Refine from my edits: the effect keeps what it wrote (:class:`edits.WrittenRun`); after the expert corrects some
   slices, :meth:`MedSAMEffectLogic.corrections` finds them, :meth:`MedSAMEffectLogic.start_refine` (worker) or
   :meth:`MedSAMEffectLogic.refine` (this process) adapts the decoder to them, and :meth:`RunOutcome.of_refinement`
   is written like a run, the corrected slices as the expert left them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine import CancelCheck, EmbeddingCache, ProgressCallback, SegmentationResult
from ..geometry import KeyBoxSet
from ..learning.refinement import MIN_CORRECTED, RefinementError
from ..remote.background_run import BackgroundSegmentation
from ..remote.server_address import SERVER_DEVICE, ServerAddress
from ..service import ModelSpec, SegmentationService, ServiceResult
from ..settings import SegmentationSettings
from . import mrml, mrml_markups, mrml_segments
from .edits import WrittenRun
from .effect_settings import EffectSettings

#: The choices a run takes when none are given (the command line's defaults).
DEFAULT_SETTINGS = EffectSettings()


def volume_token(volume_node) -> str:
    """Identifies the volume's current voxels: it changes whenever the voxels are modified."""
    image = volume_node.GetImageData()
    scalars = image.GetPointData().GetScalars() if image is not None else None
    stamp = max(image.GetMTime(), scalars.GetMTime()) if scalars is not None else 0
    return f"{volume_node.GetID()}@{stamp}"


@dataclass
class PreparedRun:
    """What one run needs, gathered from the scene on the main thread."""

    volume_node_id: str
    token: str
    ijk_to_world: np.ndarray
    key_boxes: KeyBoxSet
    model: ModelSpec
    settings: SegmentationSettings
    volume: Callable[[], np.ndarray]  # a copy of the voxels, made when called


@dataclass
class RunOutcome:
    """One computed (not yet written) segmentation, with what the user should know about it."""

    result: SegmentationResult
    key_boxes: KeyBoxSet
    volume_node_id: str
    intensity: str
    device: str
    warnings: List[str] = field(default_factory=list)
    written: bool = False
    extent: List[int] = field(default_factory=list)
    note: str = ""  # a refinement's one-line account, shown instead of the run summary

    @classmethod
    def of(cls, prepared: PreparedRun, served: ServiceResult) -> RunOutcome:
        return cls(served.result, prepared.key_boxes, prepared.volume_node_id, served.intensity, served.device,
                   list(served.warnings))

    @classmethod
    def of_refinement(cls, written: WrittenRun, served: ServiceResult) -> RunOutcome:
        """The outcome of Refine from my edits on ``written`` (its summary is the refinement's account)."""
        return cls(served.result, written.key_boxes, written.volume_node_id, served.intensity, served.device,
                   list(served.warnings), note=served.note)

    @property
    def slice_axis(self) -> int:
        return self.result.slice_axis

    @property
    def slice_range(self) -> Tuple[int, int]:
        return self.result.slice_range

    @property
    def flagged(self) -> List[Tuple[int, str]]:
        return list(self.result.flagged)

    def summary(self) -> str:
        if self.note:
            return self.note[0].upper() + self.note[1:] + "."
        first, last = self.result.slice_range
        recomputed = len(self.result.recomputed)
        total = len(self.result.boxes)
        text = (
            f"Segmented slices {first}-{last} ({total} slices, {recomputed} recomputed, {self.result.encoded} "
            f"encoded) in {self.result.seconds:.1f} s on {self.device}; intensity {self.intensity}."
        )
        if self.result.filled:
            text += f" {len(self.result.filled)} slice(s) filled between their neighbours."
        if self.result.flagged:
            text += f" {len(self.result.flagged)} slice(s) flagged for review."
        for warning in self.warnings:
            text += f" Warning: {warning}."
        return text


class MedSAMEffectLogic:
    """Prepare, compute and write MedSAM segmentations from markups key boxes.

    ``model_loader(name, checkpoint, device)`` builds a model for in-process runs (default
    :func:`models.load_model`); models and embeddings are kept between runs, in this process for :meth:`compute`
    and in the worker process (or on the server) for :meth:`background`.
    """

    def __init__(self, model_loader: Optional[Callable] = None, cache: Optional[EmbeddingCache] = None,
                 batch_size: Optional[int] = None,
                 background_factory: Callable[[], BackgroundSegmentation] = BackgroundSegmentation) -> None:
        self.service = SegmentationService(model_loader, cache, batch_size)
        self._background_factory = background_factory
        self._backgrounds: Dict[Optional[ServerAddress], BackgroundSegmentation] = {}
        self.server: Optional[ServerAddress] = None

    def use_server(self, address: Optional[ServerAddress]) -> None:
        """Send background runs to the MedSAM server at ``address`` (Device "MedSAM server"), or to the local
        worker process (None). Each keeps its own volumes and embeddings."""
        self.server = address

    def background(self) -> BackgroundSegmentation:
        """Where background runs go: the session's worker process, or the server of :meth:`use_server` (started
        on first use)."""
        if self.server not in self._backgrounds:
            if self.server is None:
                self._backgrounds[None] = self._background_factory()
            else:
                from ..remote.remote_client import ServerWorkerClient

                url, token = self.server.url, self.server.token
                self._backgrounds[self.server] = BackgroundSegmentation(lambda: ServerWorkerClient(url, token))
        return self._backgrounds[self.server]

    def close_backgrounds(self) -> None:
        """Stop the worker process and close server sessions (they start again on the next run)."""
        for background in self._backgrounds.values():
            background.close()
        self._backgrounds.clear()

    def forget(self) -> None:
        """Drop kept volumes and embeddings, here, in the worker and on the client side of servers (the scene
        was closed)."""
        self.service.forget()
        for background in self._backgrounds.values():
            background.forget()

    @staticmethod
    def key_boxes(markups_nodes: Sequence, volume_node, settings: EffectSettings = DEFAULT_SETTINGS,
                  slice_axis: Optional[int] = None) -> KeyBoxSet:
        return mrml_markups.markups_key_boxes(markups_nodes, volume_node, slice_axis, settings.line_margin)

    def prepare_run(self, volume_node, markups_nodes: Sequence, settings: EffectSettings = DEFAULT_SETTINGS,
                    slice_axis: Optional[int] = None) -> PreparedRun:
        """Everything a run needs from the scene (cheap: no voxel is copied until ``volume()`` is called)."""
        settings.check()
        if settings.device == SERVER_DEVICE and self.server is None:
            raise ValueError("Device is MedSAM server: give the server's address (http://HOST:PORT) below Device")
        keys = self.key_boxes(markups_nodes, volume_node, settings, slice_axis)
        ijk_to_world = mrml.volume_ijk_to_world(volume_node)
        mrml.volume_array(volume_node)  # refuses vector and non-3D volumes now, with its one-line reason

        def volume() -> np.ndarray:
            return np.array(mrml.volume_array(volume_node))

        return PreparedRun(volume_node.GetID(), volume_token(volume_node), ijk_to_world, keys,
                           settings.model_spec(), settings.segmentation_settings(volume_node), volume)

    def start(self, prepared: PreparedRun, owner: object = None) -> None:
        """Start ``prepared`` on the worker process; ``owner`` polls :meth:`background` for its events."""
        self.background().start(prepared.token, prepared.volume, prepared.ijk_to_world, prepared.key_boxes,
                                prepared.model, prepared.settings, owner)

    def encode_ahead(self, volume_node, markups_nodes: Sequence, settings: EffectSettings, newest_node=None,
                     owner: object = None, again: bool = False) -> bool:
        """Start encoding, on the worker, the views a run from these key boxes will read, and slices past
        ``newest_node``'s box (the one placed or moved last) as far as the user's spacing, while the user goes on
        drawing. Returns False, doing nothing, when the key boxes cannot make a run yet (the Segment press reports
        why), or when nothing changed since ``owner``'s last request (the volume's voxels, the key boxes, the
        settings; :meth:`BackgroundSegmentation.encode_ahead`) unless ``again``."""
        try:
            prepared = self.prepare_run(volume_node, markups_nodes, settings)
            newest = None
            if newest_node is not None:
                newest = self.key_boxes([newest_node], volume_node, settings, prepared.key_boxes.slice_axis)
                newest = newest.boxes[0].slice_index
        except (ValueError, TypeError):  # GeometryError, SettingsError, ...: a box still being placed, say
            return False
        return self.background().encode_ahead(prepared.token, prepared.volume, prepared.ijk_to_world,
                                              prepared.key_boxes, prepared.model, prepared.settings, newest,
                                              owner=owner, preview=settings.preview, again=again)

    def compute(self, volume_node, markups_nodes: Sequence, settings: EffectSettings = DEFAULT_SETTINGS,
                progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                slice_axis: Optional[int] = None) -> RunOutcome:
        """Segment in this process (with Device "MedSAM server", on the server, waiting for it); changes nothing
        in the scene (raises ``engine.Cancelled`` on cancel)."""
        prepared = self.prepare_run(volume_node, markups_nodes, settings, slice_axis)
        if settings.device == SERVER_DEVICE:
            from ..remote.remote_client import RemoteSegmentation

            remote = RemoteSegmentation(self.server.url, self.server.token)
            remote.put_volume(prepared.token, prepared.volume())
            try:
                served = remote.segment(prepared.token, prepared.key_boxes, prepared.model, prepared.settings,
                                        progress, cancel)
            finally:
                remote.close()
            return RunOutcome.of(prepared, served)
        if not self.service.has_volume(prepared.token):
            self.service.put_volume(prepared.token, prepared.volume())
        served = self.service.segment(prepared.token, prepared.ijk_to_world, prepared.key_boxes, prepared.model,
                                      prepared.settings, progress, cancel)
        return RunOutcome.of(prepared, served)

    @staticmethod
    def apply(writer: mrml_segments.SegmentWriter, volume_node, outcome: RunOutcome) -> RunOutcome:
        """Write a computed outcome into the writer's selected segment (one undo step)."""
        if outcome.volume_node_id != volume_node.GetID():
            raise mrml_segments.SegmentWriteError("the result was computed on another volume; run Segment again")
        outcome.extent = mrml_segments.write_segment_mask(
            writer, volume_node, outcome.result.mask, outcome.result.slice_axis, outcome.result.slice_range
        )
        outcome.written = True
        return outcome

    def run(self, writer: mrml_segments.SegmentWriter, volume_node, markups_nodes: Sequence,
            settings: EffectSettings = DEFAULT_SETTINGS, progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelCheck] = None) -> RunOutcome:
        """Compute in this process, then write. A failure or cancel before the write leaves the segment untouched."""
        outcome = self.compute(volume_node, markups_nodes, settings, progress, cancel)
        return self.apply(writer, volume_node, outcome)

    # -- Refine from my edits --------------------------------------------------------------------------------
    @staticmethod
    def corrections(written: WrittenRun, volume_node, current: np.ndarray) -> Dict[int, np.ndarray]:
        """The slices of ``written``'s run the expert corrected (``current``: the segment now, bool ``[k, j, i]``).
        Raises :class:`~refinement.RefinementError` with one line when the volume changed since the run or fewer
        than :data:`~refinement.MIN_CORRECTED` slices were corrected."""
        if volume_node is None or volume_node.GetID() != written.volume_node_id:
            raise RefinementError("the run was made on another volume; press Segment on this one first")
        if volume_token(volume_node) != written.token:
            raise RefinementError("the volume's voxels changed since the run; press Segment again, then correct")
        corrected = written.corrections(current)
        if len(corrected) < MIN_CORRECTED:
            first, last = written.slice_range
            raise RefinementError(f"{len(corrected)} of the run's slices ({first}-{last}) differ from what MedSAM "
                                  f"wrote; paint or erase at least {MIN_CORRECTED} of them, then refine")
        return corrected

    def start_refine(self, written: WrittenRun, volume_node, corrected: Dict[int, np.ndarray],
                     owner: object = None) -> None:
        """Start Refine from my edits on the worker process (its ``finished`` event carries the refined result)."""
        self.background().start(written.token, lambda: np.array(mrml.volume_array(volume_node)),
                                written.ijk_to_world, written.key_boxes, written.model, written.settings, owner,
                                corrected=corrected)

    def refine(self, written: WrittenRun, volume_node, current: np.ndarray,
               progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None) -> RunOutcome:
        """Refine from my edits in this process; changes nothing in the scene (see :meth:`corrections`)."""
        corrected = self.corrections(written, volume_node, current)
        if not self.service.has_volume(written.token):
            self.service.put_volume(written.token, np.array(mrml.volume_array(volume_node)))
        served = self.service.refine(written.token, written.ijk_to_world, written.key_boxes, written.model,
                                     written.settings, corrected, progress, cancel)
        return RunOutcome.of_refinement(written, served)

    # -- batch use without the editor (the module page) ---------------------------------------------------
    def segment_to_segmentation(self, scene, volume_node, markups_nodes: Sequence, segmentation_node=None,
                                segment_name: str = "MedSAM", settings: EffectSettings = DEFAULT_SETTINGS,
                                progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                                app_logic=None):
        """Segment into ``segment_name`` of ``segmentation_node`` (created when None); returns
        ``(segmentation_node, segment_id, outcome)``. Uses a temporary segment editor node and logic."""
        outcome = self.compute(volume_node, markups_nodes, settings, progress, cancel)
        return write_to_segmentation(scene, volume_node, outcome, segmentation_node, segment_name, app_logic)


def write_to_segmentation(scene, volume_node, outcome: RunOutcome, segmentation_node=None,
                          segment_name: str = "MedSAM", app_logic=None):
    """Write ``outcome`` into ``segment_name`` of ``segmentation_node`` (both created when missing) through a
    temporary segment editor node; returns ``(segmentation_node, segment_id, outcome)``."""
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume_node.GetName()} MedSAM")
        segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        segment_id = segmentation.AddEmptySegment("", segment_name)
    with mrml_segments.temporary_editor(scene, app_logic, segmentation_node, volume_node, segment_id) as writer:
        MedSAMEffectLogic.apply(writer, volume_node, outcome)
    return segmentation_node, segment_id, outcome


_SHARED: Optional[MedSAMEffectLogic] = None


def shared_logic() -> MedSAMEffectLogic:
    """One logic per Slicer session, shared by the effect and the module (so the worker and models are too)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = MedSAMEffectLogic()
    return _SHARED
