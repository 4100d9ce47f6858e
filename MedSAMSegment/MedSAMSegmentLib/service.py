"""The segmentation service: volumes and key boxes in, masks out, with models and embeddings kept between runs.

It knows nothing of Slicer or Qt. The worker process (:mod:`worker`) runs one, so that model loading, encoding and
decoding never run on Slicer's GUI thread; tests and scripts may also call it directly. Requests and results have a
plain-data wire form (:func:`request_header`, :func:`result_header`) that :mod:`worker_protocol` carries.

Between runs the service keeps one :class:`~session.SegmentationSession` per volume token, keyed by a hash of the
normalised voxels, the geometry, the slice axis and the model: moving or adding a key box recomputes only the
slices whose box changed, and any change of voxels, geometry, intensity setting or model starts afresh.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import intensity, pipeline
from .engine import CancelCheck, EmbeddingCache, ProgressCallback, SegmentationResult, VolumeSegmenter, editing_cache
from .geometry import GeometryError, KeyBox, KeyBoxSet
from .learning.refinement import RefineSettings, refine_from_corrections
from .session import SegmentationSession

#: Raw volumes kept by token, so that a second run on the same voxels needs no new upload.
KEPT_VOLUMES = 2


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run, where: ``name`` (``lite`` or ``vit_b``), its checkpoint file, and the device."""

    name: str = "lite"
    checkpoint: Optional[str] = None
    device: str = "auto"


@dataclass
class ServiceResult:
    """A finished run: the engine's result plus what the user should be told. For a refinement (Refine from my
    edits), ``refined`` says whether the adapted decoder was kept and ``note`` is its one-line account."""

    result: SegmentationResult
    intensity: str
    device: str
    warnings: List[str] = field(default_factory=list)
    refined: Optional[bool] = None
    note: str = ""


@dataclass
class EncodedAhead:
    """What :meth:`SegmentationService.encode_ahead` did: views encoded, and the preview when one was asked for."""

    count: int
    preview: Optional[ServiceResult] = None


def volume_fingerprint(volume_u8: np.ndarray, ijk_to_world: np.ndarray, slice_axis: int, model_fingerprint: str) -> str:
    """A key that changes whenever the normalised voxels, the geometry, the slice axis or the model change."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(volume_u8.shape).encode())
    digest.update(np.ascontiguousarray(volume_u8).tobytes())
    digest.update(np.round(np.asarray(ijk_to_world, dtype=float), 6).tobytes())
    digest.update(f"axis={slice_axis};model={model_fingerprint}".encode())
    return digest.hexdigest()


class SegmentationService:
    """Segment volumes from key boxes; keeps models, raw volumes and segmenters between calls (not thread-safe).

    ``model_loader(name, checkpoint, device)`` builds a model (default :func:`models.load_model`);
    ``kept_volumes`` volumes are kept, the least recently given dropped first.
    """

    def __init__(self, model_loader: Optional[Callable] = None, cache: Optional[EmbeddingCache] = None,
                 batch_size: Optional[int] = None, kept_volumes: int = KEPT_VOLUMES) -> None:
        self._model_loader = model_loader
        self.cache = cache if cache is not None else editing_cache()
        self.batch_size = batch_size
        self.kept_volumes = kept_volumes
        self._models: Dict[ModelSpec, object] = {}
        self._volumes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._normalised: set = set()  # tokens whose voxels are already the model's uint8 volume
        #: token -> (request key of the last call, content key, session)
        self._sessions: Dict[str, Tuple[Optional[tuple], str, SegmentationSession]] = {}

    def model(self, spec: ModelSpec):
        """The model for ``spec``, loaded on first use and kept."""
        if spec not in self._models:
            loader = self._model_loader
            if loader is None:
                from .models import load_model as loader
            self._models[spec] = loader(spec.name, spec.checkpoint, spec.device)
        return self._models[spec]

    def has_volume(self, token: str) -> bool:
        return token in self._volumes

    def put_volume(self, token: str, array: np.ndarray, normalised: bool = False) -> None:
        """Keep ``array`` (``[k, j, i]``, any intensities; never modified) as the voxels of ``token``; with
        ``normalised``, ``array`` is already the uint8 volume the model sees (normalised by a remote client) and
        the settings' intensity fields are not applied to it again. Giving a token again (also the same array
        after changing it) makes the next run check the voxels by content."""
        self._volumes[token] = array
        self._volumes.move_to_end(token)
        if normalised:
            self._normalised.add(token)
        else:
            self._normalised.discard(token)
        kept = self._sessions.get(token)
        if kept is not None:  # voxels given again under a token: check them by content at the next run
            self._sessions[token] = (None, kept[1], kept[2])
        while len(self._volumes) > self.kept_volumes:
            old, _ = self._volumes.popitem(last=False)
            self._sessions.pop(old, None)
            self._normalised.discard(old)

    def forget(self) -> None:
        """Drop every kept volume, segmenter and in-memory embedding (models stay loaded)."""
        self._volumes.clear()
        self._sessions.clear()
        self._normalised.clear()
        self.cache.clear_memory()

    def session(self, token: str, ijk_to_world: np.ndarray, slice_axis: int, spec: ModelSpec,
                settings: pipeline.SegmentationSettings) -> SegmentationSession:
        """The kept session of ``token`` (no thread of its own: the worker calls it) while voxels, geometry,
        intensity, axis and model are unchanged, with ``settings`` in use."""
        if token not in self._volumes:
            raise KeyError(f"no voxels were sent for volume {token!r}")
        # A token's voxels do not change (put_volume marks them for a check), so the same geometry, axis, model
        # and intensity settings reuse the kept session without normalising and hashing the volume again.
        request = (np.round(np.asarray(ijk_to_world, dtype=float), 6).tobytes(), int(slice_axis), spec,
                   settings.modality, None if settings.window is None else tuple(settings.window), settings.mr_rule)
        kept = self._sessions.get(token)
        if kept is None or kept[0] != request:
            volume_u8 = (self._volumes[token] if token in self._normalised
                         else pipeline.normalised_volume(self._volumes[token], settings))  # the source is kept
            model = self.model(spec)
            content = volume_fingerprint(volume_u8, ijk_to_world, slice_axis, getattr(model, "fingerprint", ""))
            if kept is None or kept[1] != content:
                segmenter = VolumeSegmenter(model, volume_u8, slice_axis, cache=self.cache, batch_size=self.batch_size)
            else:  # the same voxels after all: keep the decodes, but a session's intensity settings are fixed
                segmenter = kept[2].segmenter
            kept = (request, content, SegmentationSession(segmenter, settings, background=False, preview=False))
            self._sessions[token] = kept
        kept[2].update_settings(settings)
        return kept[2]

    def segmenter(self, token: str, ijk_to_world: np.ndarray, slice_axis: int, spec: ModelSpec,
                  settings: pipeline.SegmentationSettings) -> VolumeSegmenter:
        """The segmenter of :meth:`session`."""
        return self.session(token, ijk_to_world, slice_axis, spec, settings).segmenter

    def encode_ahead(self, token: str, ijk_to_world: np.ndarray, key_boxes: KeyBoxSet, spec: ModelSpec,
                     settings: pipeline.SegmentationSettings, newest: Optional[int] = None,
                     beyond: Optional[int] = None, cancel: Optional[CancelCheck] = None,
                     preview: bool = False) -> EncodedAhead:
        """Encode the views a run of ``token`` from ``key_boxes`` will read, before any run asks for them, then
        (with ``preview``) decode them, then encode ``beyond`` slices past ``newest`` (default: the user's
        spacing; see :mod:`session`).

        Embeddings go to the cache as each batch completes, so a cancelled call (``engine.Cancelled``) leaves
        only whole, correct embeddings behind.
        """
        session = self.session(token, ijk_to_world, key_boxes.slice_axis, spec, settings)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session.set_boxes(key_boxes, newest)
            session.preview_enabled = preview
            count = session.work_ahead(cancel, beyond)
        shown = session.preview() if preview else None
        return EncodedAhead(count, None if shown is None else self._served(token, session, shown, caught))

    def segment(self, token: str, ijk_to_world: np.ndarray, key_boxes: KeyBoxSet, spec: ModelSpec,
                settings: pipeline.SegmentationSettings, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None) -> ServiceResult:
        """Segment the voxels of ``token`` from ``key_boxes`` (raises ``engine.Cancelled`` when cancelled)."""
        session = self.session(token, ijk_to_world, key_boxes.slice_axis, spec, settings)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session.set_boxes(key_boxes)
            result = session.result(progress, cancel)
        return self._served(token, session, result, caught)

    def refine(self, token: str, ijk_to_world: np.ndarray, key_boxes: KeyBoxSet, spec: ModelSpec,
               settings: pipeline.SegmentationSettings, corrected: Dict[int, np.ndarray],
               progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
               refine: Optional[RefineSettings] = None) -> ServiceResult:
        """Refine from my edits: the run of ``token`` from ``key_boxes`` (computed again only where it is not
        kept), with the decoder adapted to the expert's ``corrected`` slices ({slice index along the key boxes'
        axis: bool mask of the slice}) and the other slices decoded again when the leave-one-out check holds
        (:func:`refinement.refine_from_corrections`, with ``refine`` or its defaults); the corrected slices come
        back as given. Raises
        :class:`~refinement.RefinementError` with one line for corrections it cannot use, ``engine.Cancelled``
        when cancelled."""
        session = self.session(token, ijk_to_world, key_boxes.slice_axis, spec, settings)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session.set_boxes(key_boxes)
            result = session.result(None, cancel)
            refinement = refine_from_corrections(session.segmenter, key_boxes, session.settings, result, corrected,
                                                 refine, progress, cancel)
        served = self._served(token, session, refinement.result, caught)
        served.refined, served.note = refinement.kept, refinement.message
        return served

    def _served(self, token: str, session: SegmentationSession, result: SegmentationResult,
                caught: Sequence[warnings.WarningMessage]) -> ServiceResult:
        settings = session.settings
        described = ("" if token in self._normalised  # the client that normalised it describes it
                     else intensity.describe(settings.modality, settings.window, self._volumes[token]))
        model = session.segmenter.model
        device = getattr(model, "device_description", "") or str(getattr(model, "device", ""))
        messages = [str(w.message) for w in caught if issubclass(w.category, (UserWarning, ResourceWarning))]
        return ServiceResult(result, described, device, messages)


# ---------------------------------------------------------------------------------------------------------
# Wire form (plain data for worker_protocol)


def key_boxes_to_wire(keys: KeyBoxSet) -> dict:
    return {"slice_axis": int(keys.slice_axis),
            "boxes": [{"slice": int(k.slice_index), "box": [float(v) for v in k.box], "source": k.source}
                      for k in keys.boxes]}


def key_boxes_from_wire(data: dict) -> KeyBoxSet:
    try:
        return KeyBoxSet(int(data["slice_axis"]), [KeyBox(int(b["slice"]), tuple(float(v) for v in b["box"]),
                                                          str(b.get("source", ""))) for b in data["boxes"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise GeometryError(f"the key boxes are not in the expected form: {exc}") from None


def settings_to_wire(settings: pipeline.SegmentationSettings) -> dict:
    data = asdict(settings)
    data["window"] = None if settings.window is None else [float(v) for v in settings.window]
    return data


def settings_from_wire(data: dict) -> pipeline.SegmentationSettings:
    values = dict(data)
    if values.get("window") is not None:
        values["window"] = tuple(float(v) for v in values["window"])
    return pipeline.SegmentationSettings(**values)


def result_header(outcome: ServiceResult) -> Tuple[dict, Dict[str, np.ndarray]]:
    """The wire form of a result: a header and the mask over the segmented slices only (uint8)."""
    result = outcome.result
    first, last = result.slice_range
    selector: List[object] = [slice(None)] * 3
    selector[result.slice_axis] = slice(first, last + 1)
    header = {
        "shape": list(result.mask.shape), "slice_axis": result.slice_axis, "slice_range": [first, last],
        "boxes": {str(s): [float(v) for v in b] for s, b in result.boxes.items()},
        "iou": {str(s): float(v) for s, v in result.iou.items()},
        "flagged": [[int(s), str(reason)] for s, reason in result.flagged],
        "recomputed": [int(s) for s in result.recomputed], "encoded": int(result.encoded),
        "filled": [int(s) for s in result.filled],
        "seconds": float(result.seconds), "intensity": outcome.intensity, "device": outcome.device,
        "warnings": list(outcome.warnings), "refined": outcome.refined, "note": outcome.note,
    }
    return header, {"slab": result.mask[tuple(selector)].astype(np.uint8)}


def result_from_wire(header: dict, arrays: Dict[str, np.ndarray]) -> ServiceResult:
    """The inverse of :func:`result_header` (the full-size mask is rebuilt around the slab)."""
    shape: Sequence[int] = tuple(int(n) for n in header["shape"])
    axis = int(header["slice_axis"])
    first, last = (int(v) for v in header["slice_range"])
    mask = np.zeros(shape, dtype=bool)
    selector: List[object] = [slice(None)] * 3
    selector[axis] = slice(first, last + 1)
    mask[tuple(selector)] = arrays["slab"].astype(bool)
    result = SegmentationResult(
        mask=mask, slice_axis=axis, slice_range=(first, last),
        boxes={int(s): tuple(b) for s, b in header["boxes"].items()},
        iou={int(s): float(v) for s, v in header["iou"].items()},
        flagged=[(int(s), str(reason)) for s, reason in header["flagged"]],
        recomputed=[int(s) for s in header["recomputed"]], encoded=int(header["encoded"]),
        filled=[int(s) for s in header["filled"]], seconds=float(header["seconds"]),
    )
    refined = header.get("refined")
    return ServiceResult(result, str(header["intensity"]), str(header["device"]), list(header["warnings"]),
                         None if refined is None else bool(refined), str(header.get("note", "")))


def corrected_to_wire(corrected: Dict[int, np.ndarray]) -> Tuple[List[int], np.ndarray]:
    """The expert's corrected slices as their indices and one uint8 stack (slices along the first axis)."""
    indices = sorted(int(i) for i in corrected)
    if not indices:
        return [], np.zeros((0, 0, 0), dtype=np.uint8)
    return indices, np.stack([np.asarray(corrected[i], dtype=np.uint8) for i in indices])


def corrected_from_wire(indices: Sequence[int], stack: np.ndarray) -> Dict[int, np.ndarray]:
    """The inverse of :func:`corrected_to_wire`."""
    if len(indices) != len(stack):
        raise ValueError(f"{len(indices)} corrected slice indices but {len(stack)} masks were sent")
    return {int(i): np.asarray(mask, dtype=bool) for i, mask in zip(indices, stack)}
