"""MedSAM Segment's Python API: key boxes every few slices -> a 3D segmentation.

    from MedSAMSegmentLib import SegmentationSettings, VolumePredictor, load_model, read_image, read_key_boxes
    image = read_image("ct.nii.gz")
    predictor = VolumePredictor(load_model("lite"), image.array, 0, SegmentationSettings())
    result = predictor.predict(read_key_boxes(["boxes.json"], image))

Names are imported on first use, so importing the package loads nothing heavy (Slicer imports it at start-up).
"""

from importlib import import_module

#: Public name -> the module that defines it.
_EXPORTS = {
    "VolumePredictor": "predictor",
    "SegmentationSession": "session",
    "SegmentationSettings": "settings",
    "ModelSettings": "settings",
    "SettingsError": "settings",
    "PUBLISHED": "settings",
    "run_segmentation": "session",
    "load_model": "models",
    "RefineSettings": "learning.refinement",
    "RefinementError": "learning.refinement",
    "SegmentationResult": "engine",
    "EmbeddingCache": "engine",
    "Cancelled": "engine",
    "KeyBox": "geometry",
    "KeyBoxSet": "geometry",
    "read_image": "io",
    "read_key_boxes": "io",
    "write_mask": "io",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
