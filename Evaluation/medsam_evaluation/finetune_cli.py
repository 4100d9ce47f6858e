"""``medsam-segment finetune``: its options and handler (found through the entry point group
``medsam_segment.commands``; see :mod:`.cli`)."""

from __future__ import annotations

import argparse
import os

from MedSAMSegmentLib.learning.finetune import (
    FinetuneError,
    FinetuneSettings,
    fine_tune,
    save_fine_tuned,
    split_for_validation,
)
from MedSAMSegmentLib.settings import ModelSettings, add_arguments, from_arguments

from .cli import _logger


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", required=True,
                        help="cases.json of revised cases: image, label (the expert's mask), modality, slice axis")
    parser.add_argument("--out", required=True, help="the fine-tuned checkpoint to write (.pth)")
    parser.add_argument("--case", dest="case_filter", action="append",
                        help="only cases whose name matches (glob or substring); repeat for more")
    parser.add_argument("--plot", help="the loss curve's picture (default: OUT with .loss.png)")
    add_arguments(parser, FinetuneSettings)
    # The base is LiteMedSAM: the bundled weights, or a LiteMedSAM checkpoint to fine-tune further.
    add_arguments(parser, ModelSettings, exclude=("model", "batch_size"))
    parser.add_argument("--quiet", action="store_true")


def run_finetune(args: argparse.Namespace) -> int:
    from MedSAMSegmentLib.cli import ProgressBar
    from MedSAMSegmentLib.io import InputError

    from .cases import load_cases
    from .cohort import cohort_examples, provenance
    from .plots import plot_fine_tune_curve
    from .provenance import command_line

    settings = from_arguments(FinetuneSettings, args)
    model_settings = from_arguments(ModelSettings, args, model="lite")
    if not args.out.endswith(".pth"):
        raise FinetuneError(f"--out {args.out}: name the checkpoint with .pth (e.g. decoder.pth)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FinetuneError(f"--out {args.out}: its folder does not exist; create it or choose another")
    try:
        cases = load_cases(args.cases, args.case_filter)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"--cases {args.cases}: {exc}; give a cases.json list of name, image and label") from exc
    log = _logger(args.quiet)
    from MedSAMSegmentLib.models import load_from_settings
    model = load_from_settings(model_settings)
    log(f"fine-tuning LiteMedSAM's decoder head on {len(cases)} case(s); using {model.acceleration}")
    bar = ProgressBar(not args.quiet, unit="case")
    try:
        examples = cohort_examples(cases, model, settings, log=log, progress=bar)
    finally:
        bar.close()
    train, validation, held_out = split_for_validation(examples, settings)
    bar = ProgressBar(not args.quiet, unit="step")
    try:
        result = fine_tune(model, train, validation, settings, progress=bar)
    finally:
        bar.close()
    save_fine_tuned(args.out, model, result.head,
                    provenance(cases, model, settings, result, held_out, command_line("finetune")))
    plot = args.plot or args.out[: -len(".pth")] + ".loss.png"
    plot_fine_tune_curve(result, plot)
    verdict = "" if result.improved else f"; it did NOT improve on the {held_out}: keep using the bundled model"
    log(f"{held_out}: mean slice DSC {result.base_validation_dice:.3f} with the bundled decoder, "
        f"{result.validation_dice:.3f} fine-tuned (epoch {result.best_epoch} of {settings.epochs}, "
        f"{result.seconds:.0f} s){verdict}")
    log(f"wrote {args.out} (use it with --checkpoint, in Slicer under Checkpoint, or in batch) and {plot}")
    log("before using it, compare it with the bundled model on revised cases it was not trained on (evaluate "
        "--checkpoint); on the development set no fine-tune helped new cases (docs/accuracy.md)")
    return 0


def register_finetune(subparsers) -> None:
    """Add ``finetune`` to the ``medsam-segment`` command."""
    parser = subparsers.add_parser("finetune", help="fine-tune LiteMedSAM's mask decoder on revised cases (cached "
                                                    "embeddings, CPU-feasible); writes a checkpoint")
    add_finetune_arguments(parser)
    parser.set_defaults(handler=run_finetune)
