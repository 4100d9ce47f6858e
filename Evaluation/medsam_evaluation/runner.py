"""Where the cases run: one after another in this process, or side by side in worker processes.

Cases run in worker processes, one per CPU core by default (:func:`evaluation_workers`), each pinned to its
core with its own model and cache; the seconds columns are then one core's. The cases drawn on one image run one
after another on one cache (:func:`cases.image_groups`), so the image's slices are encoded once.

Both paths yield ``(case index, rows, worst slices, seconds, model description or None)`` as cases finish.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from .cases import Case, file_size, image_groups
from .config import EvaluationConfig
from .per_case import evaluate_case
from .recipe_check import make_recipe_runner

#: Free memory a worker process needs: its model and runtimes (about 1.2 GB) and a BraTS case's embeddings.
WORKER_BYTES = 4 << 30


def evaluation_workers(workers: object, n_cases: int, device: str = "auto") -> int:
    """Processes that evaluate cases side by side: ``workers`` as given, or for ``auto`` one per core on a CPU
    (bounded by free memory, :data:`WORKER_BYTES` each, and the number of cases); 1 on a GPU.

    One core per process leaves no thread idle in the decoder's small operations and the Python between model
    calls, and a process has no lock to share (docs/evaluation.md has the measurement).
    """
    from MedSAMSegmentLib.hardware import available_memory_bytes

    if workers != "auto":
        try:
            count = int(workers)
        except (TypeError, ValueError):
            raise ValueError(f"workers must be a whole number of processes or 'auto', not {workers!r}") from None
        if count < 1:
            raise ValueError(f"workers must be at least 1, not {count}")
        return max(1, min(count, n_cases, len(allowed_cores()) or 1))
    if not hasattr(os, "sched_setaffinity") or str(device) not in ("auto", "cpu"):
        return 1
    if str(device) == "auto":
        from MedSAMSegmentLib.models import choose_device

        if choose_device("auto").name != "cpu":
            return 1
    by_memory = available_memory_bytes("cpu") // WORKER_BYTES
    return int(max(1, min(len(allowed_cores()), by_memory, n_cases)))


def evaluation_cache_bytes() -> int:
    """Memory for one image's embeddings: half the free memory, at least 1 GiB, at most 6 GiB.

    A case shares its embeddings between all methods and spacings (and with the other cases on its image): the
    whole slices, the published-intensity slices of the recipe (MR) and the zoom crops of five runs, up to 600
    slice views (2.4 GiB) on a BraTS case. Evicting any of them costs an encoder call later."""
    from MedSAMSegmentLib.hardware import available_memory_bytes

    return int(min(max(available_memory_bytes("cpu") // 2, 1 << 30), 6 << 30))


def allowed_cores() -> List[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def model_line(model_name: str, model) -> str:
    return f"model {model_name} on {model.device_description}" + (
        f"; using {model.acceleration}" if getattr(model, "acceleration", "") else "")


def _timed_cases(group: Sequence[Case], config: EvaluationConfig, model, cache, recipe_runner, own_cache: bool):
    """``[(rows, worst, seconds)]`` of cases that share one image, one after another on one cache, so that the
    image's slices are encoded once for all of them; an own cache is emptied after the group (no other image
    needs its embeddings)."""
    outcomes = []
    encode_per_slice = None
    for case in group:
        started = time.perf_counter()
        rows, worst, encode_per_slice = evaluate_case(case, config, model, cache, recipe_runner, encode_per_slice)
        outcomes.append((rows, worst, time.perf_counter() - started))
    if own_cache:
        cache.clear_memory()
    return outcomes


def cases_in_process(cases: Sequence[Case], config: EvaluationConfig, model, cache, cache_bytes: int) -> Iterator:
    """Evaluate ``cases`` one after another in this process."""
    from MedSAMSegmentLib.engine import EmbeddingCache

    own_cache = cache is None and model is not None
    if own_cache:
        cache = EmbeddingCache(max_memory_bytes=cache_bytes)
    recipe_runner = make_recipe_runner(model, config.methods)
    for group in image_groups(cases):
        outcomes = _timed_cases([cases[i] for i in group], config, model, cache, recipe_runner, own_cache)
        for index, outcome in zip(group, outcomes):
            yield (index, *outcome, None)


def cases_in_workers(cases: Sequence[Case], n_workers: int, config: EvaluationConfig, cache_bytes: int) -> Iterator:
    """Evaluate ``cases`` in ``n_workers`` processes (spawned, each pinned to its own cores, each with its own
    model and cache), a task per image (:func:`cases.image_groups`), the most work first (file size times
    targets) so that no worker is left with a long task at the end."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    groups = sorted(image_groups(cases), key=lambda g: -file_size(cases[g[0]].image) * len(g))
    with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_start_worker,
                             initargs=(counter, n_workers, config, cache_bytes)) as pool:
        futures = {pool.submit(_evaluate_in_worker, [cases[i] for i in group]): group for group in groups}
        try:
            for future in as_completed(futures):
                outcomes, description = future.result()
                for index, (rows, worst, seconds) in zip(futures[future], outcomes):
                    yield index, rows, worst, seconds, description
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


@dataclass(frozen=True)
class _Worker:
    config: EvaluationConfig
    model: object
    cache: object
    recipe_runner: object


#: The worker process's own model, cache and recipe, set once by the pool's initializer (:func:`_start_worker`)
#: and read by its tasks (:func:`_evaluate_in_worker`): a pool task can reach per-process state only through a
#: module global. None in the parent process.
_worker: Optional[_Worker] = None


def _start_worker(counter, n_workers: int, config: EvaluationConfig, cache_bytes: int) -> None:
    """A worker's start: take the next share of the cores (its OpenVINO and torch threads follow them), load
    the model, make its cache and recipe."""
    global _worker
    from MedSAMSegmentLib.engine import EmbeddingCache

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = allowed_cores()
    share = max(1, len(cores) // n_workers)
    mine = cores[index * share : (index + 1) * share] or cores
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the workers share the cores unpinned
        os.sched_setaffinity(0, mine)
    model = config.model.load()
    _worker = _Worker(config, model, EmbeddingCache(max_memory_bytes=cache_bytes),
                      make_recipe_runner(model, config.methods))


def _evaluate_in_worker(group: Sequence[Case]) -> Tuple[list, Tuple[str, str]]:
    worker = _worker
    outcomes = _timed_cases(group, worker.config, worker.model, worker.cache, worker.recipe_runner, True)
    return outcomes, (worker.model.device_description, model_line(worker.config.model.model, worker.model))
