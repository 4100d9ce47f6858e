"""The GUI stall meter: the program's own work between ticks counts, the time the thread waits for a busy CPU
does not (Linux's per-thread scheduler statistics)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from MedSAMSegmentLib.scene.gui_stalls import StallMeter, cpu_wait_seconds


def test_work_on_the_gui_thread_counts_as_a_stall():
    meter = StallMeter()
    meter.tick()
    started = time.thread_time()
    while time.thread_time() - started < 0.15:  # our own code holding the thread for 0.15 s of its CPU time
        pass
    assert meter.tick() >= 0.14
    time.sleep(0.05)  # waiting on a timer or a lock is the program's doing too
    assert meter.tick() >= 0.045
    assert meter.longest == max(meter.gaps) >= 0.14


#: A process that spins on core 0 for at most 20 s, after saying it has started.
SPIN = ("import os, sys, time; os.sched_setaffinity(0, {0}); print('spinning', flush=True); t = time.monotonic()\n"
        "while time.monotonic() - t < 20: pass")


@pytest.mark.skipif(not sys.platform.startswith("linux") or cpu_wait_seconds() is None,
                    reason="needs Linux's per-thread scheduler statistics")
def test_waiting_for_a_busy_cpu_is_not_a_stall():
    """Pinned to one core with four busy processes, a thread doing 5 ms of work a turn gets about a fifth of the
    core: its wall-clock gaps grow by its waits for the core, the meter's leave those waits out."""
    before = os.sched_getaffinity(0)
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, encoding="utf-8") for _ in range(4)]
    try:
        for hog in hogs:
            assert hog.stdout.readline().strip() == "spinning"
        os.sched_setaffinity(0, {0})
        meter, wall, last = StallMeter(), [], time.monotonic()
        waited = cpu_wait_seconds()
        for _ in range(40):
            spent = time.thread_time()
            while time.thread_time() - spent < 0.005:  # 5 ms of work a turn, sharing the core with the hogs
                pass
            meter.tick()
            now = time.monotonic()
            wall.append(now - last)
            last = now
        waited = cpu_wait_seconds() - waited
    finally:
        os.sched_setaffinity(0, before)
        for hog in hogs:
            hog.kill()
            hog.wait(10)
    assert waited > 0.2, f"the thread hardly waited for the core ({waited:.3f} s): the test did not load it"
    assert all(m <= w + 1e-3 for m, w in zip(meter.gaps, wall))
    assert max(meter.gaps) < max(wall)
    assert sum(wall) - sum(meter.gaps) == pytest.approx(waited, abs=0.05)
