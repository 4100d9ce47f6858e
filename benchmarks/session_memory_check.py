"""Peak memory of an interactive session on the 512x512x300 CT (the benchmark's large case: the development set's
TotalSegmentator liver resampled to that grid, a 100-slice target, key boxes every 5 slices).

The key boxes arrive as events on a :class:`SegmentationSession` with the defaults (encoding ahead, preview,
speculation: every embedding stays in the session's cache, up to its bound), then the result is read; the process
reports its peak resident memory (``ru_maxrss``, the session's process only: the CT is made in another) and the
seconds taken. The goal is under 2 GB.

    python benchmarks/session_memory_check.py [--cases ../shared/data/cases.json] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "MedSAMSegment"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Evaluation"))

from medsam_evaluation.benchmark import make_large_ct  # noqa: E402
from medsam_evaluation.cases import default_cases_json  # noqa: E402
from MedSAMSegmentLib import io  # noqa: E402
from MedSAMSegmentLib.models import load_model  # noqa: E402
from MedSAMSegmentLib.session import SegmentationSession  # noqa: E402
from MedSAMSegmentLib.settings import SegmentationSettings  # noqa: E402


def run_session(image_path: str, boxes_path: str, n_target: int, interval: float) -> None:
    """The session itself (in a process of its own: its peak is the session's, not the CT's making)."""
    image = io.read_image(image_path)
    keys = io.read_key_boxes([boxes_path], image)
    model = load_model("lite", device="cpu")
    started = time.perf_counter()
    with SegmentationSession.open(model, image.array, keys.slice_axis, SegmentationSettings(modality="CT")) as session:
        for n, key in enumerate(keys.sorted()):
            time.sleep(max(0.0, started + n * interval - time.perf_counter()))
            session.add_box(key.slice_index, key.box)
        result = session.result()
        stats = session.stats
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"{image.array.shape[2]}x{image.array.shape[1]}x{image.array.shape[0]} CT, {n_target}-slice target, "
          f"{len(keys.boxes)} key boxes every {interval:g} s: {seconds:.1f} s, {len(result.boxes)} slices, "
          f"{stats.encoded_ahead} views encoded ahead, {stats.encoded_in_results} at the result; "
          f"peak memory (max RSS) {peak:.0f} MiB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=None)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between key boxes (default 0.5)")
    parser.add_argument("--session", nargs=3, metavar=("IMAGE", "BOXES", "N_TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.session:
        run_session(args.session[0], args.session[1], int(args.session[2]), args.interval)
        return 0
    cases_json = default_cases_json(args.cases)
    if not cases_json:
        print("no development set found; give --cases", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="medsam-session-memory-") as folder:
        image_path, boxes_path, n_target = make_large_ct(cases_json, folder)
        return subprocess.call([sys.executable, __file__, "--interval", str(args.interval), "--session", image_path,
                                boxes_path, str(n_target)])


if __name__ == "__main__":
    sys.exit(main())
