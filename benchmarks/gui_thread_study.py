"""Why the Slicer effect runs the model in a worker process: how long a GUI-like main thread is kept waiting.

Each mode runs in a fresh interpreter: a 10 ms ticker on the main thread while LiteMedSAM is imported, loaded and
run on the bundled demo, either in a worker *thread* of the same process (the interpreter lock is shared) or in
the worker *process* the effect uses (``BackgroundSegmentation``, polled from the ticker). Prints a table of the
gaps between ticks. Run from the repository root: ``python benchmarks/gui_thread_study.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(os.path.dirname(HERE), "MedSAMSegment")

THREAD = """
import json, sys, threading, time
from MedSAMSegmentLib import demo, io, models, pipeline
from MedSAMSegmentLib.session import run_segmentation
done = threading.Event()
def work():
    image = io.read_image(demo.DEMO_IMAGE)
    model = models.load_model("lite", None, "cpu")
    run_segmentation(model, image.array, demo.demo_key_boxes(image.shape),
                              pipeline.SegmentationSettings(modality="none"))
    done.set()
threading.Thread(target=work, daemon=True).start()
"""

PROCESS = """
import json, sys, time
from MedSAMSegmentLib import demo, io, pipeline
from MedSAMSegmentLib.remote.background_run import BackgroundSegmentation
from MedSAMSegmentLib.service import ModelSpec
image = io.read_image(demo.DEMO_IMAGE)
background = BackgroundSegmentation()
background.start("demo", lambda: image.array.copy(), image.ijk_to_ras(), demo.demo_key_boxes(image.shape),
                 ModelSpec(device="cpu"), pipeline.SegmentationSettings(modality="none"))
class Done:
    finished = False
    def is_set(self):
        self.finished = self.finished or any(e.kind in ("finished", "failed", "cancelled") for e in background.poll())
        return self.finished
done = Done()
"""

TICKER = """
gaps, last, started = [], time.perf_counter(), time.perf_counter()
while not done.is_set():
    time.sleep(0.01)
    now = time.perf_counter()
    gaps.append(now - last)
    last = now
print(json.dumps({"seconds": time.perf_counter() - started, "ticks": len(gaps), "max_ms": max(gaps) * 1000,
                  "over_100ms": sum(g > 0.1 for g in gaps)}))
sys.stdout.flush()
"""


def measure(setup: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (LIB, os.environ.get("PYTHONPATH", "")) if p))
    run = subprocess.run([sys.executable, "-c", setup + TICKER], capture_output=True, text=True, env=env, check=False)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the measurement failed: {run.stderr.strip().splitlines()[-1:]}")
    return json.loads(lines[-1])


def main() -> None:
    rows = [("worker thread (same process)", measure(THREAD)), ("worker process (the effect's path)", measure(PROCESS))]
    print("| model work in | run incl. model load, s | ticks | longest gap, ms | gaps over 100 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, row in rows:
        print(f"| {name} | {row['seconds']:.1f} | {row['ticks']} | {row['max_ms']:.0f} | {row['over_100ms']} |")


if __name__ == "__main__":
    main()
