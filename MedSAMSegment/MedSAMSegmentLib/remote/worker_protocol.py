"""Messages between the GUI process and the segmentation worker process: framed JSON plus raw arrays, no pickle.

A frame is ``length`` (4 bytes, big-endian) + a UTF-8 JSON header, followed by the raw bytes of each array the
header lists under ``"arrays"`` as ``{"name", "dtype", "shape"}`` (C order). Only the dtypes in
:data:`ARRAY_DTYPES` are accepted, and header and array sizes are bounded, so a corrupt or hostile stream fails
with :class:`ProtocolError` instead of allocating without limit or running code.
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO, Dict, Optional, Tuple

import numpy as np

#: Array element types that may cross the pipe.
ARRAY_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float32", "float64", "bool")
#: Largest JSON header, bytes.
MAX_HEADER_BYTES = 16 << 20
#: Largest single array, bytes (a 1024 x 1024 x 2048 int16 volume).
MAX_ARRAY_BYTES = 4 << 30

Message = Tuple[dict, Dict[str, np.ndarray]]


class ProtocolError(RuntimeError):
    """The stream is not a valid message (truncated, oversized, or an unsupported array)."""


def _read_exact(stream: BinaryIO, count: int) -> Optional[bytes]:
    """``count`` bytes, or None at a clean end of stream before the first byte."""
    chunks = []
    remaining = count
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if remaining == count:
                return None
            raise ProtocolError(f"the stream ended inside a message ({count - remaining} of {count} bytes)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def write_message(stream: BinaryIO, header: dict, arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Write one message and flush. ``header`` must be JSON-serialisable; it must not use the key ``arrays``."""
    arrays = arrays or {}
    specs = []
    payloads = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.name not in ARRAY_DTYPES:
            raise ProtocolError(f"array '{name}' has dtype {array.dtype.name}, which cannot be sent")
        specs.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape)})
        payloads.append(array)
    encoded = json.dumps({**header, "arrays": specs}).encode("utf-8")
    stream.write(struct.pack(">I", len(encoded)))
    stream.write(encoded)
    for array in payloads:
        if array.size:
            stream.write(memoryview(array.reshape(-1).view(np.uint8)))
    stream.flush()


def read_message(stream: BinaryIO) -> Optional[Message]:
    """The next ``(header, arrays)``, or None when the stream ended cleanly between messages."""
    prefix = _read_exact(stream, 4)
    if prefix is None:
        return None
    (length,) = struct.unpack(">I", prefix)
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"a message header of {length} bytes is larger than {MAX_HEADER_BYTES}")
    raw = _read_exact(stream, length)
    if raw is None:
        raise ProtocolError("the stream ended after a message length")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"a message header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("a message header is not a JSON object")
    arrays: Dict[str, np.ndarray] = {}
    for spec in header.pop("arrays", []):
        try:
            name, dtype, shape = str(spec["name"]), np.dtype(spec["dtype"]), tuple(int(n) for n in spec["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"an array description is invalid: {spec!r}") from exc
        if dtype.name not in ARRAY_DTYPES or any(n < 0 for n in shape):
            raise ProtocolError(f"array '{name}' has an unsupported dtype or shape: {spec!r}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > MAX_ARRAY_BYTES:
            raise ProtocolError(f"array '{name}' of {nbytes} bytes is larger than {MAX_ARRAY_BYTES}")
        data = _read_exact(stream, nbytes) if nbytes else b""
        if data is None:
            raise ProtocolError(f"the stream ended before array '{name}'")
        arrays[name] = np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
    return header, arrays
