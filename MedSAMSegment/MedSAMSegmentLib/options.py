"""Command-line options shared by ``segment``, ``evaluate`` and ``benchmark``: the accuracy options of
:class:`pipeline.SegmentationSettings` and the encoder's numeric path.

One definition, so that ``evaluate`` measures exactly the choices a user has in ``segment`` (issue 7 asks that
every accuracy direction be an engine option whose default is chosen by the evaluation).
"""

from __future__ import annotations

import argparse
from typing import Dict

from .engine import GUIDES, REFINES, RETRIES, ZOOMS
from .intensity import MR_RULES
from .pipeline import PUBLISHED, SegmentationSettings

ACCURACY_OPTIONS = ("mr_rule", "zoom", "guide", "refine", "retry")


def add_accuracy_arguments(parser: argparse.ArgumentParser, with_preset: bool = False) -> None:
    """``--mr-rule --zoom --guide --refine --retry`` with the defaults of :class:`SegmentationSettings`."""
    defaults = SegmentationSettings()
    parser.add_argument("--mr-rule", choices=MR_RULES, default=defaults.mr_rule,
                        help="MR percentiles over voxels above the minimum when it is negative (auto), or above zero "
                             f"(published); default {defaults.mr_rule}")
    parser.add_argument("--zoom", choices=ZOOMS, default=defaults.zoom,
                        help=f"crop around small boxes (docs/accuracy.md); default {defaults.zoom}")
    parser.add_argument("--guide", choices=GUIDES, default=defaults.guide,
                        help=f"boxes between key slices from the neighbouring masks; default {defaults.guide}")
    parser.add_argument("--refine", choices=REFINES, default=defaults.refine,
                        help=f"clip masks to their boxes and fill holes; default {defaults.refine}")
    parser.add_argument("--retry", choices=RETRIES, default=defaults.retry,
                        help="decode slices with a low predicted IoU again with the other view; "
                             f"default {defaults.retry}")
    if with_preset:
        parser.add_argument("--published", action="store_true",
                            help="MedSAM's published behaviour: " +
                                 ", ".join(f"{k}={v}" for k, v in PUBLISHED.items()) + " (overrides the above)")


def accuracy_settings(args: argparse.Namespace) -> Dict[str, str]:
    """The accuracy options chosen on the command line, as keyword arguments of :class:`SegmentationSettings`."""
    if getattr(args, "published", False):
        return dict(PUBLISHED)
    return {name: getattr(args, name) for name in ACCURACY_OPTIONS}


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--backend`` of LiteMedSAM's image encoder (:mod:`acceleration`)."""
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="LiteMedSAM encoder arithmetic (auto: fp32; bf16 is faster on AMX CPUs, masks differ "
                             "slightly)")
    parser.add_argument("--backend", choices=("auto", "torch", "openvino"), default="auto",
                        help="LiteMedSAM encoder runtime on CPUs (auto: OpenVINO when installed)")
