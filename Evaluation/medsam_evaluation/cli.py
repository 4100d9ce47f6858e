"""``medsam-segment evaluate`` and ``medsam-segment benchmark``: their options and handlers.

The core's command finds :func:`register_evaluate` and :func:`register_benchmark` through the entry point group
``medsam_segment.commands`` (pyproject.toml); the core never imports this package. The model, device and accuracy
options come from the core's settings (:mod:`MedSAMSegmentLib.settings`), defined once there.
"""

from __future__ import annotations

import argparse
import dataclasses

from medsam_batch.executors import add_executor_arguments, executor_from_arguments
from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings, SettingsError, add_arguments, from_arguments

from .benchmark import CONFIGS, DEFAULT_CASE, DEFAULT_CONFIGS
from .cases import SHARED_DATA_VARIABLE
from .config import DEFAULT_SPACINGS, RECIPE_MODES
from .interactive import INTERVALS
from .methods import METHODS
from .resumable import PieceSettings
from .simulate import DEFAULT_MARGIN

#: The evaluation's own choice of modality per case, and its fixed strategy per method.
EVALUATE_EXCLUDES = ("strategy", "modality", "window", "propagate_margin")


def _logger(quiet: bool):
    return (lambda message: None) if quiet else (lambda message: print(message, flush=True))


# ---------------------------------------------------------------------------------------------------------
# evaluate


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", required=True, help="cases.json (format of shared/data/cases.json)")
    parser.add_argument("--spacing", type=int, nargs="+", default=list(DEFAULT_SPACINGS),
                        help="key-slice spacings N (default 3 5 10)")
    parser.add_argument("--strategy", "--method", dest="methods", nargs="+", choices=METHODS, default=list(METHODS),
                        metavar="METHOD", help=f"methods to run (default all): {', '.join(METHODS)}")
    parser.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="pixels the annotator adds around the mask box (default 3)")
    parser.add_argument("--jitter", type=float, default=0, help="random extra pixels per box side, 0..PX (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    parser.add_argument("--case", dest="case_filter", action="append",
                        help="only cases whose name matches (glob or substring); repeat for more")
    parser.add_argument("--recipe", choices=RECIPE_MODES, default="shared",
                        help="published recipe: shared (reuse our embeddings when numerically the same; default), "
                             "full (encode every slice every run: slow), skip")
    parser.add_argument("--corrections", type=int, nargs="+", default=[], metavar="K",
                        help="also the corrections protocol: after each interpolating run the annotator replaces the "
                             "K worst slices by the reference and Refine from my edits runs; writes corrections.csv "
                             "and corrections.md (e.g. --corrections 1 2 3)")
    add_arguments(parser, ModelSettings)
    add_executor_arguments(parser)
    add_arguments(parser, SegmentationSettings, exclude=EVALUATE_EXCLUDES, with_published=True)
    add_arguments(parser, PieceSettings)
    parser.add_argument("--quiet", action="store_true")


def evaluation_config(args: argparse.Namespace):
    """The :class:`config.EvaluationConfig` of an ``evaluate`` command line."""
    from .config import EvaluationConfig
    from .provenance import command_line

    return EvaluationConfig(
        cases_json=args.cases, spacings=tuple(args.spacing), methods=tuple(args.methods), out_dir=args.out,
        margin=args.margin, jitter=args.jitter, seed=args.seed, case_filter=args.case_filter, recipe=args.recipe,
        segmentation=from_arguments(SegmentationSettings, args), model=from_arguments(ModelSettings, args),
        executor=executor_from_arguments(args), command=command_line("evaluate"), corrections=tuple(args.corrections),
        piece=from_arguments(PieceSettings, args),
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from .study import evaluate

    config = evaluation_config(args)  # validated before any case loads
    report = evaluate(config, log=_logger(args.quiet))
    if report.cases_left and args.quiet:  # the one line --quiet keeps: the run is not complete
        print(f"{report.cases_left} case(s) left: run the same command again to go on")
    return 0


def register_evaluate(subparsers) -> None:
    """Add ``evaluate`` to the ``medsam-segment`` command."""
    parser = subparsers.add_parser("evaluate", help="simulate an annotator on cases with reference masks; compare "
                                                    "with the baselines (results.csv, results.md, plots)")
    add_evaluate_arguments(parser)
    parser.set_defaults(handler=run_evaluate)


# ---------------------------------------------------------------------------------------------------------
# benchmark


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="write benchmark.json and benchmark.md here")
    parser.add_argument("--cases", help=f"cases.json holding the target case (default: cases.json in "
                                        f"${SHARED_DATA_VARIABLE}, else ../shared/data/ from the current folder, "
                                        "else the bundled demo lesion)")
    parser.add_argument("--case", help=f"case name (default {DEFAULT_CASE}; interactive: every case)")
    parser.add_argument("--config", nargs="+", choices=CONFIGS, default=list(DEFAULT_CONFIGS),
                        help=f"what to time (default {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--interval", type=float, nargs="+", default=list(INTERVALS), metavar="S",
                        help="interactive: the annotator's seconds per key box (default "
                             f"{' '.join(f'{i:g}' for i in INTERVALS)})")
    add_arguments(parser, SegmentationSettings,
                  exclude=tuple(f.name for f in dataclasses.fields(SegmentationSettings) if f.name != "slices"))
    parser.add_argument("--no-recipe", dest="with_recipe", action="store_false",
                        help="interactive: do not time the published recipe on each case (it is the same whatever "
                             "--slices and --interval are)")
    # The model is LiteMedSAM (the published recipe is its); the benchmark runs on the CPU unless told otherwise.
    add_arguments(parser, ModelSettings, exclude=("model", "checkpoint"))
    _set_default(parser, "device", "cpu")
    parser.add_argument("--quiet", action="store_true")


def _set_default(parser: argparse.ArgumentParser, dest: str, value: str) -> None:
    """Another default for an option made by :func:`add_arguments`, its help saying so."""
    parser.set_defaults(**{dest: value})
    for action in parser._actions:
        if action.dest == dest and action.help:
            action.help = action.help.rsplit("; default ", 1)[0] + f"; default {value}"


def run_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import benchmark

    model = from_arguments(ModelSettings, args)
    if any(interval <= 0 for interval in args.interval):
        raise SettingsError("--interval: seconds per key box must be above 0")
    benchmark(args.out, args.cases, args.case, args.config, model, log=_logger(args.quiet), intervals=args.interval,
              slices=args.slices, with_recipe=args.with_recipe)
    return 0


def register_benchmark(subparsers) -> None:
    """Add ``benchmark`` to the ``medsam-segment`` command."""
    parser = subparsers.add_parser("benchmark", help="time our engine against the published per-slice recipe")
    add_benchmark_arguments(parser)
    parser.set_defaults(handler=run_benchmark)
