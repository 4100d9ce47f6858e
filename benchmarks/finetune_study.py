"""Study: does a decoder fine-tuned on other revised cases (``medsam-segment finetune``) segment a new case better?

Every development case is a revised case (its reference mask). The examples ``finetune`` learns from are collected
from every case once (:func:`medsam_evaluation.cohort.cohort_examples`, the command's defaults). Then heads are
trained as the command trains them:

* **leave one group out**: for each case group (CT lesions, BraTS, spinal cord, TotalSegmentator organs), a head
  trained on the other groups' cases, scored on the held-out group's cases: a cohort of other targets;
* **within group**: each group's cases split in two halves (alternately, in the file's order); a head trained on
  one half is scored on the other (for example half of BraTS to the other half): a cohort of the same target.

Each fine-tune of :data:`VARIANTS` (the command's defaults first) is trained both ways. A case is scored as
``evaluate`` scores it: key boxes every ``--spacing`` slices from the reference (+3 px), one run with the
defaults, DSC over the volume; the bundled decoder and each head decode from the same cached embeddings. Records
go to a JSON-lines file, one per case, keyed by the study's settings (the variants, the spacing, the model and every
case a head may train on): a rerun skips the cases there, ``--max-minutes`` runs it in pieces (docs/evaluation.md,
"Long runs in pieces"; each piece collects the examples and trains the heads again before its cases).

    python benchmarks/finetune_study.py --out /tmp/finetune.jsonl [--spacing 5] [--case brats]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from collections import defaultdict
from typing import Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.cases import default_cases_json, load_cases  # noqa: E402
from medsam_evaluation.cohort import case_settings, cohort_examples  # noqa: E402
from medsam_evaluation.cross_validation import case_group  # noqa: E402
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
from MedSAMSegmentLib.engine import EmbeddingCache, VolumeSegmenter  # noqa: E402
from MedSAMSegmentLib.learning.decoder_training import AdaptedModel  # noqa: E402
from MedSAMSegmentLib.learning.finetune import FinetuneSettings, fine_tune, split_for_validation  # noqa: E402
from MedSAMSegmentLib.metrics import dice  # noqa: E402
from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings  # noqa: E402

#: A group is split in halves for the within-group score when it has at least this many cases.
WITHIN_GROUP_MIN = 4
#: One case's embeddings stay in memory for its three runs.
CACHE_BYTES = 4 << 30


def folds(names: List[str]) -> Dict[str, Dict[str, List[str]]]:
    """{scheme: {test case: the cases its head trains on}} for ``logo`` and ``within`` (see the module)."""
    groups: Dict[str, List[str]] = defaultdict(list)
    for name in names:
        groups[case_group(name)].append(name)
    schemes: Dict[str, Dict[str, List[str]]] = {"logo": {}, "within": {}}
    for group, members in groups.items():
        others = [n for n in names if case_group(n) != group]
        for name in members:
            schemes["logo"][name] = others
        if len(members) >= WITHIN_GROUP_MIN:
            halves = (members[0::2], members[1::2])
            for half, other in ((halves[0], halves[1]), (halves[1], halves[0])):
                for name in half:
                    schemes["within"][name] = other
    return schemes


#: The fine-tunes compared: the command's defaults first, then the variants studied.
VARIANTS = {
    "annotator boxes": FinetuneSettings(),
    "interpolated boxes": FinetuneSettings(boxes="interpolated"),
    "interpolated boxes, lr 3e-5": FinetuneSettings(boxes="interpolated", learning_rate=3e-5),
}
#: The settings that decide which examples are collected (variants that share them share the examples).
COLLECTION_FIELDS = ("slices_per_case", "margin", "boxes", "key_spacing", "jitters", "jitter", "validation_every",
                     "seed")


def collection_key(settings: FinetuneSettings) -> tuple:
    return tuple(getattr(settings, name) for name in COLLECTION_FIELDS)


#: The model whose decoder is fine-tuned, and the annotator's margin.
MODEL = ModelSettings(model="lite", device="cpu")
MARGIN = 3


def study_digest(all_cases, spacing: int) -> str:
    """The settings digest of the records: the variants, the spacing and margin, the model, the run's settings and
    every case of the set (the heads train on them)."""
    return settings_digest({"study": "finetune", "model": model_fingerprint(MODEL), "spacing": spacing,
                            "margin": MARGIN, "variants": VARIANTS, "settings": SegmentationSettings(),
                            "cases": [case_fingerprint(case) for case in all_cases]})


def record_key(case) -> list:
    return [case.name, settings_digest(case_fingerprint(case))]


def run(cases_json: str, out: str, piece: Piece, spacing: int, case_filter=None) -> int:
    """Score the cases of ``cases_json`` not recorded in ``out``; returns the cases left when ``piece`` stopped."""
    all_cases = load_cases(cases_json)
    records, digest = CaseRecords(out), study_digest(all_cases, spacing)
    loop = CaseLoop(load_cases(cases_json, case_filter), piece, lambda case: records.get(digest, record_key(case)),
                    where=out)
    if not loop.todo:
        return 0
    from MedSAMSegmentLib.models import load_from_settings
    model = load_from_settings(MODEL)
    collections = {collection_key(s): s for s in VARIANTS.values()}
    print(f"collecting examples from {len(all_cases)} cases, {len(collections)} way(s)", flush=True)
    examples = {key: cohort_examples(all_cases, model, settings, log=lambda message: None)
                for key, settings in collections.items()}
    schemes = folds([c.name for c in all_cases])
    heads: Dict[tuple, object] = {}

    def head_for(label: str, training: List[str]):
        key = (label, tuple(training))
        if key not in heads:
            settings = VARIANTS[label]
            collected = examples[collection_key(settings)]
            # The study chose each head's epoch on held-out slices of its training cases (its records were made so).
            train, validation, _ = split_for_validation({name: collected[name] for name in training},
                                                        dataclasses.replace(settings, hold_out="slices"))
            result = fine_tune(model, train, validation, settings)
            print(f"  {label}, head on {len(training)} cases: held-out slices {result.base_validation_dice:.3f} -> "
                  f"{result.validation_dice:.3f} (epoch {result.best_epoch}, {result.seconds:.0f} s)", flush=True)
            heads[key] = (result, AdaptedModel(model, result.head, f"{len(training)} cases"))
        return heads[key]

    for case in loop:
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        segmentation = case_settings(case, image.array)
        segmenter = pipeline.make_segmenter(model, image.array, case.slice_axis, segmentation,
                                            cache=EmbeddingCache(None, max_memory_bytes=CACHE_BYTES))
        keys = simulate_key_boxes(reference, case.slice_axis, spacing, margin=MARGIN)
        record = {"case": case.name, "group": case_group(case.name), "spacing": spacing,
                  "base": dice(segmenter.segment(keys, segmentation).mask, reference), "variants": {}}
        for label, settings in VARIANTS.items():
            scores = record["variants"][label] = {"settings": dataclasses.asdict(settings)}
            for scheme, training_of in schemes.items():
                if case.name not in training_of:
                    continue
                result, adapted = head_for(label, training_of[case.name])
                tuned = VolumeSegmenter(adapted, segmenter.volume, case.slice_axis, cache=segmenter.cache)
                scores[scheme] = dice(tuned.segment(keys, segmentation).mask, reference)
                scores[f"{scheme}_validation"] = [result.base_validation_dice, result.validation_dice]
        records.add(digest, record_key(case), record)
        print(f"{case.name}: bundled {record['base']:.3f}; " + "; ".join(
            f"{label}: other groups {v.get('logo', float('nan')):.3f}, same group {v.get('within', float('nan')):.3f}"
            for label, v in record["variants"].items()), flush=True)
    return loop.left


def report(records: list) -> str:
    """The tables of ``records`` (:func:`medsam_evaluation.study_cli.study_records`)."""
    labels = list(records[0]["variants"])
    lines = [f"Fine-tuned decoder head against the bundled decoder, key boxes every {records[0]['spacing']} slices "
             f"(mean DSC; {len(records)} cases). LOGO: the head trained on the other groups' cases; within: on the "
             "other half of the case's own group.", "",
             "| group | cases | bundled | " + " | ".join(f"{label}: LOGO | within" for label in labels) + " |",
             "| --- | ---: | ---: | " + " | ".join("---: | ---:" for _ in labels) + " |"]
    groups = sorted({r["group"] for r in records})
    for group in groups + ["all"]:
        rows = [r for r in records if group == "all" or r["group"] == group]
        cells = [group, str(len(rows)), f"{statistics.mean(r['base'] for r in rows):.4f}"]
        for label in labels:
            for scheme in ("logo", "within"):
                scored = [r for r in rows if scheme in r["variants"][label]]
                if scored:
                    change = statistics.mean(r["variants"][label][scheme] - r["base"] for r in scored)
                    cells.append(f"{change:+.4f}")
                else:
                    cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\n(changes against the bundled decoder on the same cases)")
    for label in labels:
        for scheme in ("logo", "within"):
            scored = [r for r in records if scheme in r["variants"][label]]
            if not scored:
                continue
            changes = {r["case"]: r["variants"][label][scheme] - r["base"] for r in scored}
            worst, best = min(changes, key=changes.get), max(changes, key=changes.get)
            lines.append(f"- {label}, {scheme}: largest loss {changes[worst]:+.4f} ({worst}), largest gain "
                         f"{changes[best]:+.4f} ({best}); {sum(c > 0 for c in changes.values())} of "
                         f"{len(changes)} cases gain")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--spacing", type=int, default=5, help="key boxes every N slices (default 5)")
    args = parser.parse_args()
    def digests():
        cases_json = default_cases_json(args.cases)
        return {study_digest(load_cases(cases_json), args.spacing)} if cases_json else set()

    return run_study(args, lambda cases_json, piece: run(cases_json, args.out, piece, args.spacing, args.case),
                     study_report(report, digests, args.all_settings))


if __name__ == "__main__":
    sys.exit(main())
