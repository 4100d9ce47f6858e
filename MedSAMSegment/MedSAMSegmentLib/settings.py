"""Every choice a user makes besides the boxes, with its one default, validated in one place.

Two frozen dataclasses: :class:`SegmentationSettings` (what to segment how) and :class:`ModelSettings` (which model
on which device). Their fields carry the choices, the command-line help and, for the accuracy options, MedSAM's
published value. Everything else derives from them: the command line's options (:func:`add_arguments`), the Slicer
effect's choices (:func:`choices_of`), :data:`PUBLISHED` and the evaluation's configurations. The engine takes a
:class:`SegmentationSettings` and has no defaults of its own.

This module imports only the standard library (Slicer imports it at start-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

STRATEGIES = ("interpolate", "propagate")
MODALITIES = ("auto", "CT", "MR", "none")
MR_RULES = ("auto", "published")
ZOOMS = ("off", "auto", "best", "union", "size")
GUIDES = ("off", "mean", "union", "mask", "auto")
REFINES = ("off", "box")
RETRIES = ("off", "zoom")
SLICE_READS = ("auto", "every", "alternate")
BOX_SIZES = ("linear", "rounded")
MODEL_NAMES = ("lite", "vit_b")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("auto", "torch", "openvino")


class SettingsError(ValueError):
    """A setting outside its choices or range; the message names the option and its valid values."""


def option(default: Any, help: str, choices: Optional[Tuple[str, ...]] = None, published: Any = None,
           flag: Optional[str] = None, added_later: bool = False, **argparse_extra: Any) -> Any:
    """A settings field: its default, its help, its choices (checked at construction), its published value, its
    flag (default ``--name-with-dashes``) and extra :meth:`argparse.ArgumentParser.add_argument` keywords; the
    command line is made from it by :func:`add_arguments`. ``added_later`` marks an option added after records
    were kept: those runs had its published value, so a records digest leaves it out while it has that value
    (``medsam_evaluation.resumable.settings_digest``)."""
    metadata = {"help": help, "choices": choices, "argparse": argparse_extra}
    if published is not None:
        metadata["published"] = published
        metadata["added_later"] = added_later
    if flag is not None:
        metadata["flag"] = flag
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SegmentationSettings:
    """What to segment how. The accuracy options (``mr_rule``, ``zoom``, ``guide``, ``refine``, ``retry``,
    ``slices``, ``box_sizes``) default to MedSAM's published behaviour (:data:`PUBLISHED`) unless a departure
    passes the rule of ``medsam_evaluation.default_rule`` on the development set (docs/accuracy.md); today only
    ``box_sizes``'s ``rounded`` does.

    Raises :class:`SettingsError` at construction for a value outside its choices or range.
    """

    strategy: str = option("interpolate", "interpolate boxes between key slices, or propagate masks outwards from "
                            "each key box", STRATEGIES)
    modality: str = option("auto", "intensity normalisation (auto guesses from the values)", MODALITIES)
    window: Optional[Tuple[float, float]] = option(None, "CT window (default level 40, width 400)", nargs=2,
                                                    type=float, metavar=("LEVEL", "WIDTH"))
    propagate_margin: float = option(3.0, "pixels added around a mask's bounding box when propagating to the next "
                                      "slice", type=float)
    mr_rule: str = option("published", "MR percentiles over voxels above zero (published), or above the minimum "
                           "when it is negative (auto)", MR_RULES, published="published")
    zoom: str = option("off", "crop around small boxes (docs/accuracy.md); size: union for a target small on "
                       "every key box, best for a large one", ZOOMS, published="off")
    guide: str = option("off", "boxes between key slices from the neighbouring masks", GUIDES, published="off")
    refine: str = option("off", "clip masks to their boxes and fill holes", REFINES, published="off")
    retry: str = option("off", "decode slices with a low predicted IoU again with the other view", RETRIES,
                         published="off")
    slices: str = option("every", "the model reads every slice between the first and last key box, or (alternate, "
                          "interpolate only) every second one in targets of 10 or more slices, the others filled "
                          "from their neighbours' masks: about a third fewer encodings (docs/speed.md); auto: "
                          "alternate when interpolating, every when propagating", SLICE_READS, published="every")

    box_sizes: str = option("rounded", "box sizes between key slices: linear, or rounded (centres linear, squared "
                             "half-sizes linear: sizes change fast near the smaller key box, as a rounded target's "
                             "do towards its ends)", BOX_SIZES, published="linear",
                             added_later=True)

    def __post_init__(self) -> None:
        _check_choices(self)
        if self.window is not None:
            shown = " ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in self.window)
            try:
                window = tuple(float(v) for v in self.window)
            except (TypeError, ValueError):
                window = ()
            if len(window) != 2 or not all(math.isfinite(v) for v in window) or window[1] <= 0:
                raise SettingsError(f"--window {shown}: give a level and a positive width, e.g. 40 400")
            object.__setattr__(self, "window", window)
        if not (math.isfinite(self.propagate_margin) and self.propagate_margin >= 0):
            raise SettingsError(f"--propagate-margin {self.propagate_margin!r}: give 0 or more pixels")
        if self.slices == "alternate" and self.strategy != "interpolate":
            raise SettingsError(f"--slices alternate works with --strategy interpolate; use --slices every with "
                                f"--strategy {self.strategy}")

    @property
    def reads_alternate(self) -> bool:
        """Whether the model reads only every second slice of long targets (``alternate``, or ``auto`` with the
        ``interpolate`` strategy)."""
        return self.slices == "alternate" or (self.slices == "auto" and self.strategy == "interpolate")

    @property
    def is_published(self) -> bool:
        """Whether every accuracy option has MedSAM's published value."""
        return all(getattr(self, name) == value for name, value in PUBLISHED.items())

    def with_strategy(self, strategy: str) -> SegmentationSettings:
        """These settings with ``strategy``; ``slices`` ``alternate`` becomes ``every`` for a strategy that reads every
        slice it walks (``propagate``), so that one set of options can run both strategies (the evaluation does)."""
        slices = "every" if self.slices == "alternate" and strategy != "interpolate" else self.slices
        return dataclasses.replace(self, strategy=strategy, slices=slices)

    def accuracy(self) -> Dict[str, str]:
        """The accuracy options, by name (the keys of :data:`PUBLISHED`)."""
        return {name: getattr(self, name) for name in PUBLISHED}


@dataclass(frozen=True)
class ModelSettings:
    """Which model runs where. ``batch_size`` ``None`` lets the engine choose from the device's free memory.

    Raises :class:`SettingsError` at construction for a value outside its choices, or ViT-B without a checkpoint.
    """

    model: str = option("lite", "lite: bundled LiteMedSAM; vit_b: MedSAM ViT-B (needs --checkpoint)", MODEL_NAMES)
    checkpoint: Optional[str] = option(None, "model weights: medsam_vit_b.pth for vit_b (required); for lite a "
                                        "LiteMedSAM checkpoint such as one 'finetune' wrote (default: the bundled "
                                        "weights)")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = option("auto", "LiteMedSAM encoder arithmetic (auto: fp32; bf16 is faster on AMX CPUs, masks "
                             "differ slightly)", PRECISIONS)
    backend: str = option("auto", "LiteMedSAM encoder runtime on CPUs (auto: OpenVINO when installed)", BACKENDS)
    batch_size: Optional[int] = option(None, "slices per encoder batch (default: chosen from memory)", type=int)

    def __post_init__(self) -> None:
        _check_choices(self)
        if self.model == "vit_b" and not self.checkpoint:
            raise SettingsError("--model vit_b needs --checkpoint medsam_vit_b.pth")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or int(self.batch_size) < 1
                                            or int(self.batch_size) != self.batch_size):
            raise SettingsError(f"--batch-size {self.batch_size}: give a whole number of slices, 1 or more")
        if not isinstance(self.device, str) or not self.device:
            raise SettingsError(f"--device {self.device!r}: use auto, cpu, cuda, cuda:N or mps")


#: MedSAM's published behaviour: its intensity recipe, whole slices, interpolated boxes, raw masks.
PUBLISHED: Dict[str, str] = {f.name: f.metadata["published"] for f in dataclasses.fields(SegmentationSettings)
                             if "published" in f.metadata}

Settings = TypeVar("Settings", SegmentationSettings, ModelSettings)


def _check_choices(settings: Any) -> None:
    for f in dataclasses.fields(settings):
        choices = f.metadata.get("choices")
        value = getattr(settings, f.name)
        if choices and value not in choices:
            raise SettingsError(f"{flag_of(f)} {value!r}: use one of {', '.join(choices)}")


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a settings field (``zoom`` -> ``--zoom``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def choices_of(cls: Type[Settings], name: str) -> Tuple[str, ...]:
    """The choices of one field (e.g. ``choices_of(SegmentationSettings, "zoom")``), for menus."""
    for f in dataclasses.fields(cls):
        if f.name == name and f.metadata.get("choices"):
            return tuple(f.metadata["choices"])
    raise KeyError(f"{cls.__name__} has no field {name!r} with choices")


def add_arguments(parser: argparse.ArgumentParser, cls: Type[Settings], exclude: Tuple[str, ...] = (),
                  with_published: bool = False) -> None:
    """One option per field of ``cls`` (but ``exclude``), with the field's choices, default and help.

    ``with_published`` adds ``--published``, which sets every accuracy option to :data:`PUBLISHED`.
    """
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        extra = dict(f.metadata["argparse"])
        help_text = f.metadata["help"] + ("" if f.default is None else f"; default {f.default}")
        parser.add_argument(flag_of(f), dest=f.name, default=f.default, choices=f.metadata["choices"],
                            help=help_text, **extra)
    if with_published:
        parser.add_argument("--published", action="store_true",
                            help="MedSAM's published behaviour: " +
                                 ", ".join(f"{k}={v}" for k, v in PUBLISHED.items()) + " (overrides the above)")


def from_arguments(cls: Type[Settings], args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings chosen on a command line built with :func:`add_arguments` (absent options keep defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    if cls is SegmentationSettings and getattr(args, "published", False):
        values.update(PUBLISHED)
    values.update(overrides)
    return cls(**values)
