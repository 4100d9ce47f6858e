"""``evaluate``: simulate an annotator on real cases, run our pipeline and the baselines, write the report.

For each case of a ``cases.json`` (:mod:`cases`) and each key-slice spacing N, :mod:`simulate` draws key boxes
from the reference mask every N slices (mask box + margin, optional seeded jitter) along the case's
``slice_axis``; every method of the registry (:mod:`methods`) segments from them (:mod:`per_case`), in this
process or in worker processes (:mod:`runner`); :mod:`reports` and :mod:`plots` write the outputs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Dict, List

from MedSAMSegmentLib.hardware import allowed_cpus

from .cases import load_cases
from .config import EvaluationConfig
from .corrections import CorrectionRow, write_corrections
from .methods import MODEL_METHODS, RECIPE_METHODS
from .records import EvaluationReport, Row
from .reports import write_outputs
from .runner import (
    cases_in_process,
    cases_in_workers,
    evaluation_cache_bytes,
    evaluation_workers,
    model_line,
)


def evaluate(config: EvaluationConfig, model=None, cache=None, log: Callable[[str], None] = print) -> EvaluationReport:
    """Run the evaluation ``config`` describes and write ``results.csv``, ``results.md``, ``readme_section.md``
    and PNG plots into its ``out_dir``.

    ``model`` and ``cache`` (an ``EmbeddingCache``) may be given to share them with the caller; the cases then
    run in this process. Otherwise ``config.model`` is loaded, on ``config.executor``: in this process when it
    is local with one worker, else in each worker process or Ray actor.
    """
    cases = load_cases(config.cases_json, config.case_filter)
    os.makedirs(config.out_dir, exist_ok=True)
    started = time.perf_counter()
    report = EvaluationReport(out_dir=config.out_dir)
    report.notes.append(config.options_note())
    model_name = getattr(model, "name", "") if model is not None else config.model.model
    if any(m in RECIPE_METHODS for m in config.methods) and model_name != "lite":
        report.notes.append("the published recipe is LiteMedSAM's; skipped for another model")
        config = config.without(*RECIPE_METHODS)
    needs_model = any(m in MODEL_METHODS + RECIPE_METHODS for m in config.methods)
    executor = config.executor
    own_workers = needs_model and model is None and cache is None
    on_ray = own_workers and executor.kind == "ray"
    n_workers = 1
    if on_ray:
        n_workers = len(allowed_cpus())  # Ray's actors on this machine, at most: their share of its memory
    elif own_workers:
        n_workers = evaluation_workers(executor.workers, len(cases), config.model.device)
        executor = dataclasses.replace(executor, workers=n_workers)
    cache_bytes = evaluation_cache_bytes() // n_workers
    if on_ray:
        report.notes.append("cases on Ray actors of one core each, one case at a time each: every seconds column "
                            "is one actor's")
        log("cases on Ray actors" + (f" at {executor.address}" if executor.address else " on a private Ray here"))
        outcomes = cases_in_workers(cases, executor, config, cache_bytes)
    elif n_workers > 1:
        cores = max(1, len(allowed_cpus()) // n_workers)
        report.notes.append(f"{n_workers} worker processes of {cores} core(s) each, one case at a time each: "
                            "every seconds column is one worker's")
        log(f"{n_workers} worker processes of {cores} core(s) each")
        outcomes = cases_in_workers(cases, executor, config, cache_bytes)
    else:
        if needs_model and model is None:
            model = config.model.load()
            log(model_line(config.model.model, model))
        outcomes = cases_in_process(cases, config, model, cache if needs_model else None, cache_bytes)
    by_case: Dict[int, List[Row]] = {}
    corrections_by_case: Dict[int, List[CorrectionRow]] = {}
    device_text = model.device_description if model is not None else None
    for done, (index, rows, worst, elapsed, corrected, description) in enumerate(outcomes):
        if description and device_text is None:  # a worker's model, reported once
            device_text, line = description
            log(line)
        by_case[index], corrections_by_case[index] = rows, corrected
        report.worst = sorted(report.worst + worst, key=lambda w: w.dsc)[: max(config.n_worst, 0)]
        summary = " ".join(f"{r.method}={r.dsc:.3f}" for r in rows if r.spacing == config.montage_spacing)
        log(f"[{done + 1}/{len(cases)}] {cases[index].name}: {elapsed:.1f} s  (N={config.montage_spacing}) {summary}")
    report.rows = [row for index in sorted(by_case) for row in by_case[index]]
    report.corrections = [row for index in sorted(by_case) for row in corrections_by_case[index]]
    report.seconds = time.perf_counter() - started
    write_outputs(report, config, device=device_text)
    if config.corrections:
        write_corrections(report.corrections, config.out_dir)
    log(f"wrote {os.path.join(config.out_dir, 'results.md')} ({report.seconds:.0f} s)")
    return report

