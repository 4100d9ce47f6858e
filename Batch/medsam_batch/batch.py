"""``medsam-segment batch``: a cohort's masks from its key boxes, resumably, on this machine's cores or on Ray.

:func:`run_batch` reads and checks the whole manifest first (:mod:`.manifest`), skips every case already finished
with the same inputs and settings (:mod:`.jobs`), runs the rest largest first on the chosen executor (local worker
processes or Ray actors, :mod:`.executors`), and writes ``summary.csv`` and ``summary.md`` into the output folder
(:mod:`.report`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings

from .executors import ExecutorChoice, run_tasks
from .jobs import SKIPPED, BoxOptions, CaseOutcome, fingerprint, is_finished, previous_outcome, run_case
from .manifest import BatchCase, read_manifest
from .report import write_summary


@dataclass(frozen=True)
class BatchSetup:
    """What every worker needs to build its task: the model, the box options, where records go, and the folder
    of embeddings kept between runs (``--cache-dir``; None: none kept)."""

    model: ModelSettings
    boxes: BoxOptions
    out_dir: str
    cache_dir: Optional[str] = None


class SegmentCaseTask:
    """The batch's task (see :mod:`.executors`): the model is loaded once per worker, each case is one call."""

    def __init__(self, setup: BatchSetup) -> None:
        self.setup = setup
        from MedSAMSegmentLib.models import load_from_settings
        self.model = load_from_settings(setup.model)

    def __call__(self, case: BatchCase) -> CaseOutcome:
        return run_case(case, self.model, self.setup.boxes, self.setup.model, self.setup.out_dir,
                        self.setup.cache_dir)


@dataclass
class BatchReport:
    """Every case's outcome (manifest order) and the batch's wall time."""

    outcomes: List[CaseOutcome]
    seconds: float

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)


def run_batch(manifest: str, out_dir: str, settings: SegmentationSettings, model: ModelSettings,
              boxes: Optional[BoxOptions] = None, executor: Optional[ExecutorChoice] = None, progress: bool = True,
              log: Callable[[str], None] = print, cache_dir: Optional[str] = None) -> BatchReport:
    """Run the manifest's unfinished cases and write the summary (see the module); ``boxes`` default: as
    ``segment``'s; ``executor`` default: local, ``auto`` workers; ``cache_dir``: embeddings kept on disk between
    runs and shared by the workers (as ``segment --cache-dir``; the masks are the same with or without). Raises
    ``ManifestError`` before any model work when the manifest cannot be run, ``CacheDirectoryError`` when the
    cache folder cannot be made."""
    started = time.perf_counter()
    boxes = boxes or BoxOptions()
    if cache_dir:
        from MedSAMSegmentLib.engine import EmbeddingCache

        EmbeddingCache(cache_dir, max_memory_bytes=0)  # an unusable folder is refused before any model work
    os.makedirs(out_dir, exist_ok=True)
    cases = read_manifest(manifest, out_dir, settings)
    outcomes: List[Optional[CaseOutcome]] = [None] * len(cases)
    todo: List[int] = []
    for index, case in enumerate(cases):
        if is_finished(out_dir, case, fingerprint(case, boxes, model)):
            earlier = previous_outcome(out_dir, case)
            outcomes[index] = CaseOutcome(case.name, SKIPPED, case.output, earlier.slices if earlier else 0,
                                          earlier.voxels if earlier else 0, flagged=earlier.flagged if earlier else [])
        else:
            todo.append(index)
    todo.sort(key=lambda i: -cases[i].input_bytes())  # the largest first: no long case left alone at the end
    log(f"{len(cases)} cases: {len(cases) - len(todo)} finished already, {len(todo)} to run")
    if todo:
        setup = BatchSetup(model, boxes, os.path.abspath(out_dir), cache_dir and os.path.abspath(cache_dir))
        items = [cases[i] for i in todo]
        results = run_tasks(SegmentCaseTask, setup, items, executor or ExecutorChoice(), model.device)
        bar = _CaseBar(len(items), progress)
        try:
            for position, outcome in results:
                outcomes[todo[position]] = outcome
                bar.update(outcome)
                if outcome.status != "done":
                    log(f"case {outcome.name} failed: {outcome.reason}")
        finally:
            bar.close()
    report = BatchReport([o for o in outcomes if o is not None], time.perf_counter() - started)
    write_summary(out_dir, report.outcomes)
    return report


class _CaseBar:
    """A tqdm bar over cases, with slices per second so far."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        self.slices = 0
        self.started = time.perf_counter()
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", file=sys.stderr)

    def update(self, outcome: CaseOutcome) -> None:
        self.slices += outcome.slices
        if self.bar is not None:
            rate = self.slices / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{rate:.2f} slices/s")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def failed_line(report: BatchReport, out_dir: str) -> str:
    failed = report.count("failed")
    return (f"{failed} of {len(report.outcomes)} cases failed; their reasons are in "
            f"{os.path.join(out_dir, 'summary.md')}")


__all__: Sequence[str] = ("BatchReport", "BatchSetup", "SegmentCaseTask", "failed_line", "run_batch")
