"""How long the program held up the GUI thread: the gaps between its ticks, less the time it waited for a CPU.

A gap between two ticks of the GUI thread's loop is the sum of what the thread did (our code, Qt), what it waited
on (a lock, the GIL held by another thread of ours, a blocking read) and the time the operating system kept it
waiting for a free core. Only the first two are the program's doing; the third is the machine's load (another
process on a busy machine). On Linux the kernel counts the third per thread (``/proc/thread-self/schedstat``, its
second field: nanoseconds spent runnable but not running), so :class:`StallMeter` takes it out; elsewhere the gap
is the plain wall-clock gap, which can only overstate a stall.
"""

from __future__ import annotations

import time
from typing import List, Optional

_SCHEDSTAT = "/proc/thread-self/schedstat"


def cpu_wait_seconds() -> Optional[float]:
    """Seconds the calling thread has spent waiting for a CPU since it started, or None where the system does not
    say (not Linux, or a kernel without scheduler statistics)."""
    try:
        with open(_SCHEDSTAT, encoding="ascii") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def less_cpu_wait(seconds: float, waited_before: Optional[float], waited_after: Optional[float]) -> float:
    """``seconds`` of wall-clock time on one thread less what it spent waiting for a CPU meanwhile (the difference
    of two :func:`cpu_wait_seconds` readings taken around it); ``seconds`` itself when either reading is None."""
    if waited_before is None or waited_after is None:
        return seconds
    return max(0.0, seconds - (waited_after - waited_before))


class StallMeter:
    """Call :meth:`tick` from the GUI thread at every turn of its loop; :attr:`longest` is the longest time between
    two ticks less what the thread spent waiting for a CPU in between (see the module), :attr:`gaps` all of them.
    Every tick must come from the thread that made the meter."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._waited = cpu_wait_seconds()
        self.gaps: List[float] = []

    @property
    def longest(self) -> float:
        return max(self.gaps, default=0.0)

    def tick(self) -> float:
        """Record a turn of the loop; returns the gap since the last one (seconds, CPU waits taken out)."""
        now, waited = time.monotonic(), cpu_wait_seconds()
        gap = less_cpu_wait(now - self._last, self._waited, waited)
        self._last, self._waited = now, waited
        self.gaps.append(gap)
        return gap
