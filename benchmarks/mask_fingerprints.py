"""Mask fingerprints: the sha256 of every development case's mask (the defaults, key boxes every 5 slices from the
reference +3 px), one JSON line per case, to show that a change of structure changes no mask.

Run it once with each checkout's code first on the path (``--repo``), then compare the two files. Both runs may
share ``--cache`` (embeddings are keyed by model and pixels), so the second run costs decoder time only; the
demo (``medsam-segment demo``, no cache) checks the encoder path. A rerun skips the cases already in ``--out``.

    python benchmarks/mask_fingerprints.py --repo /path/to/old/checkout --out old.jsonl --cache /tmp/fp_cache
    python benchmarks/mask_fingerprints.py --repo . --out new.jsonl --cache /tmp/fp_cache
    python benchmarks/mask_fingerprints.py --compare old.jsonl new.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_FOLDERS = ("MedSAMSegment", "Evaluation", "Batch", "Server")
SPACING = 5


def use_code_of(repo: str) -> None:
    """Put ``repo``'s packages first on the path: what is imported after this is that checkout's code."""
    sys.path[:0] = [os.path.join(repo, folder) for folder in PACKAGE_FOLDERS]


def read_records(path: str) -> Dict[str, dict]:
    """Case name -> its record, from a fingerprints file (empty when there is none; a partial last line, as a
    stopped run leaves, is dropped by ``resumable.CaseRecords``)."""
    from medsam_evaluation.resumable import CaseRecords

    return {record["case"]: record for record in CaseRecords(path).of(None)}


def compare(first: str, second: str) -> int:
    """Print the cases whose masks differ; 0 when every case of both files has the same mask, else 1."""
    old, new = read_records(first), read_records(second)
    differing = sorted(name for name in set(old) & set(new) if old[name]["sha256"] != new[name]["sha256"])
    missing = sorted(set(old) ^ set(new))
    for name in differing:
        print(f"differs: {name} ({old[name]['voxels']} vs {new[name]['voxels']} voxels)")
    for name in missing:
        print(f"in one file only: {name}")
    print(f"{len(set(old) & set(new)) - len(differing)} of {len(set(old) | set(new))} cases give the same mask")
    return 1 if differing or missing else 0


def fingerprint(cases_json: str, out: str, cache_dir: Optional[str]) -> None:
    """Append one record per case not yet in ``out`` (``resumable.CaseRecords``: a rerun skips them)."""
    import numpy as np
    from medsam_evaluation import simulate
    from medsam_evaluation.cases import load_cases
    from medsam_evaluation.config import EvaluationConfig
    from medsam_evaluation.per_case import CaseRun
    from medsam_evaluation.resumable import CaseRecords, settings_digest
    from MedSAMSegmentLib import EmbeddingCache, load_model

    config = EvaluationConfig(cases_json)
    settings = settings_digest({"spacing": SPACING, "margin": config.margin, "jitter": config.jitter,
                                "seed": config.seed})
    records = CaseRecords(out)
    model, cache = load_model("lite"), EmbeddingCache(cache_dir)
    for case in load_cases(cases_json):
        if records.get(settings, [case.name]) is not None:
            continue
        run = CaseRun(case, config, model, cache, None, None)
        keys = simulate.simulate_key_boxes(run.reference, run.axis, SPACING, config.margin, config.jitter,
                                           config.seed)
        mask = np.ascontiguousarray(run.segmenter.segment(keys, run.settings).mask.astype(np.uint8))
        record = records.add(settings, [case.name], {
            "case": case.name, "sha256": hashlib.sha256(mask.tobytes()).hexdigest(), "voxels": int(mask.sum())})
        print(f"{case.name}: {record['voxels']} voxels", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=REPO, help="the checkout whose code runs (default: this one)")
    parser.add_argument("--cases", default=os.path.join(os.path.dirname(REPO), "shared", "data", "cases.json"))
    parser.add_argument("--out", help="fingerprints file (JSON lines; a rerun skips its cases)")
    parser.add_argument("--cache", help="embedding cache folder, shared between the two runs")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two fingerprints files")
    args = parser.parse_args(argv)
    use_code_of(os.path.abspath(args.repo))
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        parser.error("--out is required unless --compare is given")
    fingerprint(args.cases, args.out, args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
