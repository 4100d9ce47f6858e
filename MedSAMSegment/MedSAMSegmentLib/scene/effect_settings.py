"""The choices the Slicer effect and module offer (intensity, strategy, model, device, the accuracy options) and
:class:`EffectSettings`, the user's choices besides the boxes, turned into the command line's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .. import intensity
from ..io.markup_boxes import DEFAULT_LINE_MARGIN
from ..remote.server_address import SERVER_DEVICE
from ..service import ModelSpec
from ..settings import PUBLISHED, ModelSettings, SegmentationSettings

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
    "box_sizes": ("Box sizes between key slices", {
        "linear": "Linear",
        "rounded": "Rounded (fast near the smaller key box)",
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
    box_sizes: str = _DEFAULTS.box_sizes
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
