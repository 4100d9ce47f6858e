"""The MedSAM Segment module page's parameter node (its choices, saved with the scene) and its menus."""

from MedSAMSegmentLib.settings import PUBLISHED, SegmentationSettings
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper

_DEFAULTS = SegmentationSettings()


def _lower_camel(name: str) -> str:
    """``mr_rule`` -> ``mrRule``: a setting's name in the .ui file's widget names."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


@parameterNodeWrapper
class MedSAMSegmentParameterNode:
    """The module page's choices, kept in the scene (saved with it)."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segmentName: str = "MedSAM"
    strategy: str = "interpolate"
    intensity: str = "auto"
    model: str = "lite"
    checkpoint: str = ""
    device: str = "auto"
    mr_rule: str = _DEFAULTS.mr_rule
    zoom: str = _DEFAULTS.zoom
    guide: str = _DEFAULTS.guide
    refine: str = _DEFAULTS.refine
    retry: str = _DEFAULTS.retry
    slices: str = _DEFAULTS.slices
    box_sizes: str = _DEFAULTS.box_sizes


def choiceCombos(ui):
    """``(combo box, parameter node attribute, value -> text)`` for every menu on the page ``ui``."""
    from MedSAMSegmentLib.scene import effect_settings

    return [
        (ui.strategyComboBox, "strategy", effect_settings.STRATEGY_CHOICES),
        (ui.intensityComboBox, "intensity", effect_settings.INTENSITY_CHOICES),
        (ui.modelComboBox, "model", effect_settings.MODEL_CHOICES),
        (ui.deviceComboBox, "device", effect_settings.LOCAL_DEVICE_CHOICES),
    ] + [  # the accuracy options: mr_rule -> mrRuleComboBox, zoom -> zoomComboBox, ...
        (getattr(ui, _lower_camel(name) + "ComboBox"), name, effect_settings.accuracy_menu(name)) for name in PUBLISHED
    ]
