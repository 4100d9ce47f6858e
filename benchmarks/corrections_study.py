"""Study: how much do a few corrected slices help the rest, and which safeguard generalises? (Refine from my edits,
simulated annotator)

For each development case: key boxes every ``--spacing`` slices from the reference (+3 px, as ``evaluate``
simulates them), one run with the command line's defaults (real LiteMedSAM on the CPU); then for each k of ``--k``
the annotator replaces the k worst slices by the reference (:mod:`medsam_evaluation.corrections`) and the two
adaptations Refine from my edits is made of run on them: ``free`` (the decoder adapted to the corrected slices
alone) and ``anchored`` (with untouched slices held to the run's masks), each under its leave-one-out check.

The refinement's rule (``RefineSettings.free_first``) keeps the free adaptation unless the run's confident
slices (predicted IoU >= t) disagree with it (mean DSC < a), then falls back to the anchored one. Its outcome for
any (t, a) follows from the two records (the per-slice IoU and agreement are recorded), so the report scores a
grid of thresholds, and the plain ``free`` and ``anchored`` rules, by leave-one-group-out on the untouched
slices' DSC (:mod:`medsam_evaluation.cross_validation`): each case group is held out in turn and gets the rule
the other groups chose. Records go to a JSON-lines file, one per case, k and adaptation, keyed by their settings
(a rerun skips what is there; ``--max-minutes`` runs it in pieces: docs/evaluation.md, "Long runs in pieces").

    python benchmarks/corrections_study.py --out /tmp/corrections.jsonl [--k 2 3] [--case cord]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from collections import defaultdict
from typing import Dict, Optional

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.cases import load_cases, modality_setting  # noqa: E402
from medsam_evaluation.corrections import corrections_protocol, pooled_dice, target_lines  # noqa: E402
from medsam_evaluation.cross_validation import case_group, leave_one_group_out  # noqa: E402
from medsam_evaluation.default_rule import check_spacing  # noqa: E402
from medsam_evaluation.resumable import (  # noqa: E402
    CaseLoop,
    CaseRecords,
    Piece,
    case_fingerprint,
    model_fingerprint,
    settings_digest,
)
from medsam_evaluation.simulate import simulate_key_boxes  # noqa: E402
from medsam_evaluation.study_cli import add_study_arguments, run_study, study_report  # noqa: E402
from MedSAMSegmentLib import io, pipeline  # noqa: E402
from MedSAMSegmentLib.engine import EmbeddingCache  # noqa: E402
from MedSAMSegmentLib.learning.refinement import RefineSettings, corrections_inside, slices_near  # noqa: E402
from MedSAMSegmentLib.models import load_from_settings  # noqa: E402
from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings  # noqa: E402

#: The two adaptations each case runs (the rule's building blocks).
ADAPTATIONS = {"free": RefineSettings(anchors=0, free_first=False, interior_free=False, anchored_near=False),
               "anchored": RefineSettings(anchors=RefineSettings().anchors, free_first=False, interior_free=False,
                                          anchored_near=False)}
#: The confident-slice check's thresholds scored: the run's predicted IoU, and the agreement with its masks.
CONFIDENT_IOUS = (0.8, 0.85, 0.9, 0.95)
AGREEMENTS = (0.8, 0.85, 0.9, 0.95)


#: The name of the rule by where the corrections lie (``RefineSettings.interior_free``).
INSIDE = "free when the corrections lie inside the target"
#: The anchored adaptation applied near the corrections only (``RefineSettings.anchored_near``), and both rules.
NEAR = "anchored, near the corrections"
INSIDE_NEAR = "free inside the target, else anchored near the corrections"
#: The rules judged against the anchored default, with the settings that give them.
RULES = {INSIDE: "interior_free", NEAR: "anchored_near", INSIDE_NEAR: "interior_free, anchored_near"}

#: The model the runs use, and the annotator's margin.
MODEL = ModelSettings(model="lite", device="cpu")
MARGIN = 3


def adaptation_digests(spacing: int) -> Dict[str, str]:
    """{adaptation: the settings digest of its records}: the run's settings, the adaptation, the model, the key
    boxes' spacing and margin."""
    model = model_fingerprint(MODEL)
    return {name: settings_digest({"study": "corrections", "model": model, "spacing": spacing, "margin": MARGIN,
                                   "settings": SegmentationSettings(), "refine": adaptation_fields(refine)})
            for name, refine in ADAPTATIONS.items()}


def adaptation_fields(refine: RefineSettings) -> dict:
    """What identifies an adaptation's records: its settings but ``interior_free`` and ``anchored_near``, the rules
    scored from the records (:func:`inside_after`, :func:`near_after`), which neither adaptation uses."""
    fields = dataclasses.asdict(refine)
    for scored in ("interior_free", "anchored_near"):
        del fields[scored]
    return fields


def record_key(case, k: int, adaptation: str) -> list:
    return [case.name, settings_digest(case_fingerprint(case)), k, adaptation]


def run(cases_json: str, out: str, piece: Piece, ks, spacing: int, case_filter=None, cache_folder=None) -> int:
    """Run the cases of ``cases_json`` not recorded in ``out``; returns the cases left when ``piece`` stopped.
    ``cache_folder`` keeps the embeddings on disk between runs (:class:`EmbeddingCache`)."""
    records, digests = CaseRecords(out), adaptation_digests(spacing)

    def todo(case) -> Dict[str, list]:
        return {name: [k for k in ks if not records.get(digests[name], record_key(case, k, name))]
                for name in ADAPTATIONS}

    loop = CaseLoop(load_cases(cases_json, case_filter), piece, lambda case: not any(todo(case).values()),
                    where=out)
    model = load_from_settings(MODEL) if loop.todo else None
    for case in loop:
        left = todo(case)
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        settings = SegmentationSettings(modality=modality_setting(case, image.array))
        cache = EmbeddingCache(cache_folder, max_memory_bytes=1 << 30) if cache_folder else None
        segmenter = pipeline.make_segmenter(model, image.array, case.slice_axis, settings, cache=cache)
        keys = simulate_key_boxes(reference, case.slice_axis, spacing, margin=MARGIN)
        result = segmenter.segment(keys, settings)
        for name, refine in ADAPTATIONS.items():
            for row in corrections_protocol(segmenter, keys, settings, result, reference, left[name], refine):
                records.add(digests[name], record_key(case, row["k"], name), {
                    "case": case.name, "group": case_group(case.name), "spacing": spacing, "adaptation": name,
                    "refine": dataclasses.asdict(refine), **row,
                    **{key: {str(i): v for i, v in row.get(key, {}).items()}
                       for key in ("held_out", "iou", "agreement", "overlaps")}})
                print(f"{case.name} k={row['k']} {name}: {row['before']:.3f} -> {row['after']:.3f} "
                      f"({'kept' if row['kept'] else 'not kept'}, {row['seconds']:.1f} s)", flush=True)
    return loop.left


def rule_after(free: dict, anchored: dict, confident_iou: Optional[float], agreement: Optional[float]) -> float:
    """The untouched DSC the rule gives: ``free`` unless (with thresholds) its confident slices disagree."""
    if free["kept"]:
        if confident_iou is None:
            return free["after"]
        confident = [i for i, iou in free["iou"].items() if iou >= confident_iou]
        if not confident or statistics.mean(free["agreement"][i] for i in confident) >= agreement:
            return free["after"]
    return anchored["after"]


def takes_free(free: dict) -> bool:
    """Whether ``RefineSettings.interior_free`` keeps the free adaptation: it held out and the corrections lie
    inside the target (the range is the run's segmented slices: the untouched ones recorded and the corrected
    ones)."""
    segmented = [int(i) for i in free["iou"]] + list(free["corrected"])
    return free["kept"] and corrections_inside(free["corrected"], (min(segmented), max(segmented)))


def inside_after(free: dict, anchored: dict) -> float:
    """The untouched DSC ``RefineSettings.interior_free`` gives: ``free`` when :func:`takes_free`, else
    ``anchored``."""
    return free["after"] if takes_free(free) else anchored["after"]


def near_after(anchored: dict) -> float:
    """The untouched DSC ``RefineSettings.anchored_near`` gives the anchored adaptation: its masks on the slices
    near the corrections (:func:`slices_near`), the run's elsewhere."""
    if not anchored["kept"]:
        return anchored["after"]
    overlaps = {int(i): counts for i, counts in anchored["overlaps"].items()}
    return pooled_dice(overlaps, slices_near(anchored["corrected"], anchored["keys"]))


def candidates(pairs: Dict[str, dict]) -> Dict[str, Dict[str, float]]:
    """{rule: {case: untouched DSC after}} for the anchored rule (first: the reference), the free rule, the rule
    by where the corrections lie and the threshold grid, from ``{case: {"free": record, "anchored": record}}``."""
    scores = {"anchored": {c: p["anchored"]["after"] for c, p in pairs.items()},
              "free": {c: rule_after(p["free"], p["anchored"], None, None) for c, p in pairs.items()},
              INSIDE: {c: inside_after(p["free"], p["anchored"]) for c, p in pairs.items()}}
    if all("overlaps" in p["anchored"] for p in pairs.values()):
        scores[NEAR] = {c: near_after(p["anchored"]) for c, p in pairs.items()}
        scores[INSIDE_NEAR] = {c: p["free"]["after"] if takes_free(p["free"]) else scores[NEAR][c]
                               for c, p in pairs.items()}
    for t in CONFIDENT_IOUS:
        for a in AGREEMENTS:
            scores[rule_name(t, a)] = {c: rule_after(p["free"], p["anchored"], t, a) for c, p in pairs.items()}
    return scores


def rule_name(confident_iou: float, agreement: float) -> str:
    return f"free unless IoU>={confident_iou:g} slices agree <{agreement:g}"


def group_table(before: Dict[str, float], scores: Dict[str, Dict[str, float]]) -> list:
    """Markdown lines: per case group and over all cases, the untouched DSC before and its change with the
    anchored and free adaptations and each rule of :data:`RULES` scored, and the largest loss of each."""
    shown = ["anchored", "free"] + [name for name in RULES if name in scores]
    lines = ["", "| group | cases | before | " + " | ".join(shown) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(shown)]
    groups = sorted({case_group(c) for c in before})
    for group in groups + ["all", "largest loss"]:
        cases = [c for c in before if group in ("all", "largest loss", case_group(c))]
        if group == "largest loss":
            cells = [f"{min(scores[n][c] - before[c] for c in cases):+.3f}" for n in shown]
            lines.append(f"| {group} | {len(cases)} | | " + " | ".join(cells) + " |")
            continue
        mean_before = statistics.mean(before[c] for c in cases)
        cells = [f"{statistics.mean(scores[n][c] for c in cases) - mean_before:+.3f}" for n in shown]
        lines.append(f"| {group} | {len(cases)} | {mean_before:.3f} | " + " | ".join(cells) + " |")
    return lines


def report(records: list) -> str:
    """The tables of ``records`` (:func:`medsam_evaluation.study_cli.study_records`)."""
    lines = []
    for k in sorted({r["k"] for r in records}):
        pairs: Dict[str, dict] = defaultdict(dict)
        for r in records:
            if r["k"] == k:
                pairs[r["case"]][r["adaptation"]] = r
        pairs = {c: p for c, p in sorted(pairs.items()) if set(p) == set(ADAPTATIONS)}
        if not pairs:
            continue
        scores = candidates(pairs)
        validation = leave_one_group_out(scores)
        chosen_by_group = {fold.group: fold.chosen for fold in validation.folds}
        before = {c: p["free"]["before"] for c, p in pairs.items()}
        held_out = {c: scores[chosen_by_group[case_group(c)]][c] for c in pairs}
        whole = validation.whole_set_choice
        lines += [f"### {k} corrected slice{'s' if k > 1 else ''} (the {k} worst)", "",
                  "| case | corrected | untouched DSC before | free | anchored | whole-set rule | held-out rule | s "
                  "(free + anchored) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c, p in pairs.items():
            free, anchored = p["free"], p["anchored"]
            mark = {True: "", False: " (not kept)"}
            lines.append(f"| {c} | {free['corrected']} | {before[c]:.3f} | {free['after']:.3f}{mark[free['kept']]} | "
                         f"{anchored['after']:.3f}{mark[anchored['kept']]} | {scores[whole][c]:.3f} | "
                         f"{held_out[c]:.3f} | {free['seconds'] + anchored['seconds']:.1f} |")
        lines += group_table(before, scores)
        lines += ["", "Leave-one-group-out over the rules (score: untouched DSC; reference: anchored):", "",
                  "| held-out group | cases | rule chosen by the other groups | its mean there | anchored | "
                  "worst case vs anchored |", "| --- | ---: | --- | ---: | ---: | ---: |"]
        lines += [f"| {f.group} | {f.cases} | {f.chosen} | {f.held_out_mean:.4f} | {f.reference_mean:.4f} | "
                  f"{f.worst_case_change:+.4f} |" for f in validation.folds]
        lines += ["", f"- whole set chooses **{whole}** (mean {validation.whole_set_mean:.4f}); held out by group: "
                  f"{validation.held_out_mean:.4f}; anchored: {validation.reference_mean:.4f}; free: "
                  f"{statistics.mean(scores['free'].values()):.4f}; before: {statistics.mean(before.values()):.4f}"]
        shown = {"held-out rules": held_out, whole: scores[whole], "anchored": scores["anchored"],
                 "free": scores["free"], **{name: scores[name] for name in RULES if name in scores}}
        for name, after in shown.items():
            lines += [f"- {name}: " + "; ".join(target_lines(before, after))]
        lines += ["", "The defaults rule (medsam_evaluation/default_rule.py) for each rule against the anchored "
                  "default (`RefineSettings` field):", ""]
        for name, field_names in RULES.items():
            if name in scores:
                check = check_spacing(5, {"anchored": scores["anchored"], name: scores[name]}, name,
                                      {c: case_group(c) for c in pairs})
                lines.append(f"- {name} (`{field_names}`): chosen in {check.folds_choosing} of {check.folds} "
                             f"leave-one-group-out folds; worst group {check.worst_group} "
                             f"{check.worst_group_change:+.4f}; worst case {check.worst_case} "
                             f"{check.worst_case_change:+.4f}; whole set {check.whole_set_change:+.4f}: "
                             f"{check.outcome}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--k", type=int, nargs="+", default=[2], help="corrected slices (default 2)")
    parser.add_argument("--spacing", type=int, default=5)
    parser.add_argument("--cache", metavar="FOLDER", help="keep the embeddings in this folder between runs")
    args = parser.parse_args()
    return run_study(args, lambda cases_json, piece: run(cases_json, args.out, piece, args.k, args.spacing, args.case,
                                                         args.cache),
                     study_report(report, lambda: adaptation_digests(args.spacing).values(), args.all_settings))


if __name__ == "__main__":
    sys.exit(main())
