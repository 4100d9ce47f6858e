"""The stand-in's event loop: QTimer timeouts served in order, every tick and its duration recorded, and the
holder of the application that widgets report their slot calls to."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional

from MedSAMSegmentLib.scene.gui_stalls import cpu_wait_seconds, less_cpu_wait

if TYPE_CHECKING:
    from .application import SlicerApplicationStandin
    from .qt_core import QTimer


@dataclass
class Tick:
    """One timer timeout served by the loop: when it started (``time.monotonic``), how long its slots held the GUI
    thread (less the time the thread waited for a CPU meanwhile: the machine's load, not the program's doing;
    ``MedSAMSegmentLib.scene.gui_stalls``), and the thread's CPU wait so far when it started (None where not known)."""

    timer: QTimer
    started: float
    seconds: float
    cpu_waited: Optional[float] = None


class EventLoop:
    """Serves QTimer timeouts; records every tick and the longest callback.

    Repeating timers follow Qt's ``QTimerInfoList::activateTimers`` (qtbase src/corelib/kernel/qtimerinfo_unix.cpp):
    after a timeout the next one is due one interval after the previous due time, or one interval from now when
    the loop has fallen behind.
    """

    def __init__(self, app: SlicerApplicationStandin) -> None:
        self.app = app
        self.timers: List[QTimer] = []
        self.ticks: List[Tick] = []
        self._serving = False

    def add(self, timer: QTimer) -> None:
        if timer not in self.timers:
            self.timers.append(timer)

    def remove(self, timer: QTimer) -> None:
        if timer in self.timers:
            self.timers.remove(timer)

    def serve_due(self) -> int:
        """Fire every active timer that is due now (once each); returns how many fired."""
        if self._serving:  # processEvents() from inside a timer slot: Qt does not re-enter that timer either
            return 0
        self._serving = True
        fired = 0
        try:
            now = time.monotonic()
            for timer in [t for t in self.timers if t._active and t._due <= now]:
                if not timer._active:
                    continue
                if timer._single:
                    timer._active = False
                    self.remove(timer)
                else:
                    timer._due += timer.interval / 1000.0
                    if timer._due < now:
                        timer._due = now + timer.interval / 1000.0
                started, waited = time.monotonic(), cpu_wait_seconds()
                timer._emit("timeout")
                seconds = less_cpu_wait(time.monotonic() - started, waited, cpu_wait_seconds())
                self.ticks.append(Tick(timer, started, seconds, waited))
                fired += 1
        finally:
            self._serving = False
        return fired

    def next_due(self) -> Optional[float]:
        dues = [t._due for t in self.timers if t._active]
        return min(dues) if dues else None

    def run_until(self, predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.002) -> bool:
        """Serve due timers (sleeping in small steps otherwise) until ``predicate()`` is true or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return bool(predicate())
            if not self.serve_due():
                due = self.next_due()
                wait = step_s if due is None else min(step_s, max(0.0, due - time.monotonic()))
                time.sleep(max(wait, 0.0005))

    def run_for(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    # -- what tests read ------------------------------------------------------------------------------------
    def ticks_of(self, timer: QTimer, since: float = 0.0) -> List[Tick]:
        return [t for t in self.ticks if t.timer is timer and t.started >= since]

    @staticmethod
    def gaps(ticks: List[Tick]) -> List[float]:
        """Seconds between the starts of consecutive ticks, less the GUI thread's waits for a CPU in between."""
        return [less_cpu_wait(b.started - a.started, a.cpu_waited, b.cpu_waited) for a, b in zip(ticks, ticks[1:])]

    def longest_callback(self, since: float = 0.0) -> float:
        return max((t.seconds for t in self.ticks if t.started >= since), default=0.0)


class _ApplicationHolder:
    """The stand-in application that the widgets report to (set by :func:`install`)."""

    app: Optional[SlicerApplicationStandin] = None

    def invoke(self, slot, args, what, failed=None):
        if self.app is None:
            return slot(*args)
        return self.app.invoke(slot, args, what, failed)


APP = _ApplicationHolder()


def _loop() -> EventLoop:
    if APP.app is None:
        raise RuntimeError("the Slicer stand-in is not installed")
    return APP.app.loop
