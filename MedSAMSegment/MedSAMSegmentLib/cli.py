"""The ``medsam-segment`` command: ``segment`` an image from key boxes, run the bundled ``demo``, and any
subcommands installed under the ``medsam_segment.commands`` entry points (``evaluate``, ``benchmark`` and
``finetune`` from ``medsam_evaluation``, ``batch``, ``serve``); the core never imports them. A subcommand whose
extra is not installed is listed as such, and running it says which extra to install (exit 2).

Exit status: 0 success, 2 bad usage or input (one line saying what and how to fix), 1 a runtime failure,
130 interrupted. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from typing import Dict, List, Optional

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(ValueError):
    """Bad command-line usage; exits with status 2."""


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="NIfTI, NRRD, MetaImage, DICOM folder, MedSAM .npz, or a 2D PNG/JPEG")
    parser.add_argument("--boxes", action="append", required=True, metavar="BOXES",
                        help="key boxes: box JSON or Slicer .mrk.json (ROI / line markups); repeat for more files")
    parser.add_argument("-o", "--output", required=True,
                        help="output mask: .nii.gz, .nii, .nrrd, .seg.nrrd (Slicer segmentation), .mha, .png "
                             "or .npz (MedSAM's format, the mask in 'segs')")
    add_run_arguments(parser)
    parser.add_argument("--corrected", metavar="MASK",
                        help="Refine from my edits: an earlier result of these boxes with slices the expert "
                             "corrected (same grid); the decoder is adapted to them and the other slices redone")
    parser.add_argument("--corrected-slices", type=int, nargs="+", metavar="N",
                        help="the corrected slices of --corrected (default: those that differ from this run)")
    parser.add_argument("--name", default="MedSAM", help="segment name in a .seg.nrrd output")
    parser.add_argument("--server", metavar="URL",
                        help="run on a MedSAM server (medsam-segment serve) at http://HOST:PORT instead of here; "
                             "the mask is the one a local run gives")
    parser.add_argument("--token-file", metavar="FILE", help="a file holding the server's bearer token")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every run from key-box files takes (``segment``, ``batch``): the segmentation settings, how
    box files become boxes, and the model settings."""
    from .settings import ModelSettings, SegmentationSettings, add_arguments  # light: no torch

    add_arguments(parser, SegmentationSettings)
    parser.add_argument("--margin", type=float, default=0.0, help="pixels added around every key box (default 0)")
    parser.add_argument("--line-margin", type=float, default=None,
                        help="pixels added around a line markup's extent (default 3)")
    parser.add_argument("--slice-axis", type=int, choices=(0, 1, 2),
                        help="numpy axis of the slices, when markups alone leave it ambiguous")
    parser.add_argument("--cache-dir", help="keep image embeddings here between runs")
    add_arguments(parser, ModelSettings)


class ProgressBar:
    """A tqdm bar fed by the engine's ``progress(done, total, message)`` callback, counting ``unit``s."""

    def __init__(self, enabled: bool, unit: str = "slice") -> None:
        self.enabled, self.unit = enabled, unit
        self.bar = None

    def __call__(self, done: int, total: int, message: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=message, unit=self.unit, file=sys.stderr, leave=True)
        self.bar.total = total
        self.bar.set_description(message)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_segment(args: argparse.Namespace) -> int:
    from . import io
    from .engine import EmbeddingCache, default_batch_size, one_shot_cache_bytes
    from .geometry import validate_key_boxes
    from .session import run_segmentation
    from .settings import ModelSettings, SegmentationSettings, from_arguments

    settings = from_arguments(SegmentationSettings, args)
    model_settings = from_arguments(ModelSettings, args)
    if not io._has_extension(args.output, io.MASK_EXTENSIONS):
        raise UsageError(f"output {args.output}: use one of {', '.join(io.MASK_EXTENSIONS)}")
    if args.corrected_slices and not args.corrected:
        raise UsageError("--corrected-slices needs --corrected MASK (the result with the corrected slices)")
    if args.token_file and not args.server:
        raise UsageError("--token-file is for --server URL; give both, or neither for a run here")
    if args.server and args.cache_dir:
        raise UsageError("--cache-dir keeps embeddings here; with --server the server keeps them: drop one")
    volume = io.read_image(args.image)
    corrected = None
    if args.corrected:
        corrected, _ = io.read_mask(args.corrected)
        if corrected.shape != volume.shape[:3]:
            raise UsageError(f"--corrected {args.corrected}: shape {corrected.shape} differs from the image's "
                             f"{volume.shape[:3]}; give a mask on the image's grid")
    key_boxes = io.read_key_boxes(args.boxes, volume, margin=args.margin, line_margin=args.line_margin,
                                  slice_axis=args.slice_axis)
    # Check (clip, swap, refuse) the boxes before the model loads: bad boxes fail fast, warnings print once.
    key_boxes = validate_key_boxes(key_boxes, volume.shape)
    if args.corrected_slices:
        check_corrected_slices(args.corrected_slices, volume.shape[key_boxes.slice_axis], key_boxes.slice_axis)
    if args.server:
        if volume.is_colour:
            raise UsageError(f"{args.image} is a colour image: run it here (drop --server); the server takes "
                             "greyscale volumes")
        return _segment_on_server(args, volume, key_boxes, settings, model_settings, corrected)
    cache = EmbeddingCache(args.cache_dir)  # an unusable folder is refused before the model loads
    started = time.perf_counter()
    from .models import load_from_settings
    model = load_from_settings(model_settings)
    say(args, f"model {args.model} on {model.device_description}" +
        (f"; using {model.acceleration}" if model.acceleration else ""))
    # One run, no edits after it: keep only the embeddings a chunk reads again (the disk cache keeps them all).
    batch_size = model_settings.batch_size or default_batch_size(model)
    cache.max_memory_bytes = one_shot_cache_bytes(batch_size)
    bar = ProgressBar(not args.quiet)
    try:
        if corrected is None:
            result = run_segmentation(model, volume.array, key_boxes, settings, cache=cache,
                                      batch_size=batch_size, is_colour=volume.is_colour, progress=bar)
        else:
            result = _refined(args, model, volume, key_boxes, settings, cache, batch_size, corrected, bar)
    finally:
        bar.close()
    _report(args, volume, key_boxes, result, started)
    return EXIT_OK


def _segment_on_server(args, volume, key_boxes, settings, model_settings, corrected) -> int:
    """``segment --server``: the same run on a MedSAM server (:mod:`remote_client`)."""
    import numpy as np

    from .geometry import take_slice
    from .remote.remote_client import RemoteSegmentation
    from .remote.server_connection import read_token
    from .service import ModelSpec

    started = time.perf_counter()
    remote = RemoteSegmentation(args.server, read_token(args.token_file) if args.token_file else None)
    health = remote.connection.health()
    if health.get("model") != model_settings.model:
        raise UsageError(f"the server at {remote.url} runs --model {health.get('model')}, not "
                         f"{model_settings.model}; give --model {health.get('model')} or another server")
    say(args, f"model {health.get('model')} on {health.get('device')} at {remote.url}")
    spec = ModelSpec(model_settings.model, model_settings.checkpoint, model_settings.device)
    remote.put_volume("image", volume.array)
    bar = ProgressBar(not args.quiet)
    try:
        outcome = remote.segment("image", key_boxes, spec, settings, progress=bar)
        if corrected is not None:
            axis = key_boxes.slice_axis
            slices = args.corrected_slices or [i for i in range(corrected.shape[axis]) if not np.array_equal(
                take_slice(corrected, axis, i), take_slice(outcome.result.mask, axis, i))]
            say(args, f"corrected slices in {args.corrected}: {' '.join(map(str, slices)) or 'none'}")
            outcome = remote.segment("image", key_boxes, spec, settings, progress=bar,
                                     corrected={i: take_slice(corrected, axis, i) for i in slices})
            say(args, outcome.note)
    finally:
        bar.close()
        remote.close()
    say(args, f"sent {remote.connection.bytes_sent} bytes for a volume of {volume.array.nbytes} bytes")
    _report(args, volume, key_boxes, outcome.result, started)
    return EXIT_OK


def _report(args, volume, key_boxes, result, started: float) -> None:
    """Write the mask, then say what was done."""
    from . import io

    io.write_mask(args.output, result.mask, volume, segment_name=args.name)
    args.wrote = args.output
    first, last = result.slice_range
    say(args, f"segmented slices {first}-{last} along axis {result.slice_axis} from {len(key_boxes.boxes)} key "
              f"box(es): {int(result.mask.sum())} voxels, {result.encoded} slices encoded, "
              f"{time.perf_counter() - started:.1f} s")
    ious = " ".join(f"{s}:{result.iou[s]:.2f}" for s in result.slices if s not in result.filled)
    say(args, f"predicted IoU per slice: {ious}")
    if result.filled:
        say(args, f"filled between their neighbours (--slices every reads them): {len(result.filled)} slices, "
                  f"{' '.join(str(s) for s in result.filled)}")
    for s, reason in result.flagged:
        say(args, f"review slice {s}: {reason}")
    say(args, f"wrote {args.output}")


def check_corrected_slices(slices: List[int], n_slices: int, axis: int) -> None:
    """Refuse ``--corrected-slices`` before the model loads (UsageError, one line): every slice must lie on the
    image, and the refinement needs at least ``MIN_CORRECTED`` of them (each is held out in turn)."""
    from .learning.refinement import MIN_CORRECTED

    outside = [i for i in slices if not 0 <= i < n_slices]
    if outside:
        raise UsageError(f"--corrected-slices {outside[0]}: the slices along axis {axis} are 0-{n_slices - 1}")
    if len(set(slices)) < MIN_CORRECTED:
        raise UsageError(f"--corrected-slices: {len(set(slices))} slice given; correct at least {MIN_CORRECTED} "
                         "slices (each is held out in turn to check the refinement)")


def _refined(args, model, volume, key_boxes, settings, cache, batch_size, corrected, progress):
    """The run of ``key_boxes``, refined from the expert's slices of ``corrected`` (Refine from my edits)."""
    import numpy as np

    from .geometry import take_slice
    from .predictor import VolumePredictor

    cache.max_memory_bytes = max(cache.max_memory_bytes, 1 << 30)  # the refinement reads the embeddings again
    predictor = VolumePredictor(model, volume.array, key_boxes.slice_axis, settings, cache, batch_size,
                                volume.is_colour)
    result = predictor.predict(key_boxes, progress)
    axis = key_boxes.slice_axis
    slices = args.corrected_slices or [i for i in range(corrected.shape[axis]) if not np.array_equal(
        take_slice(corrected, axis, i), take_slice(result.mask, axis, i))]
    say(args, f"corrected slices in {args.corrected}: {' '.join(map(str, slices)) or 'none'}")
    refinement = predictor.refine({i: take_slice(corrected, axis, i) for i in slices}, progress=progress)
    say(args, refinement.message)
    return refinement.result


def say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, flush=True)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output-dir", default="demo_output", help="where to write the demo's files")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--quiet", action="store_true")


def run_demo(args: argparse.Namespace) -> int:
    from . import demo

    demo.run_demo(args.output_dir, device=args.device, verbose=not args.quiet)
    return EXIT_OK


def build_parser(missing: Optional[Dict[str, str]] = None) -> argparse.ArgumentParser:
    """The command's parser. ``missing``, when given, receives the optional commands that could not be loaded:
    {name: the one line naming the extra that brings it}."""
    parser = argparse.ArgumentParser(
        prog="medsam-segment",
        description="Key boxes every few slices -> a 3D segmentation with MedSAM (LiteMedSAM bundled).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    segment = sub.add_parser("segment", help="segment an image from key boxes")
    add_segment_arguments(segment)
    segment.set_defaults(handler=run_segment)
    demo = sub.add_parser("demo", help="segment the bundled CT lesion and write a picture and the DSC")
    add_demo_arguments(demo)
    demo.set_defaults(handler=run_demo)
    skipped = _add_optional_commands(sub)
    if missing is not None:
        missing.update(skipped)
    return parser


def _add_optional_commands(sub: argparse._SubParsersAction) -> Dict[str, str]:
    """Add the subcommands other installed packages register under the entry point group
    ``medsam_segment.commands`` (``evaluate``, ``benchmark``, ``finetune``, ``batch``, ``serve``). One whose import
    fails, when it is loaded or when it registers (its extra is not installed), is listed with the line naming
    that extra instead; returns those {name: line}."""
    from importlib.metadata import entry_points

    from .extras import missing_line, needed

    skipped, seen = {}, set()
    for entry_point in entry_points(group="medsam_segment.commands"):
        if entry_point.name in seen:  # the same distribution found twice on the path
            continue
        seen.add(entry_point.name)
        try:
            entry_point.load()(sub)
        except ImportError as exc:
            dist = getattr(entry_point, "dist", None)
            skipped[entry_point.name] = missing_line(entry_point.name, exc, dist=dist)
            if entry_point.name not in sub.choices:
                sub.add_parser(entry_point.name, help=f"(not installed) {needed(exc, dist=dist)}", add_help=False)
    return skipped


def _command_word(argv: List[str]) -> Optional[str]:
    """The subcommand ``argv`` names (its first word that is not an option; the command's own options take no
    value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _input_error_types() -> tuple:
    from .engine import CacheDirectoryError
    from .geometry import GeometryError
    from .intensity import IntensityError
    from .io import InputError
    from .learning.decoder_training import NotTrainableError
    from .learning.finetune import FinetuneError
    from .learning.refinement import RefinementError
    from .models import CheckpointError
    from .remote.server_connection import ServerInputError
    from .settings import SettingsError

    return (UsageError, InputError, GeometryError, IntensityError, CheckpointError, SettingsError, CacheDirectoryError,
            RefinementError, FinetuneError, NotTrainableError, ServerInputError)


def main(argv: Optional[List[str]] = None) -> int:
    missing: Dict[str, str] = {}
    parser = build_parser(missing)
    command = _command_word(sys.argv[1:] if argv is None else argv)
    if command in missing:
        print(f"medsam-segment: error: {missing[command]}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            return int(args.handler(args) or 0)
        except KeyboardInterrupt:
            wrote = getattr(args, "wrote", None)
            done = f"{wrote} was written completely before" if wrote else "no output was written"
            print(f"medsam-segment: interrupted; {done}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:
            if args.debug:
                raise
            from .models import DependencyError, ModelError
            from .remote.server_connection import ServerError

            if isinstance(exc, _input_error_types()):
                print(f"medsam-segment: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            if isinstance(exc, (ModelError, DependencyError, ServerError)):
                print(f"medsam-segment: error: {exc}", file=sys.stderr)
                return EXIT_RUNTIME
            print(f"medsam-segment: failed: {type(exc).__name__}: {exc} (run with --debug for details)",
                  file=sys.stderr)
            return EXIT_RUNTIME


def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
    if category.__name__ in ("BoxWarning", "UserWarning", "ResourceWarning"):  # ResourceWarning: out of memory
        print(f"medsam-segment: warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
