"""Where the cases run: one after another in this process, or side by side in worker processes.

Cases run in worker processes or Ray actors (the batch's executors, :mod:`medsam_batch.executors`), one per CPU core
by default (:func:`evaluation_workers`), each pinned to its core with its own model and cache; the seconds
columns are then one core's. The cases drawn on one image run one after another on one cache
(:func:`cases.image_groups`), so the image's slices are encoded once.

Both paths yield ``(case index, rows, worst slices, seconds, correction rows, model description or None)`` as
cases finish, and the process that ran a case appends its record (:class:`CaseRecorder`) as soon as it is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from medsam_batch.executors import ExecutorChoice, local_workers, run_tasks

from .cases import Case, file_size, image_groups
from .config import EvaluationConfig
from .per_case import evaluate_case
from .recipe_check import make_recipe_runner
from .records import case_payload
from .resumable import append_record, case_fingerprint, settings_digest


def case_key(case: Case) -> List[str]:
    """A case's record key: its name and the digest of its definition (:func:`resumable.case_fingerprint`)."""
    return [case.name, settings_digest(case_fingerprint(case))]


@dataclass(frozen=True)
class CaseRecorder:
    """Where a finished case's record goes: the records file ``path`` and the run's settings digest. It crosses
    into worker processes; ``path`` None records nothing."""

    path: Optional[str]
    settings: str = ""

    def record(self, case: Case, outcome: Tuple[Any, ...], device: Optional[str]) -> None:
        """Append ``case``'s record: ``outcome`` is ``(rows, worst, seconds, correction rows)``."""
        if self.path is not None:
            append_record(self.path, self.settings, case_key(case), case_payload(*outcome, device))


def evaluation_workers(workers: object, n_cases: int, device: str = "auto") -> int:
    """Processes that evaluate cases side by side: :func:`medsam_batch.executors.local_workers` (one per core
    on a CPU, bounded by free memory and the cases; 1 on a GPU).

    One core per process leaves no thread idle in the decoder's small operations and the Python between model
    calls, and a process has no lock to share (docs/evaluation.md has the measurement).
    """
    return local_workers(workers, n_cases, device)


def evaluation_cache_bytes() -> int:
    """Memory for one image's embeddings: half the free memory, at least 1 GiB, at most 6 GiB.

    A case shares its embeddings between all methods and spacings (and with the other cases on its image): the
    whole slices, the published-intensity slices of the recipe (MR) and the zoom crops of five runs, up to 600
    slice views (2.4 GiB) on a BraTS case. Evicting any of them costs an encoder call later."""
    from MedSAMSegmentLib.models.hardware import available_memory_bytes

    return int(min(max(available_memory_bytes("cpu") // 2, 1 << 30), 6 << 30))


def model_line(model_name: str, model) -> str:
    return f"model {model_name} on {model.device_description}" + (
        f"; using {model.acceleration}" if getattr(model, "acceleration", "") else "")


def _timed_cases(group: Sequence[Case], config: EvaluationConfig, model, cache, recipe_runner, own_cache: bool,
                 recorder: CaseRecorder) -> Iterator[Tuple[Any, ...]]:
    """``(rows, worst, seconds, correction rows)`` of each case of ``group`` (cases that share one image), one
    after another on one cache, so that the image's slices are encoded once for all of them; each case is
    recorded before it is yielded. An own cache is emptied after the group (no other image needs its
    embeddings)."""
    encode_per_slice = None
    device = getattr(model, "device_description", None)
    try:
        for case in group:
            started = time.perf_counter()
            rows, worst, encode_per_slice, corrected = evaluate_case(case, config, model, cache, recipe_runner,
                                                                     encode_per_slice)
            outcome = (rows, worst, time.perf_counter() - started, corrected)
            recorder.record(case, outcome, device)
            yield outcome
    finally:
        if own_cache:
            cache.clear_memory()


def cases_in_process(cases: Sequence[Case], config: EvaluationConfig, model, cache, cache_bytes: int,
                     recorder: Optional[CaseRecorder] = None) -> Iterator:
    """Evaluate ``cases`` one after another in this process; closing the iterator stops after the case it
    yielded last."""
    from MedSAMSegmentLib.engine import EmbeddingCache

    own_cache = cache is None and model is not None
    if own_cache:
        cache = EmbeddingCache(max_memory_bytes=cache_bytes)
    recipe_runner = make_recipe_runner(model, config.methods)
    for group in image_groups(cases):
        outcomes = _timed_cases([cases[i] for i in group], config, model, cache, recipe_runner, own_cache,
                               recorder or CaseRecorder(None))
        for index, outcome in zip(group, outcomes):
            yield (index, *outcome, None)


def cases_in_workers(cases: Sequence[Case], executor: ExecutorChoice, config: EvaluationConfig,
                     cache_bytes: int, recorder: Optional[CaseRecorder] = None) -> Iterator:
    """Evaluate ``cases`` on the batch's executors (:func:`medsam_batch.executors.run_tasks`: local spawned
    processes, each pinned to its own cores, or Ray actors; each with its own model and cache), a task per image
    (:func:`cases.image_groups`), the most work first (file size times targets) so that no worker is left with a
    long task at the end. Closing the iterator cancels the tasks not started; local workers finish (and record)
    the images they have begun."""
    groups = sorted(image_groups(cases), key=lambda g: -file_size(cases[g[0]].image) * len(g))
    items = [[cases[i] for i in group] for group in groups]
    setup = (config, cache_bytes, recorder or CaseRecorder(None))
    results = run_tasks(_EvaluationTask, setup, items, executor, config.model.device)
    try:
        for position, (outcomes, description) in results:
            for index, (rows, worst, seconds, corrected) in zip(groups[position], outcomes):
                yield index, rows, worst, seconds, corrected, description
    finally:
        results.close()


class _EvaluationTask:
    """The evaluation's task on an executor: a worker's model, cache and recipe, built once; each call evaluates
    the cases of one image."""

    def __init__(self, setup: Tuple[EvaluationConfig, int, CaseRecorder]) -> None:
        from MedSAMSegmentLib.engine import EmbeddingCache

        self.config, cache_bytes, self.recorder = setup
        from MedSAMSegmentLib.models import load_from_settings
        self.model = load_from_settings(self.config.model)
        self.cache = EmbeddingCache(max_memory_bytes=cache_bytes)
        self.recipe_runner = make_recipe_runner(self.model, self.config.methods)

    def __call__(self, group: Sequence[Case]) -> Tuple[list, Tuple[str, str]]:
        outcomes = list(_timed_cases(group, self.config, self.model, self.cache, self.recipe_runner, True,
                                     self.recorder))
        return outcomes, (self.model.device_description, model_line(self.config.model.model, self.model))
