"""The command line the studies in ``benchmarks/`` share: which cases, where the records go (JSON lines, one per
finished case or run, keyed by the settings that made it: :mod:`resumable`), how long one piece runs, and a report
printed from the records."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Collection, Dict, List

from MedSAMSegmentLib.settings import add_arguments, from_arguments

from .cases import default_cases_json
from .resumable import CaseRecords, Piece, PieceSettings


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", nargs="+", default=None, metavar="CASES_JSON",
                        help="the development set's cases.json, or several (e.g. the shared set's and "
                             "Evaluation/devset/cases.json: the wider set); default: found as evaluate finds it")
    parser.add_argument("--case", action="append", help="only these cases (glob or substring; repeatable)")
    parser.add_argument("--out", required=True, help="JSON-lines records (appended; a rerun with the same settings "
                        "skips what is there)")
    parser.add_argument("--report-only", action="store_true", help="print the report from --out, run nothing")
    parser.add_argument("--all-settings", action="store_true",
                        help="report every record in --out whatever settings made it (records made before records "
                             "carried their settings digest, e.g. those committed under docs/results/)")
    add_arguments(parser, PieceSettings)


def study_records(path: str, settings: Collection[str], all_settings: bool = False) -> List[Dict[str, Any]]:
    """The records in ``path`` of these settings digests (every record with ``all_settings``), one per key; what is
    left out is said in one line on stderr."""
    records = CaseRecords(path)
    note = None if all_settings else records.note(settings)
    if note:
        print(note, file=sys.stderr)
    return records.of(None if all_settings else settings)


def study_report(report: Callable[[List[Dict[str, Any]]], str], settings: Callable[[], Collection[str]],
                 all_settings: bool = False) -> Callable[[str], str]:
    """The ``report(path)`` of :func:`run_study`: ``report(records)`` of the records of the digests ``settings()``
    gives (:func:`study_records`), or one line saying there are none."""

    def report_of(path: str) -> str:
        records = study_records(path, settings(), all_settings) if os.path.exists(path) else []
        if not records:
            return (f"no records in {path} of these settings: run the study (or --all-settings for records of any "
                    "settings)")
        return report(records)

    return report_of


def run_study(args: argparse.Namespace, run: Callable[[str, Piece], int], report: Callable[[str], str]) -> int:
    """``run(cases_json, piece)`` unless ``--report-only`` (``cases_json``: a path, or a list of them when
    ``--cases`` named several); it returns the cases left when ``piece``
    (``--max-minutes``) stopped it, 0 when it is complete. Then, when complete, print ``report(args.out)``.
    Returns the exit status: 0, or 2 with one line when the cases file is not found."""
    piece = Piece(from_arguments(PieceSettings, args))
    if not args.report_only:
        cases_json = default_cases_json(args.cases)
        missing = [path for path in ([cases_json] if isinstance(cases_json, str) else cases_json or [None])
                   if not path or not os.path.isfile(path)]
        if missing:
            print(f"no development set found{f' at {missing[0]}' if missing[0] else ''}; give --cases CASES.json",
                  file=sys.stderr)
            return 2
        if run(cases_json, piece):
            return 0  # the run said how many cases are left; the report waits for all of them
    print(report(args.out))
    return 0
