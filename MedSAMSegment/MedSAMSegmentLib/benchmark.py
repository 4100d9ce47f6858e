"""``medsam-segment benchmark``: our engine against the published per-slice LiteMedSAM recipe, on one machine.

Each configuration runs in its own Python process (so that its peak resident memory, ``ru_maxrss``, is its
own) on the same 40-slice target: key boxes every 5 slices from the reference mask (+3 px), boxes interpolated.

Measured per configuration:

* ``end_to_end_s``: model load + image read + normalisation + segmentation of the 40 slices, in process;
  ``process_s``: the same seen from outside (adds Python and torch start-up);
* ``encoder_ms`` / ``decoder_ms``: median milliseconds per slice over the run's slices (engine: per batch time /
  batch size, after a warm-up batch; recipe: each slice on its own, as it runs);
* ``move_box_s``: re-segmenting after one key box moved (engine: cached embeddings, only the slices whose
  interpolated box changed are decoded; recipe: it has no cache, so the whole run again);
* ``peak_rss_mib``: peak resident memory of the process;
* torch threads and the batch size.

Data: ``--cases CASES.json --case NAME`` (default: the shared development set's ``brats_pat0001_whole_tumor``,
whose target spans 74 slices: the first 40 are used), else the bundled demo CT lesion stacked to 40 slices.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np

N_SLICES = 40
KEY_SPACING = 5
DEFAULT_CASE = "brats_pat0001_whole_tumor"
CONFIGS = ("engine", "recipe")


# ---------------------------------------------------------------------------------------------------------
# The target


def _default_cases_json() -> Optional[str]:
    candidates = [os.environ.get("MEDSAM_SHARED_DATA", "")]
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, "..", "..", "..", "shared", "data"))
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "cases.json")):
            return os.path.normpath(os.path.join(folder, "cases.json"))
    return None


def load_target(cases_json: Optional[str], case_name: str, n_slices: int = N_SLICES):
    """``(array, reference mask, slice_axis, modality setting, description)`` with a target of ``n_slices``."""
    from . import io
    from .evaluation import load_cases, modality_setting
    from .geometry import put_slice, take_slice
    from .simulate import target_slices

    if cases_json:
        matches = [c for c in load_cases(cases_json) if c.name == case_name]
        if not matches:
            raise io.InputError(f"case {case_name!r} is not in {cases_json}")
        case = matches[0]
        volume = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        axis = case.slice_axis
        present = target_slices(reference, axis)
        keep = present[:n_slices]
        trimmed = np.zeros_like(reference)
        for s in keep:
            put_slice(trimmed, axis, int(s), take_slice(reference, axis, int(s)))
        described = f"{case.name} ({len(keep)} target slices of {volume.shape[axis]}, slices {volume.shape})"
        return volume.array, trimmed, axis, modality_setting(case, volume.array), described
    from .demo import DEMO_IMAGE

    volume = io.read_image(DEMO_IMAGE)
    reference, _ = io.read_mask(DEMO_IMAGE)
    present = target_slices(reference, 0)
    order = np.resize(present, n_slices)  # repeat the lesion's slices to make a 40-slice target
    array = volume.array[order]
    reference = reference[order]
    return array, reference, 0, "auto", f"bundled demo CT lesion, slices {present.tolist()} repeated to {n_slices}"


def moved_keys(keys):
    """The key boxes with the middle key box moved 4 pixels to the right."""
    from .geometry import KeyBox, KeyBoxSet

    ordered = keys.sorted()
    middle = ordered[len(ordered) // 2].slice_index
    moved = [KeyBox(k.slice_index, (k.box[0] + 4, k.box[1], k.box[2] + 4, k.box[3]), k.source)
             if k.slice_index == middle else k for k in ordered]
    return KeyBoxSet(keys.slice_axis, moved)


# ---------------------------------------------------------------------------------------------------------
# Workers (one process each)


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def run_engine(cases_json, case_name, device="cpu", batch_size=None) -> Dict[str, object]:
    started = time.perf_counter()
    from . import pipeline
    from .models import load_model
    from .simulate import simulate_key_boxes

    model = load_model("lite", device=device)
    model_s = time.perf_counter() - started
    array, reference, axis, modality, described = load_target(cases_json, case_name)
    keys = simulate_key_boxes(reference, axis, KEY_SPACING, margin=3)
    settings = pipeline.SegmentationSettings(strategy="interpolate", modality=modality)
    segmenter = pipeline.make_segmenter(model, array, axis, settings, batch_size=batch_size)
    result = segmenter.segment(keys, strategy="interpolate")
    end_to_end = time.perf_counter() - started
    seg_s = result.seconds

    t0 = time.perf_counter()
    again = segmenter.segment(moved_keys(keys), strategy="interpolate")
    move_s = time.perf_counter() - t0

    # Encoder and decoder per slice, the way the engine runs them (batches).
    import torch

    slices = sorted(result.boxes)
    bs = segmenter.batch_size
    images = [segmenter.slice_image(s) for s in slices]
    model.encode(images[:bs])  # warm-up at this batch shape
    encoder_ms: List[float] = []
    for start in range(0, len(images), bs):
        batch = images[start : start + bs]
        t0 = time.perf_counter()
        model.encode(batch)
        encoder_ms.extend([(time.perf_counter() - t0) * 1000 / len(batch)] * len(batch))
    decoder_ms: List[float] = []
    dbs = max(bs, 8)
    boxes = np.array([result.boxes[s] for s in slices])
    for start in range(0, len(slices), dbs):
        chunk = slices[start : start + dbs]
        embeddings = torch.from_numpy(np.stack([segmenter.embedding(s) for s in chunk]))
        t0 = time.perf_counter()
        model.decode(embeddings, boxes[start : start + dbs], segmenter.slice_size)
        decoder_ms.extend([(time.perf_counter() - t0) * 1000 / len(chunk)] * len(chunk))
    return {
        "config": "engine", "target": described, "slices": len(slices), "key_boxes": len(keys.boxes),
        "end_to_end_s": end_to_end, "model_load_s": model_s, "segment_s": seg_s,
        "encoder_ms": float(np.median(encoder_ms)), "decoder_ms": float(np.median(decoder_ms)),
        "move_box_s": move_s, "move_box_slices_decoded": len(again.recomputed), "move_box_encoded": again.encoded,
        "torch_threads": torch.get_num_threads(), "batch_size": bs, "device": model.device_description,
        "acceleration": _acceleration_text(model.device),
        "mask_voxels": int(result.mask.sum()), "peak_rss_mib": _peak_rss_mib(),
    }


def run_recipe(cases_json, case_name, device="cpu") -> Dict[str, object]:
    started = time.perf_counter()
    from . import intensity
    from .baselines import PublishedRecipe, load_lite_medsam
    from .simulate import simulate_key_boxes

    recipe = PublishedRecipe(load_lite_medsam(device if device != "auto" else "cpu"))
    model_s = time.perf_counter() - started
    array, reference, axis, modality, described = load_target(cases_json, case_name)
    keys = simulate_key_boxes(reference, axis, KEY_SPACING, margin=3)
    volume_u8 = intensity.normalise_volume(array, modality)
    result = recipe.segment_volume(volume_u8, keys)
    end_to_end = time.perf_counter() - started
    t0 = time.perf_counter()
    recipe.segment_volume(volume_u8, moved_keys(keys))  # no cache: everything again
    move_s = time.perf_counter() - t0
    import torch

    return {
        "config": "recipe", "target": described, "slices": len(result.boxes), "key_boxes": len(keys.boxes),
        "end_to_end_s": end_to_end, "model_load_s": model_s,
        "segment_s": result.encode_seconds + result.decode_seconds,
        "encoder_ms": float(np.median(result.encode_times[1:] or result.encode_times)) * 1000,
        "decoder_ms": float(np.median(result.decode_times[1:] or result.decode_times)) * 1000,
        "move_box_s": move_s, "move_box_slices_decoded": len(result.boxes), "move_box_encoded": len(result.boxes),
        "torch_threads": torch.get_num_threads(), "batch_size": 1, "device": recipe.device,
        "acceleration": "none (fp32, one slice at a time)",
        "mask_voxels": int(result.mask.sum()), "peak_rss_mib": _peak_rss_mib(),
    }


def _acceleration_text(device) -> str:
    try:
        from . import acceleration
    except ImportError:
        return ""
    try:
        return acceleration.describe_acceleration(device)
    except Exception as exc:  # a description must never break the benchmark
        return f"unknown ({type(exc).__name__})"


# ---------------------------------------------------------------------------------------------------------
# Driver


def benchmark(
    out_dir: Optional[str] = None,
    cases_json: Optional[str] = None,
    case_name: str = DEFAULT_CASE,
    configs=CONFIGS,
    device: str = "cpu",
    batch_size: Optional[int] = None,
    log=print,
) -> Dict[str, Dict[str, object]]:
    """Run every configuration in its own process; print and (with ``out_dir``) write the table."""
    if cases_json is None:
        cases_json = _default_cases_json()
    results: Dict[str, Dict[str, object]] = {}
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for config in configs:
        command = [sys.executable, "-m", f"{__package__}.benchmark", "--worker", config, "--device", device,
                   "--case", case_name]
        if cases_json:
            command += ["--cases", cases_json]
        if batch_size:
            command += ["--batch-size", str(batch_size)]
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
        log(f"running {config} ...")
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"benchmark worker {config} failed (exit {done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}")
        results[config] = json.loads(lines[-1])
        results[config]["process_s"] = wall
    table = format_table(results)
    log(table)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "benchmark.json"), "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
        with open(os.path.join(out_dir, "benchmark.md"), "w", encoding="utf-8") as handle:
            handle.write(table + "\n")
    return results


ROWS = (
    ("encoder_ms", "encoder, ms per slice (median)", "{:.0f}"),
    ("decoder_ms", "decoder, ms per slice (median)", "{:.1f}"),
    ("end_to_end_s", "40-slice target end to end incl. model load, s", "{:.1f}"),
    ("process_s", "same, whole process incl. Python/torch start, s", "{:.1f}"),
    ("model_load_s", "model load, s", "{:.1f}"),
    ("move_box_s", "re-segment after moving one key box, s", "{:.2f}"),
    ("move_box_slices_decoded", "slices decoded after the move", "{:.0f}"),
    ("move_box_encoded", "slices encoded after the move", "{:.0f}"),
    ("peak_rss_mib", "peak memory (max RSS), MiB", "{:.0f}"),
    ("torch_threads", "torch threads", "{:.0f}"),
    ("batch_size", "encoder batch size", "{:.0f}"),
)


def format_table(results: Dict[str, Dict[str, object]]) -> str:
    from .evaluation import machine_description

    configs = list(results)
    first = results[configs[0]]
    lines = [
        "# Benchmark: our engine vs the published per-slice LiteMedSAM recipe",
        "",
        f"- machine: {machine_description()}",
        f"- target: {first.get('target')}, {first.get('key_boxes')} key boxes (every {KEY_SPACING} slices), "
        f"{first.get('slices')} slices segmented",
    ]
    for config in configs:
        if results[config].get("acceleration"):
            lines.append(f"- {config}: {results[config]['device']}; {results[config]['acceleration']}")
    lines += ["", "| measure | " + " | ".join(configs) + (" | recipe / engine |" if len(configs) > 1 else " |"),
              "| --- |" + " ---: |" * (len(configs) + (1 if len(configs) > 1 else 0))]
    for key, label, fmt in ROWS:
        values = [results[c].get(key) for c in configs]
        cells = ["" if v is None else fmt.format(v) for v in values]
        ratio = ""
        if "engine" in results and "recipe" in results and key.endswith(("_ms", "_s", "_mib")):
            a, b = results["engine"].get(key), results["recipe"].get(key)
            if a and b:
                ratio = f"{b / a:.1f}x"
        lines.append(f"| {label} | " + " | ".join(cells) + (f" | {ratio} |" if len(configs) > 1 else " |"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Command line


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="write benchmark.json and benchmark.md here")
    parser.add_argument("--cases", help="cases.json holding the target case (default: the shared development set "
                                        "when present, else the bundled demo lesion)")
    parser.add_argument("--case", default=DEFAULT_CASE, help=f"case name (default {DEFAULT_CASE})")
    parser.add_argument("--config", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="what to time")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    parser.add_argument("--batch-size", type=int, help="engine encoder batch size (default: the engine's)")
    parser.add_argument("--quiet", action="store_true")


def run_benchmark(args: argparse.Namespace) -> int:
    log = (lambda message: None) if args.quiet else (lambda message: print(message, flush=True))
    benchmark(args.out, args.cases, args.case, args.config, args.device, args.batch_size, log=log)
    return 0


def register_cli(subparsers) -> None:
    """Add ``benchmark`` to the ``medsam-segment`` command (called by :mod:`cli`)."""
    parser = subparsers.add_parser("benchmark", help="time our engine against the published per-slice recipe")
    add_benchmark_arguments(parser)
    parser.set_defaults(handler=run_benchmark)


def _worker_main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=CONFIGS, required=True)
    parser.add_argument("--cases")
    parser.add_argument("--case", default=DEFAULT_CASE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args(argv)
    if args.worker == "engine":
        out = run_engine(args.cases, args.case, args.device, args.batch_size)
    else:
        out = run_recipe(args.cases, args.case, args.device)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
