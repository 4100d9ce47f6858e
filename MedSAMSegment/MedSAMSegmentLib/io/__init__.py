"""Files for the command line: images with their geometry, key box files, and masks on the input's grid.

Images are read with SimpleITK (NIfTI, NRRD, MetaImage, DICOM series folders, PNG/JPEG) or numpy (MedSAM's
``.npz`` with ``imgs`` and optional ``spacing``/``origin``/``direction``). Arrays are in numpy ``[k, j, i]``
order; geometry is kept in SimpleITK's terms (LPS physical space, spacing/origin in ``x, y, z`` order) and
offered as the RAS matrices Slicer uses. Every output is written to a temporary file beside the target and
renamed into place, so an interrupted run never leaves a partial file or damages an existing one.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import GeometryError, KeyBox, KeyBoxSet, add_margin
from .atomic_files import atomic_output
from .error_text import first_line
from .markup_boxes import merge_key_boxes

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz", ".png", ".jpg", ".jpeg",
                    ".tif", ".tiff", ".bmp", ".dcm")
MASK_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".npz")


class InputError(ValueError):
    """An input file that cannot be used; the message names the file, the problem and the fix."""


@dataclass
class ImageVolume:
    """A volume with its geometry. ``array`` is ``[k, j, i]`` (or ``[k, j, i, c]`` for colour)."""

    array: np.ndarray
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # x, y, z (i, j, k)
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # LPS
    direction: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # row-major 3x3, LPS
    path: str = ""
    is_colour: bool = False

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape[:3])  # type: ignore[return-value]

    def ijk_to_lps(self) -> np.ndarray:
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction, dtype=float).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """The 4x4 matrix from voxel ``(i, j, k)`` to RAS, as Slicer's ``GetIJKToRASMatrix`` gives it."""
        return LPS_TO_RAS @ self.ijk_to_lps()

    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras())

    def spacing_kji(self) -> Tuple[float, float, float]:
        """Voxel spacing in numpy axis order, for metrics."""
        return tuple(float(v) for v in self.spacing[::-1])  # type: ignore[return-value]


def _has_extension(path: str, extensions: Sequence[str]) -> bool:
    lower = path.lower()
    return any(lower.endswith(ext) for ext in extensions)


def read_image(path: str) -> ImageVolume:
    """Read a volume (or a 2D image as a one-slice volume) with its geometry."""
    if not os.path.exists(path):
        raise InputError(f"image {path} does not exist; check the path")
    if os.path.isdir(path):
        return _read_dicom_series(path)
    if path.lower().endswith(".npz"):
        return _read_npz(path)
    import zlib

    import SimpleITK as sitk

    try:
        _check_compressed_stream(path)
        image = sitk.ReadImage(path)
    except (RuntimeError, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"image {path} could not be read ({first_line(exc)}); is it a complete, supported "
                         f"image file ({', '.join(IMAGE_EXTENSIONS)}) or a DICOM folder?") from exc
    return _from_sitk(image, path)


def _check_compressed_stream(path: str) -> None:
    """Read a gzip file to its end: ITK silently fills a truncated ``.nii.gz`` with zeros."""
    if not path.lower().endswith(".gz"):
        return
    import gzip

    with gzip.open(path, "rb") as stream:
        while stream.read(1 << 24):
            pass


def _from_sitk(image, path: str) -> ImageVolume:
    import SimpleITK as sitk

    components = image.GetNumberOfComponentsPerPixel()
    dimension = image.GetDimension()
    if dimension == 4:
        raise InputError(f"image {path} is 4D ({image.GetSize()}); extract one 3D volume (time point) first")
    array = sitk.GetArrayFromImage(image)
    is_colour = False
    if components > 1:
        if components in (3, 4) and array.dtype == np.uint8:
            array = array[..., :3]
            is_colour = True
            if np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
                array, is_colour = np.ascontiguousarray(array[..., 0]), False  # grey stored as RGB
        else:
            warnings.warn(f"image {path} has {components} components per voxel; using component 0", stacklevel=2)
            array = array[..., 0]
    if dimension == 2:
        array = array[None]
        spacing = tuple(image.GetSpacing()) + (1.0,)
        origin = tuple(image.GetOrigin()) + (0.0,)
        d2 = np.asarray(image.GetDirection()).reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d2
        direction_t = tuple(direction.ravel())
    elif dimension == 3:
        spacing, origin, direction_t = image.GetSpacing(), image.GetOrigin(), image.GetDirection()
    else:
        raise InputError(f"image {path} has {dimension} dimensions; a 2D image or 3D volume is needed")
    volume = ImageVolume(array, tuple(spacing), tuple(origin), tuple(direction_t), path, is_colour)
    _check_geometry(volume)
    return volume


def _check_geometry(volume: ImageVolume) -> None:
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    if not (np.all(np.isfinite(volume.spacing)) and min(volume.spacing) > 0):
        raise InputError(f"image {volume.path} has invalid spacing {volume.spacing}; fix the file's header")
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise InputError(f"image {volume.path} has an invalid direction matrix; fix the file's header")
    if min(volume.shape) < 1:
        raise InputError(f"image {volume.path} is empty (shape {volume.array.shape})")


def _read_npz(path: str) -> ImageVolume:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "imgs" not in data:
                raise InputError(f"{path} has no 'imgs' array (it has {sorted(data.keys())}); MedSAM .npz files "
                                 "keep the image in 'imgs'")
            array = np.asarray(data["imgs"])
            spacing = tuple(float(v) for v in data["spacing"]) if "spacing" in data else (1.0, 1.0, 1.0)
            origin = tuple(float(v) for v in data["origin"]) if "origin" in data else (0.0, 0.0, 0.0)
            direction = tuple(float(v) for v in np.ravel(data["direction"])) if "direction" in data else None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path} could not be read as .npz ({first_line(exc)}); is the file complete?") from exc
    is_colour = False
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8 and array.shape[0] > 3:
        array = array[None]  # (H, W, 3): one colour image
        is_colour = True
    elif array.ndim != 3:
        raise InputError(f"{path}: 'imgs' has shape {array.shape}; expected (D, H, W), (H, W) or (H, W, 3)")
    if len(spacing) == 2:
        spacing = spacing + (1.0,)
    if len(origin) == 2:
        origin = origin + (0.0,)
    if direction is None or len(direction) != 9:
        direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    volume = ImageVolume(array, spacing[:3], origin[:3], direction, path, is_colour)
    _check_geometry(volume)
    return volume


def _read_dicom_series(folder: str) -> ImageVolume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(folder)
    if not series:
        raise InputError(f"folder {folder} holds no DICOM series; point to a folder of DICOM files or an image file")
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(folder, sid) for sid in series}
    chosen = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    if len(series) > 1:
        warnings.warn(f"folder {folder} holds {len(series)} DICOM series; using {chosen} "
                      f"({len(files_per_series[chosen])} files)", stacklevel=2)
    reader.SetFileNames(files_per_series[chosen])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"DICOM series in {folder} could not be read ({first_line(exc)})") from exc
    return _from_sitk(image, folder)


# ---------------------------------------------------------------------------------------------------------
# Key box files


def read_box_json(path: str, volume_shape: Sequence[int], margin: float = 0.0) -> KeyBoxSet:
    """Read ``{"slice_axis": A, "boxes": [{"slice": S, "box": [x0, y0, x1, y1]}, ...]}`` (voxel indices)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError as exc:
        raise InputError(f"box file {path} does not exist; check the path") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"box file {path} is not valid JSON ({exc}); see the README for the format") from exc
    expected = 'expected {"slice_axis": 0, "boxes": [{"slice": 5, "box": [x0, y0, x1, y1]}]}'
    if not isinstance(data, dict) or "boxes" not in data or "slice_axis" not in data:
        raise InputError(f"box file {path}: {expected}")
    axis = data["slice_axis"]
    if isinstance(axis, bool) or not isinstance(axis, int) or axis not in (0, 1, 2):
        raise InputError(f"box file {path}: slice_axis must be 0, 1 or 2 (a numpy axis of [k, j, i]), got {axis!r}")
    if not isinstance(data["boxes"], list):
        raise InputError(f"box file {path}: 'boxes' must be a list; {expected}")
    boxes: List[KeyBox] = []
    for n, entry in enumerate(data["boxes"]):
        where = f"{os.path.basename(path)} entry {n}"
        if not isinstance(entry, dict) or "slice" not in entry or "box" not in entry:
            raise InputError(f"box file {path}: entry {n} needs 'slice' and 'box'; {expected}")
        slice_index = entry["slice"]
        if (isinstance(slice_index, bool) or not isinstance(slice_index, (int, float))
                or not np.isfinite(slice_index) or slice_index != int(slice_index)):
            raise InputError(f"box file {path}: entry {n} has slice {slice_index!r}; it must be a whole number")
        box = entry["box"]
        if not isinstance(box, list) or len(box) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in box
        ):
            raise InputError(f"box file {path}: entry {n} has box {box!r}; it must be 4 numbers [x0, y0, x1, y1]")
        values = [float(v) for v in box]
        if not all(np.isfinite(values)):
            raise InputError(f"box file {path}: entry {n} has a NaN or infinite coordinate: {box!r}")
        if margin:
            values = list(add_margin(values, margin))
        boxes.append(KeyBox(int(slice_index), tuple(values), where))
    if not boxes:
        raise InputError(f"box file {path} holds no boxes; {expected}")
    return KeyBoxSet(axis, boxes)


def write_box_json(path: str, key_boxes: KeyBoxSet) -> None:
    """Write key boxes in the JSON format :func:`read_box_json` reads."""
    data = {
        "slice_axis": key_boxes.slice_axis,
        "boxes": [{"slice": k.slice_index, "box": [round(float(v), 3) for v in k.box]} for k in key_boxes.sorted()],
    }
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)


def is_markups_file(path: str) -> bool:
    if path.lower().endswith(".mrk.json"):
        return True
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return '"markups"' in head


def read_key_boxes(
    paths: Sequence[str],
    volume: ImageVolume,
    margin: float = 0.0,
    line_margin: Optional[float] = None,
    slice_axis: Optional[int] = None,
) -> KeyBoxSet:
    """Read one or more box files (box JSON or Slicer ``.mrk.json``) into one key box set on one slice axis."""
    pairs = []
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"box file {path} does not exist; check the path")
        if is_markups_file(path):
            from . import markups_file

            kwargs = {"slice_axis": slice_axis, "margin": margin}
            if line_margin is not None:
                kwargs["line_margin"] = line_margin
            pairs.extend(markups_file.read_markups_key_boxes(path, volume.ras_to_ijk(), volume.shape, **kwargs))
        else:
            key_set = read_box_json(path, volume.shape, margin)
            if slice_axis is not None and key_set.slice_axis != slice_axis:
                raise InputError(f"box file {path} has slice_axis {key_set.slice_axis} but {slice_axis} was asked for")
            pairs.extend((key_set.slice_axis, key) for key in key_set.boxes)
    try:
        return merge_key_boxes(pairs)
    except GeometryError as exc:
        raise InputError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------------
# Writing masks


def _check_mask_shape(mask: np.ndarray, reference: ImageVolume) -> None:
    if mask.shape != reference.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {reference.shape}")


def _mask_image(mask: np.ndarray, reference: ImageVolume, value: int = 1):
    import SimpleITK as sitk

    _check_mask_shape(mask, reference)
    image = sitk.GetImageFromArray(mask.astype(np.uint8) * np.uint8(value))
    image.SetSpacing(tuple(float(v) for v in reference.spacing))
    image.SetOrigin(tuple(float(v) for v in reference.origin))
    image.SetDirection(tuple(float(v) for v in reference.direction))
    return image


def write_mask(
    path: str,
    mask: np.ndarray,
    reference: ImageVolume,
    segment_name: str = "MedSAM",
    color: Tuple[float, float, float] = (0.94, 0.69, 0.2),
) -> None:
    """Write a mask on the reference image's exact grid: ``.nii[.gz]``, ``.nrrd``, ``.mha``, ``.seg.nrrd``, ``.png``,
    ``.npz``.

    ``.seg.nrrd`` is a Slicer segmentation file with one segment named ``segment_name`` in ``color``. ``.npz`` is
    MedSAM's own format: the mask in ``segs`` (uint8, the image's (D, H, W) array order) beside the image's
    ``spacing``, ``origin`` and ``direction`` as a MedSAM ``.npz`` input carries them.
    """
    if not _has_extension(path, MASK_EXTENSIONS):
        raise InputError(f"output {path}: use one of {', '.join(MASK_EXTENSIONS)}")
    if path.lower().endswith(".npz"):
        _write_npz_mask(path, mask, reference)
        return
    import SimpleITK as sitk

    if path.lower().endswith(".png"):
        if mask.shape[0] != 1:
            raise InputError(f"output {path}: PNG holds one slice but the mask has {mask.shape[0]}; use .nii.gz")
        image = sitk.GetImageFromArray(mask[0].astype(np.uint8) * np.uint8(255))
    else:
        image = _mask_image(mask, reference)
    if path.lower().endswith(".seg.nrrd"):
        _add_segmentation_metadata(image, mask, segment_name, color)
    with atomic_output(path) as tmp:
        sitk.WriteImage(image, tmp, useCompression=True)


def _write_npz_mask(path: str, mask: np.ndarray, reference: ImageVolume) -> None:
    _check_mask_shape(mask, reference)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: numpy would append ".npz" to the temporary name
            np.savez_compressed(handle, segs=mask.astype(np.uint8), spacing=np.asarray(reference.spacing, float),
                                origin=np.asarray(reference.origin, float),
                                direction=np.asarray(reference.direction, float).reshape(3, 3))


def _add_segmentation_metadata(image, mask: np.ndarray, name: str, color: Tuple[float, float, float]) -> None:
    """Slicer's ``.seg.nrrd`` fields for one binary-labelmap segment with label value 1."""
    nonzero = np.argwhere(mask)
    if len(nonzero):
        low, high = nonzero.min(axis=0)[::-1], nonzero.max(axis=0)[::-1]  # i, j, k
        extent = " ".join(f"{int(a)} {int(b)}" for a, b in zip(low, high))
    else:
        extent = "0 -1 0 -1 0 -1"
    fields = {
        "Segment0_ID": "Segment_1",
        "Segment0_Name": name,
        "Segment0_NameAutoGenerated": "0",
        "Segment0_Color": " ".join(f"{c:g}" for c in color),
        "Segment0_ColorAutoGenerated": "0",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment0_Extent": extent,
        "Segment0_Tags": "Segmentation.Status:inprogress|",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for key, value in fields.items():
        image.SetMetaData(key, value)


def read_mask(path: str, label_values: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, ImageVolume]:
    """A reference mask (bool) from a label image: any non-zero voxel, or those with the given values."""
    if path.lower().endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            if "gts" not in data:
                raise InputError(f"{path} has no 'gts' array for the reference mask")
            labels = np.asarray(data["gts"])
        volume = _read_npz(path)
        labels = labels[None] if labels.ndim == 2 else labels
    else:
        volume = read_image(path)
        labels = volume.array
    mask = labels > 0 if label_values is None else np.isin(labels, list(label_values))
    return mask, volume
