"""The ``ray`` executor: the same task class on Ray Core actors, one model per actor, on this machine or a cluster.

Each actor (process title ``ray::MedSAMWorker``) builds ``task_class(setup)`` once, then runs one item per call;
the driver keeps one item in flight per actor and hands out the next as each finishes, in the order given (the
callers put the largest first). Items are paths and settings: an actor reads the images itself, so they must be
where every node sees them (the same path on a shared file system), as must the output folder.

* **Resources**: an actor asks for ``cpus_per_worker`` CPUs (its torch and OpenVINO threads follow them), one GPU
  where the cluster has GPUs and the device is ``auto`` or ``cuda``, and :data:`.executors.WORKER_BYTES` of
  memory. ``workers="auto"``: as many actors as the cluster's GPUs (or CPUs over ``cpus_per_worker``) allow, at
  most one per item.
* **Failures**: an actor whose process or node dies is restarted and its item retried (``max_restarts=-1``,
  ``max_task_retries=-1``); the batch's task writes atomically and the same inputs give the same bytes, so a
  retried item writes what the first try would have. A task's own exception stops the run, as on the local
  executor (the batch's task records a failing case instead of raising).
* **Where**: ``address`` None starts a private Ray on this machine for the run, bound to loopback only, and stops
  it after; otherwise the run joins that cluster (``auto``, ``HOST:PORT``, or ``ray://HOST:PORT``) and leaves it
  running. A cluster on this machine's loopback is joined at its ``127.0.0.1:PORT`` (:func:`on_loopback`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

from MedSAMSegmentLib.models import DependencyError
from MedSAMSegmentLib.models.hardware import allowed_cpus

from .executors import WORKER_BYTES

#: The one line shown when Ray is missing.
RAY_MISSING = "the ray executor needs Ray: pip install 'medsam-segment[ray]' (or pip install 'ray>=2.9')"


class RayMissingError(DependencyError):
    """Ray is not installed; the message says how to install it."""


def on_loopback(address: Optional[str]) -> bool:
    """Whether the run stays on this machine's loopback: a private Ray (``address`` None) or a cluster at
    ``127.x.x.x:PORT`` / ``localhost:PORT``."""
    if address is None:
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host == "localhost" or host.startswith("127.")


def import_ray(loopback: bool):
    """Import Ray; with ``loopback`` (see :func:`on_loopback`) its node address is set to 127.0.0.1 first.

    Ray replaces a loopback address by the machine's outward one, for the nodes it starts and for the cluster a
    driver joins, unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before it is imported; a private Ray
    should not listen beyond this machine. Raises :class:`RayMissingError` with :data:`RAY_MISSING`."""
    if loopback and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise RayMissingError(RAY_MISSING) from None
    return ray


class MedSAMWorker:
    """A Ray actor's body: the task built once (with its runtimes' threads set to the actor's CPUs)."""

    def __init__(self, task_class: Callable[[Any], Callable[[Any], Any]], setup: Any, threads: int) -> None:
        os.environ["MEDSAM_NUM_THREADS"] = str(max(1, int(threads)))
        self.task = task_class(setup)

    def run(self, item: Any) -> Any:
        return self.task(item)

    def pid(self) -> int:
        return os.getpid()


def ray_workers(workers: object, n_items: int, resources: Dict[str, float], gpus_per_worker: int,
                cpus_per_worker: int) -> int:
    """Actors to start: ``workers`` as given (at most one per item), or for ``auto`` what the cluster's GPUs or
    CPUs allow (see the module); at least one (a cluster that grows later gets them scheduled then)."""
    if workers != "auto":
        return max(1, min(int(workers), n_items))
    if gpus_per_worker:
        fit = int(resources.get("GPU", 0)) // gpus_per_worker
    else:
        fit = int(resources.get("CPU", 0)) // cpus_per_worker
    return max(1, min(fit, n_items))


def gpus_per_worker(ray, device: str) -> int:
    """One GPU per actor where the cluster has GPUs and ``device`` allows one (``auto``, ``cuda``, ``cuda:N``)."""
    if str(device) not in ("auto", "cuda") and not str(device).startswith("cuda"):
        return 0
    return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0


def run_ray(task_class: Callable[[Any], Callable[[Any], Any]], setup: Any, items: Sequence[Any],
            workers: object = "auto", address: Optional[str] = None, device: str = "auto",
            cpus_per_worker: int = 1) -> Iterator[Tuple[int, Any]]:
    """``(index, task(item))`` for every item, as they finish, on Ray actors (see the module)."""
    ray = import_ray(on_loopback(address))
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            ray.init(num_cpus=len(allowed_cpus()), include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING", configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING", configure_logging=False)
    actors = []
    try:
        gpus = gpus_per_worker(ray, device)
        count = ray_workers(workers, len(items), ray.cluster_resources(), gpus, cpus_per_worker)
        actor_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus, memory=WORKER_BYTES, max_restarts=-1,
                                 max_task_retries=-1)(MedSAMWorker)
        actors = [actor_class.remote(task_class, setup, cpus_per_worker) for _ in range(count)]
        queue = iter(enumerate(items))
        pending: Dict[Any, Tuple[int, Any]] = {}

        def hand_out(actor) -> None:
            for index, item in queue:
                pending[actor.run.remote(item)] = (index, actor)
                return

        for actor in actors:
            hand_out(actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index, actor = pending.pop(ready[0])
            result = ray.get(ready[0])
            hand_out(actor)
            yield index, result
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


__all__: Sequence[str] = ("RAY_MISSING", "MedSAMWorker", "RayMissingError", "gpus_per_worker", "import_ray",
                          "on_loopback", "ray_workers", "run_ray")
