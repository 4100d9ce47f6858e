"""Accuracy study (issue 7): our pipeline with accuracy options on/off against the baselines, per case.

Goes through the shared path (``pipeline.make_segmenter`` + ``segment``), the simulated annotator and the metrics
of the evaluation. Embeddings are kept in an on-disk cache (``--cache``), so rerunning with other options costs
decoder time only (crops of ``zoom`` are new pixels, encoded once). One record per case, configuration and
spacing is appended to ``--out``, keyed by the configuration's settings: a rerun skips what is there and
``--max-minutes`` runs it in pieces (docs/evaluation.md, "Long runs in pieces"); ``--table`` prints the per-case
table of a results file (the records of today's configurations; ``--all-settings``: every record).

    python benchmarks/accuracy_study.py --cases ../shared/data/cases.json --config published default \\
        --spacing 5 10 --baselines --cache /tmp/acc_cache --out /tmp/acc.jsonl
    python benchmarks/accuracy_study.py --table /tmp/acc.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "MedSAMSegment"), os.path.join(REPO, "Evaluation")]

from medsam_evaluation import baselines, simulate  # noqa: E402
from medsam_evaluation import cases as evaluation_cases  # noqa: E402
from medsam_evaluation.resumable import (  # noqa: E402
    CaseLoop,
    CaseRecords,
    Piece,
    PieceSettings,
    case_fingerprint,
    model_fingerprint,
    settings_digest,
)
from medsam_evaluation.study_cli import study_records  # noqa: E402
from MedSAMSegmentLib import io, metrics, pipeline  # noqa: E402
from MedSAMSegmentLib.geometry import KeyBoxSet  # noqa: E402
from MedSAMSegmentLib.models import load_from_settings  # noqa: E402
from MedSAMSegmentLib.settings import ModelSettings, add_arguments, from_arguments  # noqa: E402

#: Named settings; each value overrides SegmentationSettings' defaults.
CONFIGS = {
    "published": dict(pipeline.PUBLISHED),
    "default": {},  # SegmentationSettings defaults: mr_rule auto, zoom union, guide auto
    "mr": {**pipeline.PUBLISHED, "mr_rule": "auto"},
    "mr_zoom": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "auto"},
    "mr_guide": {**pipeline.PUBLISHED, "mr_rule": "auto", "guide": "mean"},
    "mr_refine": {**pipeline.PUBLISHED, "mr_rule": "auto", "refine": "box"},
    "mr_zoom_refine": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "auto", "refine": "box"},
    "mr_guide_refine": {**pipeline.PUBLISHED, "mr_rule": "auto", "guide": "mean", "refine": "box"},
    "mr_retry": {**pipeline.PUBLISHED, "mr_rule": "auto", "retry": "zoom"},
    "mr_zoom_retry": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "auto", "retry": "zoom"},
    "mr_zoom_guide": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "auto", "guide": "mean"},
    "mr_zoom_guide_retry": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "auto", "guide": "mean",
                            "retry": "zoom"},
    "mr_zoom_union": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "auto", "guide": "union"},
    "mr_zoom_maskbox": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "auto", "guide": "mask"},
    "mr_zoom_propagate": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "auto", "strategy": "propagate"},
    "mr_best": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "best"},
    "mr_union": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "union"},
    "mr_union_refine": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "union", "refine": "box"},
    "mr_union_union": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "union", "guide": "union"},
    "mr_union_mask": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "union", "guide": "mask"},
    "mr_union_auto": {**pipeline.PUBLISHED, "mr_rule": "auto", "zoom": "union", "guide": "auto"},
    "all": {"mr_rule": "auto", "zoom": "auto", "guide": "mean", "refine": "box", "retry": "zoom"},
}


#: The model the configurations run, and the records the baselines write (no configuration of their own).
MODEL = ModelSettings(model="lite", device="cpu")
BASELINES = ("recipe_every_slice", "filled_boxes", "tight_boxes", "contours")


def config_digests() -> dict:
    """{configuration or baseline: the settings digest of its records}."""
    model = model_fingerprint(MODEL)
    digests = {name: settings_digest({"study": "accuracy", "model": model, "margin": simulate.DEFAULT_MARGIN,
                                      "settings": pipeline.SegmentationSettings(**options)})
               for name, options in CONFIGS.items()}
    for name in BASELINES:
        digests[name] = settings_digest({"study": "accuracy", "baseline": name, "margin": simulate.DEFAULT_MARGIN,
                                         **({"model": model} if name == "recipe_every_slice" else {})})
    return digests


def run(args) -> int:
    """Run what ``args`` ask for and ``--out`` does not hold yet; returns the cases left when ``--max-minutes``
    stopped the run."""
    from MedSAMSegmentLib.engine import EmbeddingCache

    records, digests = CaseRecords(args.out), config_digests()

    def key(case, config, spacing):
        return [case.name, settings_digest(case_fingerprint(case)), config, spacing]

    def wanted(case):
        pairs = [(name, spacing) for name in args.config for spacing in args.spacing]
        if args.baselines:
            pairs += [("recipe_every_slice", 0)] + [(name, spacing) for name in ("filled_boxes", "tight_boxes")
                                                    for spacing in args.spacing]
            pairs += [("contours", spacing) for spacing in args.spacing] if args.contours else []
        return [(name, spacing) for name, spacing in pairs if not records.get(digests[name], key(case, name, spacing))]

    loop = CaseLoop(evaluation_cases.load_cases(args.cases, args.case), Piece(from_arguments(PieceSettings, args)),
                    lambda case: not wanted(case), where=args.out)
    model = load_from_settings(MODEL) if loop.todo else None
    cache = EmbeddingCache(args.cache)
    for case in loop:
        todo = set(wanted(case))
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        spacing_mm = image.spacing_kji()
        axis = case.slice_axis
        modality = evaluation_cases.modality_setting(case, image.array)

        def write(config, spacing, mask, seconds=0.0, case=case, reference=reference, spacing_mm=spacing_mm,
                  **extra):
            row = {"case": case.name, "config": config, "spacing": spacing,
                   "dsc": round(metrics.dice(mask, reference), 4),
                   "nsd": round(metrics.normalised_surface_dice(mask, reference, spacing_mm), 4),
                   "seconds": round(seconds, 2), **extra}
            records.add(digests[config], key(case, config, spacing), row)
            print(row, flush=True)

        if ("recipe_every_slice", 0) in todo:
            every = simulate.every_slice_boxes(reference, axis)
            settings = pipeline.SegmentationSettings(modality=modality, **pipeline.PUBLISHED)
            segmenter = pipeline.make_segmenter(model, image.array, axis, settings, cache=cache)
            result = segmenter.segment(every, settings)
            write("recipe_every_slice", 0, result.mask)
        for spacing in args.spacing:
            keys = simulate.simulate_key_boxes(reference, axis, spacing)
            if ("filled_boxes", spacing) in todo:
                write("filled_boxes", spacing, baselines.filled_boxes(reference.shape, keys))
            if ("tight_boxes", spacing) in todo:
                tight = simulate.tight_boxes(reference, axis)
                tight_keys = KeyBoxSet(axis, [type(k)(k.slice_index, tight[k.slice_index], "tight")
                                              for k in keys.boxes])
                write("tight_boxes", spacing, baselines.filled_boxes(reference.shape, tight_keys))
            if ("contours", spacing) in todo:
                key_slices = [k.slice_index for k in keys.boxes]
                write("contours", spacing, baselines.contours_interpolated(reference, axis, key_slices))
        for name in args.config:
            settings = pipeline.SegmentationSettings(modality=modality, **CONFIGS[name])
            segmenter = pipeline.make_segmenter(model, image.array, axis, settings, cache=cache)
            for spacing in args.spacing:
                if (name, spacing) not in todo:
                    continue
                keys = simulate.simulate_key_boxes(reference, axis, spacing)
                t0 = time.perf_counter()
                result = segmenter.segment(keys, settings)
                write(name, spacing, result.mask, time.perf_counter() - t0, encoded=result.encoded,
                      flagged=len(result.flagged))
        cache.clear_memory()
    return loop.left


def read_records(path: str, all_settings: bool = False) -> list:
    """The records of ``path`` made with today's configurations (every record with ``all_settings``)."""
    return study_records(path, set(config_digests().values()), all_settings)


def table(path: str, spacing_filter=None, all_settings: bool = False) -> str:
    rows = read_records(path, all_settings)
    latest = {}
    for r in rows:
        latest[(r["case"], r["config"], r["spacing"])] = r
    columns = sorted({(c, s) for _, c, s in latest}, key=lambda cs: (cs[0] != "recipe_every_slice", cs))
    if spacing_filter:
        columns = [c for c in columns if c[1] in spacing_filter or c[1] == 0]
    cases = sorted({c for c, _, _ in latest})
    head = [f"{c}@{s}" if s else c for c, s in columns]
    lines = ["| case | " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(head)]
    for case in cases:
        cells = []
        for c, s in columns:
            r = latest.get((case, c, s))
            cells.append("" if r is None else f"{r['dsc']:.3f} / {r['nsd']:.3f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    cells = []
    for c, s in columns:
        values = [latest[(case, c, s)] for case in cases if (case, c, s) in latest]
        complete = len(values) == len(cases)
        mean = (f"{np.mean([v['dsc'] for v in values]):.3f} / {np.mean([v['nsd'] for v in values]):.3f}"
                if values else "")
        cells.append(mean + ("" if complete else f" (n={len(values)})"))
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


FINAL_COLUMNS = (("recipe_every_slice", 0, "recipe, every slice"), ("published", 5, "published, every 5"),
                 (None, 5, "ours, every 5"), (None, 10, "ours, every 10"), ("filled_boxes", 5, "given boxes filled"),
                 ("tight_boxes", 5, "tight boxes filled"), ("contours", 5, "contours + interpolation"))


def final_table(path: str, ours: str = "default", all_settings: bool = False) -> str:
    """Issue 7's table (DSC / NSD per case and mean) with ``ours`` as our configuration; every 5 unless said."""
    rows = read_records(path, all_settings)
    latest = {(r["case"], r["config"], r["spacing"]): r for r in rows}
    cases = sorted({c for c, k, _ in latest if k == ours})
    columns = [(k or ours, s, title) for k, s, title in FINAL_COLUMNS]
    lines = ["| case | " + " | ".join(t for _, _, t in columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for case in cases:
        cells = [latest.get((case, k, s)) for k, s, _ in columns]
        lines.append(f"| {case} | " + " | ".join("" if r is None else f"{r['dsc']:.3f} / {r['nsd']:.3f}"
                                                 for r in cells) + " |")
    means = []
    for k, s, _ in columns:
        values = [latest[(c, k, s)] for c in cases if (c, k, s) in latest]
        text = f"{np.mean([v['dsc'] for v in values]):.3f} / {np.mean([v['nsd'] for v in values]):.3f}" if values \
            else ""
        means.append(text + ("" if len(values) == len(cases) else f" (n={len(values)})"))
    lines.append(f"| **mean ({len(cases)} cases)** | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=os.path.join("..", "shared", "data", "cases.json"))
    parser.add_argument("--case", action="append", help="only cases matching (glob or substring); repeatable")
    parser.add_argument("--config", nargs="*", default=[], choices=sorted(CONFIGS))
    parser.add_argument("--spacing", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--baselines", action="store_true", help="also the recipe on every slice and filled boxes")
    parser.add_argument("--contours", action="store_true", help="with --baselines: contours + interpolation")
    parser.add_argument("--cache", default="/tmp/acc_cache")
    parser.add_argument("--out", default="/tmp/acc.jsonl")
    parser.add_argument("--table", help="print the per-case table of a results file and exit")
    parser.add_argument("--final", help="print issue 7's table of a results file (--ours CONFIG) and exit")
    parser.add_argument("--ours", default="default")
    parser.add_argument("--all-settings", action="store_true",
                        help="--table, --final: every record, whatever settings made it")
    add_arguments(parser, PieceSettings)
    args = parser.parse_args()
    if args.table:
        print(table(args.table, all_settings=args.all_settings))
        return
    if args.final:
        print(final_table(args.final, args.ours, args.all_settings))
        return
    run(args)


if __name__ == "__main__":
    main()
