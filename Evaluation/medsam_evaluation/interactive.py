"""``medsam-segment benchmark --config interactive``: what the annotator waits for, replayed in real time.

A simulated annotator places the key boxes of each case (every :data:`KEY_SPACING` slices from the reference
mask, +3 px, as ``evaluate`` draws them) one after another, first slice to last, one box every ``interval``
seconds, on a :class:`~MedSAMSegmentLib.session.SegmentationSession` with the command line's defaults (model
loaded beforehand, as the effect loads it on activation; empty embedding cache). Measured per case and interval:

* ``latency_s``: seconds from the last key box to the complete 3D result (:meth:`~SegmentationSession.result`);
* ``session_s``: the whole session, first box to result;
* ``encoded_ahead`` / ``encoded_at_result``: views encoded while the user drew / after the last box;
  ``wasted``: views encoded on speculation that the result does not read;
* ``move_s``: the middle key box then moved 4 px: seconds to its redecoded result;
* ``same_mask``: the result equals a one-shot run's (same cache, so decoding only);
* ``dsc`` against the reference.

Per case, once: ``recipe_s``, the published per-slice recipe from the click (it can start only at the end: it
needs every box), and ``peak_rss_mib``, the case process's peak resident memory before the recipe ran. Each
case runs in its own process.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

KEY_SPACING = 5
#: Seconds per key box of the simulated annotator: a careful one and a fast one.
INTERVALS = (4.0, 2.0)
#: The README's target: the 3D result this many seconds after the last key box (median over the cases).
TARGET_LATENCY_S = 2.0


def replay(model, array: np.ndarray, reference: np.ndarray, axis: int, modality: str, interval: float,
           spacing: int = KEY_SPACING, slices: str = "every") -> Dict[str, object]:
    """One annotator session on one case (see the module) with the defaults but ``slices``; returns its
    measures."""
    from MedSAMSegmentLib.engine import EmbeddingCache
    from MedSAMSegmentLib.metrics import dice
    from MedSAMSegmentLib.session import SegmentationSession, run_segmentation
    from MedSAMSegmentLib.settings import SegmentationSettings

    from .benchmark import moved_keys
    from .simulate import simulate_key_boxes

    keys = simulate_key_boxes(reference, axis, spacing, margin=3)
    settings = SegmentationSettings(modality=modality, slices=slices)
    cache = EmbeddingCache()
    with SegmentationSession.open(model, array, axis, settings, cache=cache) as session:
        started = time.perf_counter()
        for n, key in enumerate(keys.sorted()):
            time.sleep(max(0.0, started + n * interval - time.perf_counter()))
            session.add_box(key.slice_index, key.box)
        last_box = time.perf_counter()
        result = session.result()
        done = time.perf_counter()
        stats = session.stats
        moved = moved_keys(keys)
        middle = [k for k in moved.boxes if k not in keys.boxes]
        t0 = time.perf_counter()
        for key in middle:
            session.move_box(key.slice_index, key.box)
        session.result()
        move_s = time.perf_counter() - t0
    one_shot = run_segmentation(model, array, keys, settings, cache=cache)
    return {
        "interval_s": interval, "key_boxes": len(keys.boxes), "slices": len(result.boxes),
        "latency_s": done - last_box, "session_s": done - started, "encoded_ahead": stats.encoded_ahead,
        "encoded_at_result": stats.encoded_in_results, "speculated": stats.speculated, "wasted": stats.wasted,
        "previews": stats.previews, "move_s": move_s, "same_mask": bool(np.array_equal(result.mask, one_shot.mask)),
        "dsc": float(dice(result.mask, reference)),
    }


def recipe_seconds(array: np.ndarray, reference: np.ndarray, axis: int, modality: str, device: str,
                   spacing: int = KEY_SPACING) -> float:
    """Seconds the published per-slice recipe takes from the click (normalisation included)."""
    from MedSAMSegmentLib import intensity

    from .baselines import PublishedRecipe
    from .simulate import simulate_key_boxes

    keys = simulate_key_boxes(reference, axis, spacing, margin=3)
    recipe = PublishedRecipe(device=device)
    started = time.perf_counter()
    recipe.segment_volume(intensity.normalise_volume(array, modality), keys)
    return time.perf_counter() - started


def run_case(cases_json: str, case_name: str, intervals: Sequence[float], device: str = "cpu",
             precision: str = "auto", backend: str = "auto", with_recipe: bool = True,
             slices: str = "every") -> Dict[str, object]:
    """Every interval's replay on one case, then the recipe; the case process's measures."""
    from MedSAMSegmentLib import io
    from MedSAMSegmentLib.models import load_model

    from .cases import find_case, modality_setting

    case = find_case(cases_json, case_name)
    image = io.read_image(case.image)
    reference, _ = io.read_mask(case.label, case.label_values)
    modality = modality_setting(case, image.array)
    model = load_model("lite", device=device, precision=precision, backend=backend)
    replays = [replay(model, image.array, reference, case.slice_axis, modality, interval, slices=slices)
               for interval in intervals]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out: Dict[str, object] = {"case": case.name, "shape": list(image.array.shape), "replays": replays,
                              "peak_rss_mib": peak, "acceleration": getattr(model, "acceleration", "")}
    if with_recipe:
        out["recipe_s"] = recipe_seconds(image.array, reference, case.slice_axis, modality, model.device)
    return out


def interactive_benchmark(cases_json: str, case_names: Optional[Sequence[str]], intervals: Sequence[float],
                          device: str = "cpu", precision: str = "auto", backend: str = "auto", with_recipe=True,
                          env: Optional[Dict[str, str]] = None, log=print, slices: str = "every") -> Dict[str, object]:
    """Run :func:`run_case` for each case (all of ``cases_json`` when ``case_names`` is None), each in its own
    process; returns ``{"cases": [...], "summary": {...}}``."""
    from .cases import load_cases

    names = list(case_names) if case_names else [case.name for case in load_cases(cases_json)]
    rows: List[Dict[str, object]] = []
    for number, name in enumerate(names, 1):
        command = [sys.executable, "-m", __name__, "--cases", cases_json, "--case", name, "--device", device,
                   "--precision", precision, "--backend", backend, "--slices", slices,
                   "--interval", *[str(i) for i in intervals]]
        if not with_recipe:
            command.append("--no-recipe")
        done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace", env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"interactive benchmark case {name} failed (exit {done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}")
        rows.append(json.loads(lines[-1]))
        latencies = ", ".join(f"{r['latency_s']:.2f} s at {r['interval_s']:g} s/box" for r in rows[-1]["replays"])
        log(f"[{number}/{len(names)}] {name}: {latencies}")
    return {"cases": rows, "summary": summarise(rows, intervals), "slices": slices}


def summarise(rows: Sequence[Dict[str, object]], intervals: Sequence[float]) -> Dict[str, object]:
    """Medians over the cases per interval, and the recipe's."""
    summary: Dict[str, object] = {}
    for interval in intervals:
        replays = [r for row in rows for r in row["replays"] if r["interval_s"] == interval]
        summary[f"{interval:g}"] = {
            "median_latency_s": statistics.median(r["latency_s"] for r in replays),
            "max_latency_s": max(r["latency_s"] for r in replays),
            "median_move_s": statistics.median(r["move_s"] for r in replays),
            "wasted": sum(r["wasted"] for r in replays),
            "encoded_ahead": sum(r["encoded_ahead"] for r in replays),
            "all_same_mask": all(r["same_mask"] for r in replays),
        }
    recipe = [row["recipe_s"] for row in rows if "recipe_s" in row]
    if recipe:
        summary["median_recipe_s"] = statistics.median(recipe)
    summary["max_peak_rss_mib"] = max(row["peak_rss_mib"] for row in rows)
    return summary


def format_interactive_table(results: Dict[str, object], machine: str = "") -> str:
    """The Markdown table of :func:`interactive_benchmark`'s results."""
    rows, summary = results["cases"], results["summary"]
    intervals = [r["interval_s"] for r in rows[0]["replays"]]
    head = ["case", "slices", "boxes"]
    for interval in intervals:
        head += [f"{interval:g} s/box: last box to 3D, s", f"{interval:g} s/box: session s",
                 f"{interval:g} s/box: wasted"]
    with_recipe = any("recipe_s" in row for row in rows)
    head += ["recipe from the click, s"] * with_recipe + ["move a box, s", "peak MiB", "DSC", "same mask"]
    lines = [f"- machine: {machine}" if machine else "",
             f"- annotator: a key box every {KEY_SPACING} slices, one box every "
             + " or ".join(f"{i:g}" for i in intervals) + " s; defaults"
             + ("" if results.get("slices", "every") == "every" else f" but --slices {results['slices']}")
             + "; the model loaded beforehand", "",
             "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 2) + " --- |"]
    for row in rows:
        first = row["replays"][0]
        cells = [row["case"], str(first["slices"]), str(first["key_boxes"])]
        for r in row["replays"]:
            cells += [f"{r['latency_s']:.2f}", f"{r['session_s']:.1f}", str(r["wasted"])]
        cells += [f"{row['recipe_s']:.1f}" if "recipe_s" in row else ""] * with_recipe + [f"{first['move_s']:.2f}",
                  f"{row['peak_rss_mib']:.0f}", f"{first['dsc']:.3f}",
                  "yes" if all(r["same_mask"] for r in row["replays"]) else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**median**", "", ""]
    for interval in intervals:
        s = summary[f"{interval:g}"]
        cells += [f"**{s['median_latency_s']:.2f}**", "", str(s["wasted"])]
    cells += [f"**{summary['median_recipe_s']:.1f}**" if "median_recipe_s" in summary else ""] * with_recipe + [
              f"{summary[f'{intervals[0]:g}']['median_move_s']:.2f}", f"max {summary['max_peak_rss_mib']:.0f}", "",
              "yes" if all(summary[f"{i:g}"]["all_same_mask"] for i in intervals) else "NO"]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(line for line in lines if line is not None)


def _case_main(argv=None) -> int:
    """``python -m medsam_evaluation.interactive --cases C --case NAME --interval S ...``: one case, its results
    as a JSON line on stdout."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--interval", type=float, nargs="+", default=list(INTERVALS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--no-recipe", action="store_true")
    parser.add_argument("--slices", default="every")
    args = parser.parse_args(argv)
    out = run_case(args.cases, args.case, args.interval, args.device, args.precision, args.backend,
                   not args.no_recipe, slices=args.slices)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_case_main())
