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
* ``move_box_ms_per_slice``: that time divided by the slices re-decoded;
* ``peak_rss_mib``: peak resident memory of the process;
* torch threads and the batch size.

The ``interactive`` configuration (:mod:`.interactive`) replays a simulated annotator in real time on every case
of the development set (or the ``--case`` given) and reports what the annotator waits for.

The ``large`` configuration runs ``medsam-segment segment`` as a user would, in its own process, on a
512x512x300 int16 CT with a 100-slice target (the development set's TotalSegmentator CT resampled to that grid,
its liver as the target on slices 100-199, key boxes every 5 slices), and reports the process's peak resident
memory and wall time. The goals these are held to are in docs/evaluation.md.

Data: ``--cases CASES.json --case NAME`` (default: the development set found by
:func:`cases.default_cases_json`, case ``brats_pat0001_whole_tumor``, whose target spans 74 slices: the first 40
are used), else the bundled demo CT lesion stacked to 40 slices.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from MedSAMSegmentLib.settings import ModelSettings

from .cases import default_cases_json
from .interactive import INTERVALS, format_interactive_table, interactive_benchmark

N_SLICES = 40
KEY_SPACING = 5
DEFAULT_CASE = "brats_pat0001_whole_tumor"
CONFIGS = ("engine", "recipe", "large", "interactive")
#: What ``benchmark`` times unless told (``interactive`` replays an annotator over every case: about half an hour).
DEFAULT_CONFIGS = ("engine", "recipe", "large")
LARGE_SHAPE = (300, 512, 512)
LARGE_TARGET = (100, 199)


# ---------------------------------------------------------------------------------------------------------
# The target


def load_target(cases_json: Optional[str], case_name: str, n_slices: int = N_SLICES):
    """``(array, reference mask, slice_axis, modality setting, description)`` with a target of ``n_slices``."""
    from MedSAMSegmentLib import io
    from MedSAMSegmentLib.geometry import put_slice, take_slice

    from .cases import find_case, modality_setting
    from .simulate import target_slices

    if cases_json:
        case = find_case(cases_json, case_name)
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
    from MedSAMSegmentLib.demo import DEMO_IMAGE

    volume = io.read_image(DEMO_IMAGE)
    reference, _ = io.read_mask(DEMO_IMAGE)
    present = target_slices(reference, 0)
    order = np.resize(present, n_slices)  # repeat the lesion's slices to make a 40-slice target
    array = volume.array[order]
    reference = reference[order]
    return array, reference, 0, "auto", f"bundled demo CT lesion, slices {present.tolist()} repeated to {n_slices}"


def moved_keys(keys):
    """The key boxes with the middle key box moved 4 pixels to the right."""
    from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet

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


def run_engine(cases_json, case_name, device="cpu", batch_size=None, precision="auto",
               backend="auto") -> Dict[str, object]:
    started = time.perf_counter()
    from MedSAMSegmentLib import pipeline
    from MedSAMSegmentLib.models import load_model

    from .simulate import simulate_key_boxes

    model = load_model("lite", device=device, precision=precision, backend=backend)
    model_s = time.perf_counter() - started
    array, reference, axis, modality, described = load_target(cases_json, case_name)
    keys = simulate_key_boxes(reference, axis, KEY_SPACING, margin=3)
    # The default intensity rule, then the published engine (whole slices, interpolated boxes, raw masks).
    engine_options = {name: value for name, value in pipeline.PUBLISHED.items() if name != "mr_rule"}
    settings = pipeline.SegmentationSettings(strategy="interpolate", modality=modality, **engine_options)
    segmenter = pipeline.make_segmenter(model, array, axis, settings, batch_size=batch_size)
    result = segmenter.segment(keys, settings)
    end_to_end = time.perf_counter() - started
    seg_s = result.seconds

    t0 = time.perf_counter()
    again = segmenter.segment(moved_keys(keys), settings)
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
        "move_box_ms_per_slice": move_s * 1000 / max(len(again.recomputed), 1),
        "torch_threads": torch.get_num_threads(), "batch_size": bs, "device": model.device_description,
        "acceleration": getattr(model, "acceleration", "") or _acceleration_text(model.device),
        "mask_voxels": int(result.mask.sum()), "peak_rss_mib": _peak_rss_mib(),
    }


def run_recipe(cases_json, case_name, device="cpu") -> Dict[str, object]:
    started = time.perf_counter()
    from MedSAMSegmentLib import intensity
    from MedSAMSegmentLib.models import choose_device

    from .baselines import PublishedRecipe
    from .simulate import simulate_key_boxes

    recipe = PublishedRecipe(device=choose_device(device).name)
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
        "move_box_ms_per_slice": move_s * 1000 / max(len(result.boxes), 1),
        "torch_threads": torch.get_num_threads(), "batch_size": 1, "device": recipe.device,
        "acceleration": "none (fp32, one slice at a time)",
        "mask_voxels": int(result.mask.sum()), "peak_rss_mib": _peak_rss_mib(),
    }


LARGE_CASE = "totalseg_ct_liver"


def make_large_ct(cases_json: str, folder: str, case_name: str = LARGE_CASE):
    """Write a ``LARGE_SHAPE`` int16 CT and its key boxes (every 5 slices over ``LARGE_TARGET``) into ``folder``.

    The image is the case's CT resampled (linear) onto a 512x512x300 grid, so the intensities, the file size and
    the reading cost are those of a real CT of that size; the target is the case's label resampled (nearest)
    and kept on slices 100-199. Returns ``(image path, boxes path, target slices)``.
    """
    import SimpleITK as sitk
    from MedSAMSegmentLib import io
    from MedSAMSegmentLib.geometry import KeyBoxSet

    from .cases import find_case
    from .simulate import simulate_key_boxes

    case = find_case(cases_json, case_name)
    image = sitk.ReadImage(case.image)
    label = sitk.ReadImage(case.label)
    size_xyz = tuple(reversed(LARGE_SHAPE))
    spacing = [old_spacing * old_size / new_size for old_spacing, old_size, new_size
               in zip(image.GetSpacing(), image.GetSize(), size_xyz)]

    def resample(volume, interpolator, pixel_type):
        return sitk.Resample(volume, size_xyz, sitk.Transform(), interpolator, volume.GetOrigin(), spacing,
                             volume.GetDirection(), 0, pixel_type)

    ct = resample(image, sitk.sitkLinear, sitk.sitkInt16)
    image_path = os.path.join(folder, "large_ct.nii.gz")
    sitk.WriteImage(ct, image_path)
    labels = sitk.GetArrayFromImage(resample(label, sitk.sitkNearestNeighbor, sitk.sitkUInt8))
    mask = np.isin(labels, case.label_values or [1])
    first, last = LARGE_TARGET
    mask[:first] = False
    mask[last + 1:] = False
    keys = simulate_key_boxes(mask, 0, KEY_SPACING, margin=3)
    boxes_path = os.path.join(folder, "large_ct_boxes.json")
    io.write_box_json(boxes_path, KeyBoxSet(0, keys.boxes))
    return image_path, boxes_path, int(mask.any(axis=(1, 2)).sum())


def run_large(cases_json: str, device: str = "cpu", log=lambda message: None) -> Dict[str, object]:
    """``medsam-segment segment`` on the large CT in a child process: its wall time and peak resident memory."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="medsam-large-") as folder:
        image_path, boxes_path, n_target = make_large_ct(cases_json, folder)
        output = os.path.join(folder, "mask.nii.gz")
        command = [sys.executable, "-m", "MedSAMSegmentLib.cli", "segment", image_path, "--boxes", boxes_path, "-o",
                   output, "--device", device, "--quiet"]
        log(f"  {LARGE_SHAPE[2]}x{LARGE_SHAPE[1]}x{LARGE_SHAPE[0]} CT written; segmenting {n_target} slices ...")
        t0 = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                                 errors="replace", env=_worker_env())
        out, err = child.communicate()
        wall = time.perf_counter() - t0
        # ru_maxrss of all waited-for children: the only child this process has waited for here is this one,
        # unless earlier configurations ran - so the parent runs "large" in a fresh helper (see benchmark()).
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if child.returncode != 0:
            raise RuntimeError(f"medsam-segment segment failed on the large CT (exit {child.returncode}): "
                               f"{err.strip()[-2000:]}")
        from MedSAMSegmentLib import io

        written = io.read_mask(output)[0]
    return {
        "config": "large", "target": f"{LARGE_SHAPE[2]}x{LARGE_SHAPE[1]}x{LARGE_SHAPE[0]} int16 CT, "
                                     f"{n_target}-slice target", "slices": n_target,
        "end_to_end_s": wall, "peak_rss_mib": peak_kib / 1024.0, "mask_voxels": int(written.sum()),
    }


def _worker_env() -> Dict[str, str]:
    """The environment of a child process: this package and the core importable as they are here."""
    import MedSAMSegmentLib

    roots = [os.path.dirname(os.path.dirname(os.path.abspath(path)))
             for path in (__file__, MedSAMSegmentLib.__file__)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots + [env.get("PYTHONPATH", "")]))
    return env


def _acceleration_text(device) -> str:
    try:
        from MedSAMSegmentLib.models import hardware
    except ImportError:
        return ""
    try:
        return hardware.describe_acceleration(device)
    except Exception as exc:  # a description must never break the benchmark
        return f"unknown ({type(exc).__name__})"


# ---------------------------------------------------------------------------------------------------------
# Driver


def benchmark(
    out_dir: Optional[str] = None,
    cases_json: Optional[str] = None,
    case_name: Optional[str] = None,
    configs=DEFAULT_CONFIGS,
    model: Optional[ModelSettings] = None,
    log=print,
    intervals: Sequence[float] = INTERVALS,
    slices: str = "every",
    with_recipe: bool = True,
) -> Dict[str, Dict[str, object]]:
    """Run every configuration in its own process; print and (with ``out_dir``) write the table.

    ``cases_json`` None looks for the development set (:func:`cases.default_cases_json`); ``case_name`` None is
    :data:`DEFAULT_CASE` (``interactive``: every case); ``model`` sets the device (default the CPU), the engine's
    batch size and its encoder's precision and backend (the model is LiteMedSAM: the recipe is its);
    ``intervals``: the interactive annotator's seconds per key box; ``slices``: the interactive sessions'
    ``--slices`` choice; ``with_recipe`` False leaves out the interactive configuration's per-case recipe timing."""
    cases_json = default_cases_json(cases_json)
    model = model if model is not None else ModelSettings(device="cpu")
    results: Dict[str, Dict[str, object]] = {}
    for config in configs:
        if config in ("large", "interactive") and not cases_json:
            log(f"skipping {config}: it needs the development set (--cases)")
            continue
        if config == "interactive":
            log("running interactive (an annotator replayed in real time on each case) ...")
            results[config] = interactive_benchmark(
                cases_json, [case_name] if case_name else None, intervals, model.device, model.precision,
                model.backend, with_recipe=with_recipe, env=_worker_env(), log=log, slices=slices)
            continue
        command = [sys.executable, "-m", f"{__package__}.benchmark", "--worker", config, "--device", model.device,
                   "--precision", model.precision, "--backend", model.backend, "--case", case_name or DEFAULT_CASE]
        if cases_json:
            command += ["--cases", cases_json]
        if model.batch_size:
            command += ["--batch-size", str(model.batch_size)]
        log(f"running {config} ...")
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace", env=_worker_env())
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
    ("end_to_end_s", "the target end to end incl. model load, s", "{:.1f}"),
    ("process_s", "whole benchmark process (start-up, run, move, timing loops), s", "{:.1f}"),
    ("model_load_s", "model load, s", "{:.1f}"),
    ("move_box_s", "re-segment after moving one key box, s", "{:.2f}"),
    ("move_box_slices_decoded", "slices decoded after the move", "{:.0f}"),
    ("move_box_encoded", "slices encoded after the move", "{:.0f}"),
    ("move_box_ms_per_slice", "re-segment after the move, ms per re-decoded slice", "{:.0f}"),
    ("peak_rss_mib", "peak memory (max RSS), MiB", "{:.0f}"),
    ("torch_threads", "torch threads", "{:.0f}"),
    ("batch_size", "encoder batch size", "{:.0f}"),
)


def format_table(results: Dict[str, Dict[str, object]]) -> str:
    from .provenance import machine_description

    large, interactive = results.get("large"), results.get("interactive")
    results = {name: value for name, value in results.items() if name not in ("large", "interactive")}
    if not results:
        parts = [_large_lines(large, machine_description())] if large else []
        if interactive:
            parts.append(_interactive_lines(interactive, "" if large else machine_description()))
        return "\n\n".join(parts)
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
    if large:
        lines += ["", _large_lines(large)]
    if interactive:
        lines += ["", _interactive_lines(interactive)]
    return "\n".join(lines)


def _interactive_lines(interactive: Dict[str, object], machine: str = "") -> str:
    return "# Interactive: from the last key box to the 3D result\n\n" + format_interactive_table(interactive, machine)


def _large_lines(large: Dict[str, object], machine: str = "") -> str:
    lines = [f"- machine: {machine}", ""] if machine else []
    lines.append(f"Large CT (`medsam-segment segment` in its own process, {large['target']}, key boxes every "
                 f"{KEY_SPACING} slices): {large['end_to_end_s']:.1f} s, peak memory (max RSS) "
                 f"{large['peak_rss_mib']:.0f} MiB.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# A configuration's own process


def _worker_main(argv=None) -> int:
    """``python -m medsam_evaluation.benchmark --worker CONFIG ...``: one configuration, its results as a JSON
    line on stdout."""
    import argparse

    from MedSAMSegmentLib.settings import from_arguments

    from .cli import add_benchmark_arguments

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=("engine", "recipe", "large"), required=True)
    add_benchmark_arguments(parser)
    args = parser.parse_args(argv)
    model = from_arguments(ModelSettings, args)
    if args.worker == "engine":
        out = run_engine(args.cases, args.case, model.device, model.batch_size, model.precision, model.backend)
    elif args.worker == "large":
        out = run_large(args.cases, model.device)
    else:
        out = run_recipe(args.cases, args.case, model.device)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
