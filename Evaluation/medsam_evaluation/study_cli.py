"""The command line the studies in ``benchmarks/`` share: which cases, where the records go (JSON lines, appended,
so a rerun skips what is there), and a report printed from the records."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .cases import default_cases_json


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", default=None, help="the development set's cases.json (default: found as "
                        "evaluate finds it)")
    parser.add_argument("--case", action="append", help="only these cases (glob or substring; repeatable)")
    parser.add_argument("--out", required=True, help="JSON-lines records (appended; a rerun skips what is there)")
    parser.add_argument("--report-only", action="store_true", help="print the report from --out, run nothing")


def run_study(args: argparse.Namespace, run: Callable[[str], None], report: Callable[[str], str]) -> int:
    """``run(cases_json)`` unless ``--report-only``, then print ``report(args.out)``; returns the exit status (2,
    with one line, when the cases file is not found)."""
    if not args.report_only:
        cases_json = default_cases_json(args.cases)
        if not cases_json or not os.path.isfile(cases_json):
            print(f"no development set found{f' at {cases_json}' if cases_json else ''}; give --cases CASES.json",
                  file=sys.stderr)
            return 2
        run(cases_json)
    print(report(args.out))
    return 0
