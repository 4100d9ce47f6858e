"""The server's volumes: named by their manifest, filled slice by slice from checked uploads, least recently used
dropped beyond a count.

A volume's voxels are one uint8 array of its full shape; only the slices that were uploaded are ever written
(the rest stay zero and are never read: a request runs only once every slice it reads is present). Each fill
bumps the volume's ``generation``, so the model runner knows to give the array to the service again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from MedSAMSegmentLib.remote.remote_protocol import Manifest


@dataclass
class StoredVolume:
    """One volume: its manifest, its voxels (uint8, full shape) and which slices are present."""

    manifest: Manifest
    array: np.ndarray
    present: np.ndarray  # bool per slice along the manifest's slice axis
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def missing(self, indices: Sequence[int]) -> List[int]:
        return [int(i) for i in indices if not self.present[i]]

    def fill(self, slices: Dict[int, np.ndarray]) -> int:
        """Write checked slices; returns how many were new."""
        new = 0
        with self.lock:
            for index, pixels in slices.items():
                if self.present[index]:
                    continue
                selector: List[object] = [slice(None)] * 3
                selector[self.manifest.slice_axis] = index
                self.array[tuple(selector)] = pixels
                self.present[index] = True
                new += 1
            if new:
                self.generation += 1
        return new

    @property
    def bytes_present(self) -> int:
        return int(self.present.sum()) * int(np.prod(self.manifest.slice_shape))


class VolumeStore:
    """Volumes by manifest name, at most ``max_volumes`` of them (thread-safe)."""

    def __init__(self, max_volumes: int) -> None:
        self.max_volumes = max_volumes
        self._volumes: OrderedDict[str, StoredVolume] = OrderedDict()
        self._lock = threading.Lock()

    def declare(self, manifest: Manifest) -> StoredVolume:
        """The volume of ``manifest``, made empty when it is new."""
        name = manifest.volume_id
        with self._lock:
            stored = self._volumes.get(name)
            if stored is None:
                # np.zeros maps untouched pages lazily: slices never uploaded cost no memory.
                stored = StoredVolume(manifest, np.zeros(manifest.shape, dtype=np.uint8),
                                      np.zeros(manifest.shape[manifest.slice_axis], dtype=bool))
                self._volumes[name] = stored
            self._volumes.move_to_end(name)
            while len(self._volumes) > self.max_volumes:
                self._volumes.popitem(last=False)
            return stored

    def get(self, name: str) -> Optional[StoredVolume]:
        with self._lock:
            stored = self._volumes.get(name)
            if stored is not None:
                self._volumes.move_to_end(name)
            return stored

    def summary(self) -> dict:
        with self._lock:
            return {"volumes": len(self._volumes),
                    "bytes": sum(v.bytes_present for v in self._volumes.values())}
