"""MR intensity rule on the z-scored BraTS cases: ``mr_rule`` published vs auto, box on the slice.

Encoding every target slice of 12 BraTS cases twice is beyond a 2-core budget, so this samples every
``--every``-th target slice of each case, prompts it with the annotator's box (mask box + 3 px) through the
engine, and reports DSC pooled over the sampled slices (sum of overlaps / sum of sizes) per case and rule. One record
per case goes to ``--out``, keyed by the settings (a rerun skips what is there; ``--max-minutes`` runs it in pieces:
docs/evaluation.md, "Long runs in pieces").

    python benchmarks/accuracy_mr_rule.py --cases ../shared/data/cases.json --case brats --every 4
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "MedSAMSegment"), os.path.join(REPO, "Evaluation")]

from medsam_evaluation import cases as evaluation_cases  # noqa: E402
from medsam_evaluation import simulate  # noqa: E402
from medsam_evaluation.resumable import (  # noqa: E402
    CaseLoop,
    CaseRecords,
    Piece,
    PieceSettings,
    case_fingerprint,
    model_fingerprint,
    settings_digest,
)
from MedSAMSegmentLib import io, pipeline  # noqa: E402
from MedSAMSegmentLib.geometry import take_slice  # noqa: E402
from MedSAMSegmentLib.models import load_from_settings  # noqa: E402
from MedSAMSegmentLib.settings import ModelSettings, add_arguments, from_arguments  # noqa: E402

MODEL = ModelSettings(model="lite", device="cpu")
RULES = ("published", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=os.path.join("..", "shared", "data", "cases.json"))
    parser.add_argument("--case", action="append", default=None)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--cache", default="/tmp/acc_cache")
    parser.add_argument("--out", default="/tmp/acc_mr.jsonl")
    add_arguments(parser, PieceSettings)
    args = parser.parse_args()
    from MedSAMSegmentLib.engine import EmbeddingCache

    records = CaseRecords(args.out)
    digest = settings_digest({"study": "accuracy_mr_rule", "model": model_fingerprint(MODEL), "every": args.every,
                              "rules": RULES, "margin": simulate.DEFAULT_MARGIN})

    def key(case):
        return [case.name, settings_digest(case_fingerprint(case))]

    loop = CaseLoop(evaluation_cases.load_cases(args.cases, args.case or ["brats"]),
                    Piece(from_arguments(PieceSettings, args)), lambda case: records.get(digest, key(case)),
                    where=args.out)
    model = load_from_settings(MODEL) if loop.todo else None
    cache = EmbeddingCache(args.cache)
    for case in loop:
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        axis = case.slice_axis
        present = simulate.target_slices(reference, axis)[:: args.every]
        row = {"case": case.name, "slices": len(present)}
        for rule in RULES:
            settings = pipeline.SegmentationSettings(modality="MR", mr_rule=rule)
            segmenter = pipeline.make_segmenter(model, image.array, axis, settings, cache=cache)
            boxes = {int(s): simulate.annotator_box(take_slice(reference, axis, int(s))) for s in present}
            decoded = segmenter.decode(boxes)
            overlap = total = 0
            for s, (mask, _) in decoded.items():
                ref = take_slice(reference, axis, s)
                overlap += int((mask & ref).sum())
                total += int(mask.sum() + ref.sum())
            row[rule] = round(2 * overlap / max(total, 1), 4)
            cache.clear_memory()
        records.add(digest, key(case), row)
        print(row, flush=True)
    if loop.left:
        return
    rows = CaseRecords(args.out).of({digest})
    print("mean published", np.mean([r["published"] for r in rows]), "auto", np.mean([r["auto"] for r in rows]))


if __name__ == "__main__":
    main()
