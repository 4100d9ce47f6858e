"""What encoding ahead saves at the click: the demo lesion (3 key boxes), real LiteMedSAM on this machine's CPU.

For each setting: views encoded ahead (as a session does while the user draws: between the key boxes, then 3
slices past the newest), then the run's own encodings and seconds, against a one-shot run with an empty cache;
the masks must be identical. Prints a Markdown table (medians of ``--repeat`` runs).

    python benchmarks/encode_ahead_study.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))

from MedSAMSegmentLib import demo, io  # noqa: E402
from MedSAMSegmentLib.engine import EmbeddingCache  # noqa: E402
from MedSAMSegmentLib.models import load_model  # noqa: E402
from MedSAMSegmentLib.session import (
    SegmentationSession,  # noqa: E402
    run_segmentation,  # noqa: E402
)
from MedSAMSegmentLib.settings import SegmentationSettings  # noqa: E402

SETTINGS = {
    "defaults (zoom union, guide auto)": SegmentationSettings(modality="none"),
    "zoom best, guide off": SegmentationSettings(modality="none", zoom="best", guide="off"),
    "published (whole slices)": SegmentationSettings(modality="none", mr_rule="published", zoom="off", guide="off"),
    "propagate, defaults": SegmentationSettings(modality="none", strategy="propagate"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    image = io.read_image(demo.DEMO_IMAGE)
    keys = io.read_key_boxes([demo.DEMO_BOXES], image)
    model = load_model("lite", device="cpu")
    print(f"model: {model.acceleration}\n")
    print("| setting | views encoded ahead | ahead s | run: views encoded | run s | one-shot: views encoded | "
          "one-shot s | same mask |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, settings in SETTINGS.items():
        ahead_s, run_s, fresh_s, same = [], [], [], True
        for _ in range(args.repeat):
            session = SegmentationSession.open(model, image.array, 0, settings, cache=EmbeddingCache(),
                                               background=False, preview=False)
            session.set_boxes(keys, newest=keys.boxes[-1].slice_index)
            started = time.perf_counter()
            ahead = session.work_ahead(beyond=3)
            ahead_s.append(time.perf_counter() - started)
            result = session.result()
            run_s.append(result.seconds)
            fresh = run_segmentation(model, image.array, keys, settings, cache=EmbeddingCache())
            fresh_s.append(fresh.seconds)
            same = same and np.array_equal(result.mask, fresh.mask)
        print(f"| {name} | {ahead} | {statistics.median(ahead_s):.1f} | {result.encoded} | "
              f"{statistics.median(run_s):.2f} | {fresh.encoded} | {statistics.median(fresh_s):.1f} | "
              f"{'yes' if same else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
