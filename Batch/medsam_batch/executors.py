"""Where the work runs: this process, worker processes on this machine, or Ray actors (:mod:`.ray_executor`).

The work is a *task class*: ``task = TaskClass(setup)`` once per worker (it loads the model there), then
``task(item)`` for each item given to that worker; results come back as ``(index, result)`` pairs as items finish,
in any order. Items are paths and settings, never images: a worker reads its inputs itself.

* ``local``: ``workers`` processes (spawned; each pinned to its own share of the cores, so its OpenVINO and torch
  threads stay there), or this process when ``workers`` is 1. :func:`local_workers` chooses the count: one per
  core on a CPU, bounded by free memory (:data:`WORKER_BYTES` each) and the number of items; 1 on a GPU.
* ``ray``: Ray Core actors, on a private Ray on this machine or on a cluster (:mod:`.ray_executor`).

:class:`ExecutorChoice` is the one definition of the choice (``--executor``, ``--workers``, ``--address``), and
:func:`run_tasks` runs a task class on it; ``batch`` and ``evaluate`` both use them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from MedSAMSegmentLib.models.hardware import allowed_cpus
from MedSAMSegmentLib.settings import SettingsError

#: The executors, the first the default.
EXECUTORS = ("local", "ray")
#: Free memory a worker process needs: its model and runtimes (about 1.2 GB) and a large case's embeddings.
WORKER_BYTES = 4 << 30


def local_workers(workers: object, n_items: int, device: str = "auto") -> int:
    """Worker processes for the local executor: ``workers`` as given (at most one per item and core), or for
    ``auto`` one per core on a CPU, bounded by free memory and the items; 1 on a GPU (one model fills it)."""
    from MedSAMSegmentLib.models.hardware import available_memory_bytes

    if workers != "auto":
        try:
            count = int(workers)
        except (TypeError, ValueError):
            raise ValueError(f"--workers {workers!r}: give a whole number of processes or auto") from None
        if count < 1:
            raise ValueError(f"--workers {count}: give at least 1")
        return max(1, min(count, n_items, len(allowed_cpus()) or 1))
    if not hasattr(os, "sched_setaffinity") or str(device) not in ("auto", "cpu"):
        return 1
    if str(device) == "auto":
        from MedSAMSegmentLib.models import choose_device

        if choose_device("auto").name != "cpu":
            return 1
    by_memory = available_memory_bytes("cpu") // WORKER_BYTES
    return int(max(1, min(len(allowed_cpus()), by_memory, n_items)))


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
    cores = allowed_cpus()
    share = max(1, len(cores) // n_workers)
    mine = cores[index * share : (index + 1) * share] or cores
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the workers share the cores unpinned
        os.sched_setaffinity(0, mine)
    _local_task = task_class(setup)


def _run_local_item(item):
    return _local_task(item)


@dataclass(frozen=True)
class ExecutorChoice:
    """Where tasks run: ``kind`` (:data:`EXECUTORS`), ``workers`` (a count or ``auto``) and, for Ray, the
    cluster's ``address`` (None: a private Ray on this machine, loopback only). Construction checks the values and
    raises ``SettingsError`` with one line naming the flag (exit 2 on the command line)."""

    kind: str = EXECUTORS[0]
    workers: object = "auto"
    address: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise SettingsError(f"--executor {self.kind}: use one of {', '.join(EXECUTORS)}")
        if self.workers != "auto" and (not str(self.workers).isdigit() or int(str(self.workers)) < 1):
            raise SettingsError(f"--workers {self.workers}: give a whole number of workers, 1 or more, or auto")
        if self.address is not None and self.kind != "ray":
            raise SettingsError(f"--address {self.address}: only the ray executor joins a cluster; add --executor ray")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers`` and ``--address``, read back by :func:`executor_from_arguments`."""
    parser.add_argument("--executor", choices=EXECUTORS, default=EXECUTORS[0],
                        help="local: worker processes on this machine (default); ray: Ray actors, on a private "
                             "Ray here or on the cluster at --address (needs pip install 'medsam-segment[ray]')")
    parser.add_argument("--workers", default="auto", metavar="N|auto",
                        help="workers (default auto: local, one per core bounded by memory, 1 on a GPU; ray, one "
                             "per GPU or CPU of the cluster)")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="the Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT); default: start a "
                             "private Ray on this machine for the run")


def executor_from_arguments(args: argparse.Namespace) -> ExecutorChoice:
    workers = args.workers if args.workers == "auto" else (int(args.workers) if str(args.workers).isdigit()
                                                            else args.workers)
    return ExecutorChoice(args.executor, workers, args.address)


def run_tasks(task_class: Callable[[Any], Callable[[Any], Any]], setup: Any, items: Sequence[Any],
              executor: ExecutorChoice, device: str = "auto") -> Iterator[Tuple[int, Any]]:
    """``(index, task(item))`` for every item, as they finish, on the chosen executor (see the module)."""
    if executor.kind == "ray":
        from .ray_executor import run_ray

        yield from run_ray(task_class, setup, items, executor.workers, executor.address, device)
    else:
        yield from run_local(task_class, setup, items, local_workers(executor.workers, len(items), device))
