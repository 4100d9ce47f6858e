"""What a MedSAM server and its clients exchange over HTTP, shared by both sides (standard library and NumPy only).

**Volumes by content.** A client normalises the image itself (the uint8 volume the model sees) and describes it by
a *manifest*: shape, slice axis and one digest per slice. The manifest's own digest names the volume on the server
(:func:`manifest_id`). The server asks only for the slices a request reads that it does not hold yet
(:func:`slices_read`); it checks every slice it receives against the manifest's digest, so one client can never
change what another reads under the same name. A second request on the same image uploads nothing; moving a box
sends only boxes.

**Frames.** Bodies with arrays are a :mod:`worker_protocol` message (a JSON header and raw arrays, a fixed set of
dtypes, no pickle) compressed with zlib (:func:`pack`, :func:`unpack`). Unpacking is bounded: a body that inflates
beyond the limit, or is not a frame, raises :class:`FrameError` before any large allocation.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .worker_protocol import Message, ProtocolError, read_message, write_message

#: The path prefix of this version of the API.
API_PREFIX = "/v1"
#: Media type of a compressed frame.
FRAME_MEDIA_TYPE = "application/vnd.medsam.frame+zlib"
#: Largest inflated frame, bytes (a default; servers may lower it).
MAX_INFLATED_BYTES = 2 << 30
#: Largest side of a volume, voxels, and the most voxels in one volume.
MAX_SIDE = 4096
MAX_VOXELS = 1 << 31
#: Slices the server may guess past the newest key box when encoding ahead (engine.lookahead.SPECULATION_LIMIT).
AHEAD_MARGIN = 10


class FrameError(ValueError):
    """A body that is not a valid compressed frame, or too large once inflated; the message says which."""


class VolumeError(ValueError):
    """A manifest or slice upload that does not describe a valid volume; the message says what is wrong."""


def pack(header: dict, arrays: Optional[Dict[str, np.ndarray]] = None, level: int = 1) -> bytes:
    """A compressed frame of ``header`` and ``arrays``."""
    buffer = io.BytesIO()
    write_message(buffer, header, arrays)
    return zlib.compress(buffer.getvalue(), level)


def unpack(body: bytes, max_inflated: int = MAX_INFLATED_BYTES) -> Message:
    """The ``(header, arrays)`` of a compressed frame; raises :class:`FrameError` for anything else."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body, max_inflated)
    except zlib.error as exc:
        raise FrameError(f"the body is not a zlib-compressed MedSAM frame ({exc})") from None
    if inflater.unconsumed_tail:
        raise FrameError(f"the body inflates to more than {max_inflated} bytes")
    if not inflater.eof:
        raise FrameError("the body is a truncated zlib stream")
    try:
        message = read_message(io.BytesIO(raw))
    except ProtocolError as exc:
        raise FrameError(f"the body is not a MedSAM frame: {exc}") from None
    if message is None:
        raise FrameError("the body is empty")
    return message


def slice_digest(pixels: np.ndarray) -> str:
    """The digest of one uint8 slice (its shape and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(tuple(pixels.shape)).encode())
    digest.update(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def take(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` of ``volume`` along ``axis``."""
    return np.take(volume, index, axis=axis)


@dataclass(frozen=True)
class Manifest:
    """A normalised volume by content: its shape, slice axis and the digest of each slice along that axis."""

    shape: Tuple[int, int, int]
    slice_axis: int
    digests: Tuple[str, ...]

    @classmethod
    def of(cls, volume_u8: np.ndarray, slice_axis: int) -> Manifest:
        """The manifest of a uint8 volume."""
        digests = tuple(slice_digest(take(volume_u8, slice_axis, s)) for s in range(volume_u8.shape[slice_axis]))
        return cls(tuple(int(n) for n in volume_u8.shape), int(slice_axis), digests)

    @property
    def volume_id(self) -> str:
        return manifest_id(self)

    @property
    def slice_shape(self) -> Tuple[int, int]:
        return tuple(n for axis, n in enumerate(self.shape) if axis != self.slice_axis)  # type: ignore[return-value]

    def to_wire(self) -> dict:
        return {"shape": list(self.shape), "slice_axis": self.slice_axis, "digests": list(self.digests)}

    @classmethod
    def from_wire(cls, data: object) -> Manifest:
        """A checked manifest; raises :class:`VolumeError` naming what is wrong."""
        try:
            shape = tuple(int(n) for n in data["shape"])  # type: ignore[index]
            axis = int(data["slice_axis"])  # type: ignore[index]
            digests = tuple(str(d) for d in data["digests"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError) as exc:
            raise VolumeError(f"the volume manifest is not in the expected form ({exc})") from None
        if len(shape) != 3 or any(n < 1 or n > MAX_SIDE for n in shape):
            raise VolumeError(f"volume shape {list(shape)}: three sides of 1 to {MAX_SIDE} voxels are accepted")
        if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
            raise VolumeError(f"volume shape {list(shape)} has more than {MAX_VOXELS} voxels")
        if axis not in (0, 1, 2):
            raise VolumeError(f"slice axis {axis}: 0, 1 or 2 are accepted")
        if len(digests) != shape[axis] or any(len(d) != 32 for d in digests):
            raise VolumeError(f"the manifest needs one 32-character digest per slice ({shape[axis]} slices)")
        return cls(shape, axis, digests)  # type: ignore[arg-type]


def manifest_id(manifest: Manifest) -> str:
    """The name of a volume on the server: the digest of its manifest."""
    text = json.dumps(manifest.to_wire(), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def slices_read(key_slices: Sequence[int], strategy: str, n_slices: int, ahead: bool) -> List[int]:
    """The slices a request reads: those from the first to the last key slice; every slice when a single key box
    is propagated (the walk may reach the ends); ``ahead`` (encoding ahead) adds :data:`AHEAD_MARGIN` slices on
    each side for the slices guessed past the newest key box."""
    if not key_slices:
        return []
    first, last = min(key_slices), max(key_slices)
    if strategy == "propagate" and first == last:
        first, last = 0, n_slices - 1
    if ahead:
        first, last = first - AHEAD_MARGIN, last + AHEAD_MARGIN
    return list(range(max(first, 0), min(last, n_slices - 1) + 1))


def slices_stack(volume_u8: np.ndarray, manifest: Manifest, indices: Sequence[int]) -> np.ndarray:
    """Slices ``indices`` of ``volume_u8``, stacked along a new first axis (uint8)."""
    if not indices:
        return np.zeros((0, *manifest.slice_shape), dtype=np.uint8)
    return np.ascontiguousarray(np.stack([take(volume_u8, manifest.slice_axis, int(i)) for i in indices]),
                                dtype=np.uint8)


def slices_frame(volume_u8: np.ndarray, manifest: Manifest, indices: Sequence[int]) -> bytes:
    """The compressed upload of slices ``indices`` of ``volume_u8`` (``POST /volumes/NAME/slices``)."""
    return pack({"indices": [int(i) for i in indices]}, {"slices": slices_stack(volume_u8, manifest, indices)})


def checked_slices(manifest: Manifest, header: dict, arrays: Dict[str, np.ndarray]) -> Dict[int, np.ndarray]:
    """The uploaded slices by index, each checked against the manifest; raises :class:`VolumeError`."""
    try:
        indices = [int(i) for i in header["indices"]]
        stack = arrays["slices"]
    except (KeyError, TypeError, ValueError):
        raise VolumeError("a slice upload needs 'indices' and the array 'slices'") from None
    if not isinstance(stack, np.ndarray):
        raise VolumeError("a slice upload needs the array 'slices'")
    if stack.dtype != np.uint8 or stack.ndim != 3 or stack.shape[0] != len(indices):
        raise VolumeError(f"'slices' must be uint8 [n, rows, columns] with one slice per index, not "
                          f"{stack.dtype.name} {list(stack.shape)} for {len(indices)} indices")
    if tuple(stack.shape[1:]) != manifest.slice_shape:
        raise VolumeError(f"slices of {list(stack.shape[1:])} sent for a volume of {list(manifest.slice_shape)} slices")
    slices = {}
    for index, pixels in zip(indices, stack):
        if not 0 <= index < len(manifest.digests):
            raise VolumeError(f"slice {index} is outside the volume (0 to {len(manifest.digests) - 1})")
        if slice_digest(pixels) != manifest.digests[index]:
            raise VolumeError(f"slice {index} does not match its digest in the manifest")
        slices[index] = pixels
    return slices
