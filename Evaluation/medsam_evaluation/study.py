"""``evaluate``: simulate an annotator on real cases, run our pipeline and the baselines, write the report.

For each case of a ``cases.json`` (:mod:`cases`) and each key-slice spacing N, :mod:`simulate` draws key boxes
from the reference mask every N slices (mask box + margin, optional seeded jitter) along the case's
``slice_axis``; every method of the registry (:mod:`methods`) segments from them (:mod:`per_case`), in this
process or in worker processes (:mod:`runner`); :mod:`reports` and :mod:`plots` write the outputs.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Callable, List

from MedSAMSegmentLib.models.hardware import allowed_cpus

from .cases import Case, load_cases
from .config import EvaluationConfig
from .corrections import write_corrections
from .methods import MODEL_METHODS, RECIPE_METHODS
from .records import EvaluationReport, case_outcome
from .reports import write_outputs
from .resumable import RECORDS_FILE, CaseRecords, Piece, settings_digest
from .runner import (
    CaseRecorder,
    case_key,
    cases_in_process,
    cases_in_workers,
    evaluation_cache_bytes,
    evaluation_workers,
    model_line,
)


def evaluate(config: EvaluationConfig, model=None, cache=None, log: Callable[[str], None] = print) -> EvaluationReport:
    """Run the evaluation ``config`` describes and write ``results.csv``, ``results.md``, ``readme_section.md``
    and PNG plots into its ``out_dir``.

    Each finished case is recorded in ``out_dir``/``records.jsonl`` (:mod:`resumable`) under the digest of
    :meth:`EvaluationConfig.records_settings`; the cases recorded there with the same settings are skipped. When
    ``config.piece`` stops the run before every case is recorded, the report's ``cases_left`` says how many are
    left and nothing else is written; otherwise the outputs are made from the records, old and new, as one
    uninterrupted run makes them.

    ``model`` and ``cache`` (an ``EmbeddingCache``) may be given to share them with the caller (``model`` must be
    the one ``config.model`` names); the cases then run in this process. Otherwise ``config.model`` is loaded, on
    ``config.executor``: in this process when it is local with one worker, else in each worker process or Ray
    actor.
    """
    cases = load_cases(config.cases_json, config.case_filter)
    os.makedirs(config.out_dir, exist_ok=True)
    piece = Piece(config.piece)
    report = EvaluationReport(out_dir=config.out_dir)
    report.notes.append(config.options_note())
    model_name = getattr(model, "name", "") if model is not None else config.model.model
    if any(m in RECIPE_METHODS for m in config.methods) and model_name != "lite":
        report.notes.append("the published recipe is LiteMedSAM's; skipped for another model")
        config = config.without(*RECIPE_METHODS)
    path = os.path.join(config.out_dir, RECORDS_FILE)
    records = CaseRecords(path)
    settings = settings_digest(config.records_settings())
    keys = [case_key(case) for case in cases]
    todo = [case for case, key in zip(cases, keys) if records.get(settings, key) is None]
    note = records.note({settings})
    if note:
        log(note)
    if len(todo) < len(cases):
        log(f"skipped {len(cases) - len(todo)} of {len(cases)} cases: recorded in {path} with these settings")
    done = _run_cases(todo, config, model, cache, CaseRecorder(path, settings), piece, report, log) if todo else 0
    if done:
        records.add(settings, [f"piece {datetime.datetime.now().isoformat()}"],
                    {"piece_seconds": round(piece.seconds, 3), "cases": done})
    records = CaseRecords(path)  # with what the workers recorded
    found = [records.get(settings, key) for key in keys]
    report.cases_left = sum(record is None for record in found)
    if report.cases_left:
        log(piece.stopped_line(report.cases_left) + f" (finished cases are in {path})")
        return report
    _report_from(report, found, records.of({settings}), config)
    write_outputs(report, config, device=report.device)
    if config.corrections:
        write_corrections(report.corrections, config.out_dir)
    log(f"wrote {os.path.join(config.out_dir, 'results.md')} ({report.seconds:.0f} s)")
    return report


def _run_cases(cases: List[Case], config: EvaluationConfig, model, cache, recorder: CaseRecorder, piece: Piece,
               report: EvaluationReport, log: Callable[[str], None]) -> int:
    """Evaluate ``cases`` (each recorded by ``recorder``) until done or ``piece`` is over; returns how many
    finished here."""
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
        outcomes = cases_in_workers(cases, executor, config, cache_bytes, recorder)
    elif n_workers > 1:
        cores = max(1, len(allowed_cpus()) // n_workers)
        report.notes.append(f"{n_workers} worker processes of {cores} core(s) each, one case at a time each: "
                            "every seconds column is one worker's")
        log(f"{n_workers} worker processes of {cores} core(s) each")
        outcomes = cases_in_workers(cases, executor, config, cache_bytes, recorder)
    else:
        if needs_model and model is None:
            from MedSAMSegmentLib.models import load_from_settings
            model = load_from_settings(config.model)
            log(model_line(config.model.model, model))
        outcomes = cases_in_process(cases, config, model, cache if needs_model else None, cache_bytes, recorder)
    logged_device = False
    done = 0
    try:
        for index, rows, _worst, elapsed, _corrected, description in outcomes:
            if description and not logged_device:  # a worker's model, reported once
                log(description[1])
                logged_device = True
            done += 1
            summary = " ".join(f"{r.method}={r.dsc:.3f}" for r in rows if r.spacing == config.montage_spacing)
            log(f"[{done}/{len(cases)}] {cases[index].name}: {elapsed:.1f} s  (N={config.montage_spacing}) {summary}")
            if done < len(cases) and piece.over():
                break
    finally:
        outcomes.close()  # workers finish (and record) the images they have begun
    return done


def _report_from(report: EvaluationReport, found: List[dict], recorded: List[dict], config: EvaluationConfig) -> None:
    """Fill ``report`` from the cases' records ``found`` (in the order of cases.json) and the pieces' records
    among ``recorded``."""
    for record in found:
        rows, worst, _seconds, corrected, device = case_outcome(record)
        report.rows += rows
        report.corrections += corrected
        report.worst += worst
        report.device = report.device or device
    report.worst = sorted(report.worst, key=lambda w: w.dsc)[: max(config.n_worst, 0)]
    pieces = [r for r in recorded if "piece_seconds" in r]
    report.seconds = sum(r["piece_seconds"] for r in pieces)
    if len(pieces) > 1:
        report.notes.append(f"run in {len(pieces)} pieces of {', '.join(str(r['cases']) for r in pieces)} cases "
                            "(docs/evaluation.md, 'Long runs in pieces')")
