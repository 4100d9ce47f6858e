"""Where the work runs: this process, worker processes on this machine, or a Ray cluster.

The work is a *task class*: ``task = TaskClass(setup)`` once per worker (it loads the model there), then
``task(item)`` for each item given to that worker; results come back as ``(index, result)`` pairs as items finish,
in any order. Items are paths and settings, never images: a worker reads its inputs itself.

* ``local``: ``workers`` processes (spawned; each pinned to its own share of the cores, so its OpenVINO and torch
  threads stay there), or this process when ``workers`` is 1. :func:`local_workers` chooses the count: one per
  core on a CPU, bounded by free memory (:data:`WORKER_BYTES` each) and the number of items; 1 on a GPU.
* ``ray``: one Ray actor per worker (``num_cpus=1``; ``num_gpus=1`` each where the cluster has GPUs), restarted
  with its pending calls retried when its process dies, so a killed worker costs the items it held, not the run.
  Ray is an optional extra (``pip install .[ray]``); ``address`` joins a running cluster, none starts one on
  this machine bound to 127.0.0.1.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

#: Free memory a worker process needs: its model and runtimes (about 1.2 GB) and a large case's embeddings.
WORKER_BYTES = 4 << 30
EXECUTORS = ("local", "ray")


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


def run_ray(task_class: Callable[[Any], Callable[[Any], Any]], setup: Any, items: Sequence[Any],
            workers: Optional[int] = None, address: Optional[str] = None) -> Iterator[Tuple[int, Any]]:
    """``(index, task(item))`` for every item, on Ray actors (one per worker; default: one per CPU of the
    cluster, or per GPU where it has GPUs). Joins the cluster at ``address``, else starts one on this machine
    (loopback only) and stops it at the end."""
    try:
        import ray
    except ImportError:
        raise ImportError("--executor ray needs Ray: pip install 'medsam-segment[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        count = workers or max(1, gpus or int(resources.get("CPU", 1)))
        actor = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=-1,
                           max_task_retries=-1)(_RayWorker)
        pool = ray.util.ActorPool([actor.remote(task_class, setup) for _ in range(min(count, len(items)) or 1)])
        indexed = list(enumerate(items))
        yield from pool.map_unordered(lambda a, pair: a.run.remote(*pair), indexed)
    finally:
        if started_here:
            ray.shutdown()


class _RayWorker:
    """A Ray actor holding one task (its model); ``run`` returns ``(index, task(item))``."""

    def __init__(self, task_class, setup) -> None:
        self.task = task_class(setup)

    def run(self, index: int, item):
        return index, self.task(item)
