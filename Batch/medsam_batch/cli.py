"""The ``medsam-segment batch`` command, registered through the ``medsam_segment.commands`` entry points."""

from __future__ import annotations

import argparse
import sys

from MedSAMSegmentLib.cli import add_run_arguments
from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings, from_arguments

from .executors import add_executor_arguments, executor_from_arguments


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="CSV or JSON: image, boxes[, name, output, segment, per-case settings]")
    parser.add_argument("--out", required=True, help="folder for the masks, the records and summary.csv/.md")
    add_executor_arguments(parser)
    add_run_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_batch_command(args: argparse.Namespace) -> int:
    from MedSAMSegmentLib.cli import EXIT_OK, EXIT_RUNTIME

    from .batch import failed_line, run_batch
    from .jobs import BoxOptions

    executor = executor_from_arguments(args)
    log = (lambda message: None) if args.quiet else (lambda message: print(message, flush=True))
    report = run_batch(args.manifest, args.out, from_arguments(SegmentationSettings, args),
                       from_arguments(ModelSettings, args), BoxOptions(args.margin, args.line_margin, args.slice_axis),
                       executor, progress=not args.quiet, log=log, cache_dir=args.cache_dir)
    log(f"{report.count('done')} done, {report.count('skipped')} finished before, {report.count('failed')} failed "
        f"in {report.seconds:.1f} s; summary in {args.out}")
    if report.count("failed"):
        print(f"medsam-segment: {failed_line(report, args.out)}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def register_batch(subparsers) -> None:
    """Add ``batch`` to the ``medsam-segment`` command."""
    parser = subparsers.add_parser("batch", help="segment a cohort from a manifest of images and key boxes")
    add_batch_arguments(parser)
    parser.set_defaults(handler=run_batch_command)
