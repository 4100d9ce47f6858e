"""Where the work runs: this process or worker processes on this machine (a Ray executor is the next step).

The work is a *task class*: ``task = TaskClass(setup)`` once per worker (it loads the model there), then
``task(item)`` for each item given to that worker; results come back as ``(index, result)`` pairs as items finish,
in any order. Items are paths and settings, never images: a worker reads its inputs itself.

* ``local``: ``workers`` processes (spawned; each pinned to its own share of the cores, so its OpenVINO and torch
  threads stay there), or this process when ``workers`` is 1. :func:`local_workers` chooses the count: one per
  core on a CPU, bounded by free memory (:data:`WORKER_BYTES` each) and the number of items; 1 on a GPU.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

#: Free memory a worker process needs: its model and runtimes (about 1.2 GB) and a large case's embeddings.
WORKER_BYTES = 4 << 30


def allowed_cores() -> List[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def local_workers(workers: object, n_items: int, device: str = "auto") -> int:
    """Worker processes for the local executor: ``workers`` as given (at most one per item and core), or for
    ``auto`` one per core on a CPU, bounded by free memory and the items; 1 on a GPU (one model fills it)."""
    from MedSAMSegmentLib.hardware import available_memory_bytes

    if workers != "auto":
        try:
            count = int(workers)
        except (TypeError, ValueError):
            raise ValueError(f"--workers {workers!r}: give a whole number of processes or auto") from None
        if count < 1:
            raise ValueError(f"--workers {count}: give at least 1")
        return max(1, min(count, n_items, len(allowed_cores()) or 1))
    if not hasattr(os, "sched_setaffinity") or str(device) not in ("auto", "cpu"):
        return 1
    if str(device) == "auto":
        from MedSAMSegmentLib.models import choose_device

        if choose_device("auto").name != "cpu":
            return 1
    by_memory = available_memory_bytes("cpu") // WORKER_BYTES
    return int(max(1, min(len(allowed_cores()), by_memory, n_items)))


def run_local(task_class: Callable[[Any], Callable[[Any], Any]], setup: Any, items: Sequence[Any],
              workers: int = 1) -> Iterator[Tuple[int, Any]]:
    """``(index, task(item))`` for every item, on ``workers`` local processes (this process for 1)."""
    if workers <= 1:
        task = task_class(setup)
        for index, item in enumerate(items):
            yield index, task(item)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_local_worker,
                             initargs=(counter, workers, task_class, setup)) as pool:
        futures = {pool.submit(_run_local_item, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


#: The worker process's task, built once by the pool's initializer: a pool task reaches per-process state only
#: through a module global. None in the parent process.
_local_task: Optional[Callable[[Any], Any]] = None


def _start_local_worker(counter, n_workers: int, task_class, setup) -> None:
    global _local_task
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = allowed_cores()
    share = max(1, len(cores) // n_workers)
    mine = cores[index * share : (index + 1) * share] or cores
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the workers share the cores unpinned
        os.sched_setaffinity(0, mine)
    _local_task = task_class(setup)


def _run_local_item(item):
    return _local_task(item)
