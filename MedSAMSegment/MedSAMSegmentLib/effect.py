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

from . import intensity, mrml, mrml_markups, mrml_segments
from .background_run import BackgroundSegmentation
from .edits import WrittenRun
from .engine import CancelCheck, EmbeddingCache, ProgressCallback, SegmentationResult
from .geometry import KeyBoxSet
from .markup_boxes import DEFAULT_LINE_MARGIN
from .refinement import MIN_CORRECTED, RefinementError
from .server_address import SERVER_DEVICE, ServerAddress
from .service import ModelSpec, SegmentationService, ServiceResult
from .settings import PUBLISHED, ModelSettings, SegmentationSettings

#: Intensity choices offered by the effect and the module: id -> label.
INTENSITY_CHOICES: Dict[str, str] = {"auto": "Automatic (CT window or MR percentiles)"}
INTENSITY_CHOICES.update(
    {
        f"ct:{name}": f"CT {name.replace('_', ' ')} (L {level:g} / W {width:g})"
        for name, (level, width) in intensity.CT_WINDOWS.items()
    }
)
INTENSITY_CHOICES.update(
    {
        "mr": "MR (0.5-99.5 percentiles)",
        "display": "Volume's current display window/level",
        "none": "None (image is already 0-255)",
    }
)
STRATEGY_CHOICES = {
    "interpolate": "Interpolate boxes between key slices",
    "propagate": "Propagate masks from key slices (MedSAM 3D)",
}
MODEL_CHOICES = {"lite": "LiteMedSAM (bundled)", "vit_b": "MedSAM ViT-B (checkpoint file)"}
CHECKPOINT_TIP = ("MedSAM ViT-B: medsam_vit_b.pth (required). LiteMedSAM: a checkpoint 'medsam-segment finetune' "
                  "wrote (empty: the bundled weights)")
DEVICE_CHOICES = {
    "auto": "Automatic (CUDA, Apple MPS, CPU)",
    "cuda": "CUDA GPU",
    "mps": "Apple GPU (MPS)",
    "cpu": "CPU",
    SERVER_DEVICE: "MedSAM server (address below)",
}
#: The devices of the module page, which runs only here.
LOCAL_DEVICE_CHOICES = {key: text for key, text in DEVICE_CHOICES.items() if key != SERVER_DEVICE}
#: The accuracy options offered in Slicer, every one the command line has (their values are the settings'
#: choices, which a test checks): setting -> (label, value -> text).
ACCURACY_OPTIONS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "mr_rule": ("MR intensities", {
        "auto": "Percentiles above the background",
        "published": "Percentiles above zero",
    }),
    "zoom": ("Small targets", {
        "off": "Whole slice",
        "auto": "Crop around small boxes",
        "best": "Crop and whole slice, the more confident",
        "union": "Crop and whole slice, their union",
        "size": "By target size: union for small targets, the more confident for large",
    }),
    "guide": ("Between key slices", {
        "off": "Interpolated boxes",
        "mean": "Mean of interpolated and previous mask box",
        "union": "Union of interpolated and previous mask box",
        "mask": "Previous mask box",
        "auto": "Union for small boxes, else interpolated",
    }),
    "refine": ("Clean-up", {"off": "Raw masks", "box": "Clip to the box and fill holes"}),
    "retry": ("Low-confidence slices", {"off": "Keep", "zoom": "Decode again with the other view"}),
    "slices": ("Slices read", {
        "auto": "Every second in long targets when interpolating, else every slice",
        "every": "Every slice",
        "alternate": "Every second in long targets, the others filled (faster)",
    }),
}


_DEFAULTS = SegmentationSettings()


def accuracy_menu(name: str) -> Dict[str, str]:
    """Value -> menu text for one accuracy option, the default and MedSAM's published value marked."""
    texts = ACCURACY_OPTIONS[name][1]
    marked = {}
    for value, text in texts.items():
        marks = [m for m, applies in (("default", value == getattr(_DEFAULTS, name)),
                                      ("published", value == PUBLISHED[name])) if applies]
        marked[value] = text + (f" ({', '.join(marks)})" if marks else "")
    return marked


@dataclass(frozen=True)
class EffectSettings:
    """The user's choices besides the boxes (stored on the segment editor / parameter node as strings); the
    accuracy options default to the command line's."""

    strategy: str = _DEFAULTS.strategy
    intensity: str = "auto"
    model: str = "lite"
    checkpoint: Optional[str] = None
    device: str = "auto"
    line_margin: float = DEFAULT_LINE_MARGIN
    propagate_margin: float = _DEFAULTS.propagate_margin
    mr_rule: str = _DEFAULTS.mr_rule
    zoom: str = _DEFAULTS.zoom
    guide: str = _DEFAULTS.guide
    refine: str = _DEFAULTS.refine
    retry: str = _DEFAULTS.retry
    slices: str = _DEFAULTS.slices
    preview: bool = True  # decode the boxes so far while the user draws, shown in a preview node

    def check(self) -> None:
        """Raises ``ValueError`` (:class:`settings.SettingsError` for a choice) naming the bad choice."""
        if self.intensity not in INTENSITY_CHOICES:
            raise ValueError(f"unknown intensity setting {self.intensity!r}; use one of {', '.join(INTENSITY_CHOICES)}")
        if self.model == "vit_b" and not self.checkpoint:
            raise ValueError("MedSAM ViT-B needs its checkpoint file (medsam_vit_b.pth); choose it under Model")
        SegmentationSettings(strategy=self.strategy, propagate_margin=self.propagate_margin, **self.accuracy())
        ModelSettings(model=self.model, checkpoint=self.checkpoint, device=self.device)

    def accuracy(self) -> Dict[str, str]:
        return {name: getattr(self, name) for name in PUBLISHED}

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.checkpoint or None, self.device)

    def segmentation_settings(self, volume_node) -> SegmentationSettings:
        """The command line's settings for these choices."""
        modality, window = resolve_intensity(self.intensity, volume_node)
        return SegmentationSettings(strategy=self.strategy, modality=modality, window=window,
                                    propagate_margin=self.propagate_margin, **self.accuracy())


def resolve_intensity(choice: str, volume_node=None) -> Tuple[str, Optional[Tuple[float, float]]]:
    """``(modality, window)`` for :func:`intensity.normalise_volume` from an intensity choice id.

    ``display`` uses the volume's display node window/level (applied as a CT-style window to any modality).
    """
    if choice == "auto":
        return "auto", None
    if choice.startswith("ct:"):
        name = choice[3:]
        if name not in intensity.CT_WINDOWS:
            raise ValueError(f"unknown CT window {name!r}; use one of {', '.join(intensity.CT_WINDOWS)}")
        return "CT", tuple(intensity.CT_WINDOWS[name])
    if choice == "mr":
        return "MR", None
    if choice == "none":
        return "none", None
    if choice == "display":
        display = volume_node.GetDisplayNode() if volume_node is not None else None
        if display is None or not hasattr(display, "GetWindow"):
            raise ValueError("the volume has no display window/level; show it in a slice view or pick a CT window")
        width, level = float(display.GetWindow()), float(display.GetLevel())
        if not width > 0:
            raise ValueError(f"the volume's display window width is {width:g}; set a window/level or pick a preset")
        return "CT", (level, width)
    raise ValueError(f"unknown intensity setting {choice!r}; use one of {', '.join(INTENSITY_CHOICES)}")


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
                from .remote_client import ServerWorkerClient

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
    def key_boxes(markups_nodes: Sequence, volume_node, settings: EffectSettings = EffectSettings(),
                  slice_axis: Optional[int] = None) -> KeyBoxSet:
        return mrml_markups.markups_key_boxes(markups_nodes, volume_node, slice_axis, settings.line_margin)

    def prepare_run(self, volume_node, markups_nodes: Sequence, settings: EffectSettings = EffectSettings(),
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

    def compute(self, volume_node, markups_nodes: Sequence, settings: EffectSettings = EffectSettings(),
                progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                slice_axis: Optional[int] = None) -> RunOutcome:
        """Segment in this process (with Device "MedSAM server", on the server, waiting for it); changes nothing
        in the scene (raises ``engine.Cancelled`` on cancel)."""
        prepared = self.prepare_run(volume_node, markups_nodes, settings, slice_axis)
        if settings.device == SERVER_DEVICE:
            from .remote_client import RemoteSegmentation

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
            settings: EffectSettings = EffectSettings(), progress: Optional[ProgressCallback] = None,
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
                                segment_name: str = "MedSAM", settings: EffectSettings = EffectSettings(),
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
