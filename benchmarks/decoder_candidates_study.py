"""Study: ways to turn LiteMedSAM's per-slice logits into a 3D mask, judged by the defaults rule (issue 35).

Every candidate here reads the same thing: the decoder's logits for the published interpolated boxes on every
slice between the first and last key box (key boxes every 5 and every 10 slices from the reference, +3 px, as
``evaluate`` simulates them; real LiteMedSAM on the CPU, whole slices, MedSAM's intensity recipe). It differs from
MedSAM's mask (``logits > 0``) only in how the logits become a mask, so one decoding per case and spacing serves
them all (box test-time augmentation decodes two more boxes a slice):

* ``threshold=T``: ``logits > T`` (a lower threshold grows every mask);
* ``box_ellipse=A``: the sigmoid mixed with weight ``A`` with the ellipse inscribed in the slice's box, at 0.5;
* ``key_shape=A``: the logits plus ``A`` times the signed distance (pixels, clipped to +-10) interpolated
  between the masks of the two key slices around the slice (shape-based interpolation of the key masks);
* ``slice_smoothing=W``: each slice's sigmoid mixed with its two neighbours' with weight ``W`` each, at 0.5;
* ``majority3``: a pixel is in where at least two of the slice and its two neighbours have it;
* ``box_tta``: the sigmoid averaged over the box and the box scaled by 0.9 and 1.1 about its centre, at 0.5.

The records go to a JSON-lines file, one per case, spacing and candidate (a rerun skips what is there;
``--max-minutes`` runs it in pieces; ``--cache`` keeps the embeddings on disk so a rerun decodes only). Each
candidate is judged on its own against the published mask by :func:`medsam_evaluation.default_rule.check_spacing`
at both spacings. The parameters are those a first look at these same cases tried (2026-12-06), so a pass here is
optimistic; none is built into the product.

    python benchmarks/decoder_candidates_study.py --out docs/results/decoder_candidates/records.jsonl \\
        --cases ../shared/data/cases.json Evaluation/devset/cases.json --cache /tmp/medsam-embeddings
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from collections import defaultdict
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.cases import load_cases, modality_setting  # noqa: E402
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
from MedSAMSegmentLib.geometry import interpolate_boxes, put_slice  # noqa: E402
from MedSAMSegmentLib.metrics import dice  # noqa: E402
from MedSAMSegmentLib.settings import PUBLISHED, ModelSettings, SegmentationSettings  # noqa: E402

SPACINGS = (5, 10)
MODEL = ModelSettings(model="lite", device="cpu")
MARGIN = 3
#: Box scales averaged by ``box_tta`` (1.0 is the slice's own decode).
TTA_SCALES = (0.9, 1.1)


@dataclasses.dataclass
class SliceStack:
    """One case's decode at one spacing: ``logits`` (S, H, W) for ``slices`` (consecutive), their ``boxes``
    (S, 4), the ``key_slices``, and ``tta`` ({scale: logits (S, H, W)}) for the scaled boxes."""

    slices: List[int]
    logits: np.ndarray
    boxes: np.ndarray
    key_slices: List[int]
    tta: Dict[float, np.ndarray]

    @property
    def probabilities(self) -> np.ndarray:
        return _sigmoid(self.logits)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))


def _smoothed(p: np.ndarray, weight: float) -> np.ndarray:
    q = p.copy()
    q[1:-1] = (1 - 2 * weight) * p[1:-1] + weight * (p[:-2] + p[2:])
    return q


def _box_ellipses(stack: SliceStack) -> np.ndarray:
    rows, cols = np.mgrid[0 : stack.logits.shape[1], 0 : stack.logits.shape[2]]
    ellipses = np.zeros(stack.logits.shape, dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(stack.boxes):
        rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        ellipses[i] = ((cols - (x0 + x1) / 2) / rx) ** 2 + ((rows - (y0 + y1) / 2) / ry) ** 2 <= 1
    return ellipses


def _key_shape(stack: SliceStack) -> np.ndarray:
    """Signed distance (inside positive) interpolated between the key slices' masks."""
    from scipy.ndimage import distance_transform_edt

    def signed(mask):
        if not mask.any():
            return np.full(mask.shape, -10.0)
        return np.where(mask, distance_transform_edt(mask), -distance_transform_edt(~mask))

    index = {s: i for i, s in enumerate(stack.slices)}
    distances = {k: signed(stack.logits[index[k]] > 0) for k in stack.key_slices}
    prior = np.zeros(stack.logits.shape)
    for i, s in enumerate(stack.slices):
        lower = max(k for k in stack.key_slices if k <= s)
        upper = min(k for k in stack.key_slices if k >= s)
        t = 0.0 if upper == lower else (s - lower) / (upper - lower)
        prior[i] = (1 - t) * distances[lower] + t * distances[upper]
    return np.clip(prior, -10, 10)


def _majority(masks: np.ndarray) -> np.ndarray:
    out = masks.copy()
    out[1:-1] = (masks[:-2].astype(np.int8) + masks[1:-1] + masks[2:]) >= 2
    return out


#: Candidate name -> masks (S, H, W) from a :class:`SliceStack`; ``published`` is MedSAM's mask.
CANDIDATES: Dict[str, Callable[[SliceStack], np.ndarray]] = {
    "published": lambda st: st.logits > 0,
    **{f"threshold={t}": (lambda st, t=t: st.logits > t) for t in (-0.5, -1.0)},
    **{f"box_ellipse={a}": (lambda st, a=a: (1 - a) * st.probabilities + a * _box_ellipses(st) > 0.5)
       for a in (0.1, 0.2)},
    **{f"key_shape={a}": (lambda st, a=a: st.logits + a * _key_shape(st) > 0) for a in (0.5, 1.0)},
    **{f"slice_smoothing={w}": (lambda st, w=w: _smoothed(st.probabilities, w) > 0.5) for w in (0.15, 0.25)},
    "majority3": lambda st: _majority(st.logits > 0),
    "box_tta": lambda st: (st.probabilities + sum(_sigmoid(v) for v in st.tta.values())) / (1 + len(st.tta)) > 0.5,
}


def digests() -> Dict[str, str]:
    model = model_fingerprint(MODEL)
    return {name: settings_digest({"study": "decoder_candidates", "model": model, "margin": MARGIN,
                                   "candidate": name, "tta_scales": list(TTA_SCALES) if name == "box_tta" else None})
            for name in CANDIDATES}


def record_key(case, spacing: int, candidate: str) -> list:
    return [case.name, settings_digest(case_fingerprint(case)), spacing, candidate]


def _scaled(box, factor: float, size) -> list:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hx, hy = (box[2] - box[0]) / 2 * factor, (box[3] - box[1]) / 2 * factor
    return [max(0.0, cx - hx), max(0.0, cy - hy), min(size[1] - 1.0, cx + hx), min(size[0] - 1.0, cy + hy)]


def decode_stack(segmenter, keys) -> SliceStack:
    """The published interpolated boxes' logits on every slice between the key boxes (and the scaled boxes')."""
    import torch

    boxes = interpolate_boxes(keys.boxes, PUBLISHED["box_sizes"])
    slices = sorted(boxes)
    size = segmenter.slice_size
    model = segmenter.model

    def logits_for(box_list):
        out = []
        for start in range(0, len(slices), 8):
            chunk = slices[start : start + 8]
            embeddings = torch.from_numpy(np.stack([segmenter.embedding(s) for s in chunk]))
            logits, _ = model.decode(embeddings, np.array(box_list[start : start + 8]), size)
            out.extend(np.asarray(lg, dtype=np.float32) for lg in logits)
        return np.stack(out)

    own = [list(boxes[s]) for s in slices]
    tta = {f: logits_for([_scaled(b, f, size) for b in own]) for f in TTA_SCALES}
    return SliceStack(slices, logits_for(own), np.array(own), sorted(k.slice_index for k in keys.boxes), tta)


def run(cases_json, out: str, piece: Piece, case_filter=None, cache_folder=None) -> int:
    """Run the cases not recorded in ``out``; returns the cases left when ``piece`` stopped."""
    records, digest = CaseRecords(out), digests()
    loop = CaseLoop(sorted(load_cases(cases_json, case_filter), key=lambda case: case.image), piece,
                    lambda case: all(records.get(digest[c], record_key(case, s, c)) for s in SPACINGS
                                     for c in CANDIDATES), where=out)
    from MedSAMSegmentLib.models import load_from_settings

    model = load_from_settings(MODEL) if loop.todo else None
    for case in loop:
        volume = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        reference = reference.astype(bool)
        settings = SegmentationSettings(modality=modality_setting(case, volume.array), **PUBLISHED)
        cache = EmbeddingCache(cache_folder, max_memory_bytes=1 << 30)
        segmenter = pipeline.make_segmenter(model, volume.array, case.slice_axis, settings, cache=cache,
                                            is_colour=volume.is_colour)
        for spacing in SPACINGS:
            stack = decode_stack(segmenter, simulate_key_boxes(reference, case.slice_axis, spacing, margin=MARGIN))
            for name, candidate in CANDIDATES.items():
                if records.get(digest[name], record_key(case, spacing, name)):
                    continue
                mask = np.zeros(reference.shape, dtype=bool)
                for s, slice_mask in zip(stack.slices, candidate(stack)):
                    put_slice(mask, case.slice_axis, s, slice_mask)
                records.add(digest[name], record_key(case, spacing, name), {
                    "case": case.name, "group": case.group, "spacing": spacing, "candidate": name,
                    "dsc": round(dice(mask, reference), 5)})
        print(f"{case.name}: " + ", ".join(
            f"every {s} {records.get(digest['published'], record_key(case, s, 'published'))['dsc']:.3f}"
            for s in SPACINGS), flush=True)
    return loop.left


def report(records: list) -> str:
    """Each candidate judged on its own against the published mask, at both spacings."""
    scores = defaultdict(lambda: defaultdict(dict))
    groups = {}
    for r in records:
        scores[r["spacing"]][r["candidate"]][r["case"]] = r["dsc"]
        groups[r["case"]] = r["group"]
    complete = set.intersection(*(set(scores[s][c]) for s in SPACINGS for c in CANDIDATES))
    lines = [f"{len(complete)} cases in {len({groups[c] for c in complete})} groups; mean DSC, and the rule "
             "(medsam_evaluation/default_rule.py) against the published mask", "",
             "| candidate | every | mean DSC | whole set change | folds choosing it | worst held-out group change | "
             "worst case change | verdict |", "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    judged = len({groups[c] for c in complete}) >= 2  # leave one group out needs two
    for name in CANDIDATES:
        for spacing in SPACINGS:
            mine = {c: scores[spacing][name][c] for c in complete}
            if name == "published" or not judged:
                lines.append(f"| `{name}` | {spacing} | {statistics.mean(mine.values()):.4f} | | | | | |")
                continue
            pair = {"published": {c: scores[spacing]["published"][c] for c in complete}, name: mine}
            check = check_spacing(spacing, pair, name, {c: groups[c] for c in complete})
            lines.append(f"| `{name}` | {spacing} | {statistics.mean(mine.values()):.4f} | "
                         f"{check.whole_set_change:+.4f} | {check.folds_choosing}/{check.folds} | "
                         f"{check.worst_group} {check.worst_group_change:+.4f} | {check.worst_case} "
                         f"{check.worst_case_change:+.3f} | {check.outcome} |")
    if not judged:
        lines += ["", "(the rule needs cases from two groups or more)"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--cache", metavar="FOLDER", help="keep the embeddings in this folder between runs")
    args = parser.parse_args()
    return run_study(args, lambda cases_json, piece: run(cases_json, args.out, piece, args.case, args.cache),
                     study_report(report, lambda: digests().values(), args.all_settings))


if __name__ == "__main__":
    sys.exit(main())
