"""The batch's summary: ``summary.csv`` and ``summary.md`` in the output folder, one row per case."""

from __future__ import annotations

import csv
import os
from typing import Sequence

from MedSAMSegmentLib.io.atomic_files import atomic_output

from .jobs import CaseOutcome

COLUMNS = ("case", "status", "slices", "voxels", "seconds", "flagged slices", "output", "reason")


def rows_of(outcomes: Sequence[CaseOutcome]) -> list:
    return [[o.name, o.status, o.slices, o.voxels, f"{o.seconds:.1f}", " ".join(str(s) for s in o.flagged),
             o.output, o.reason] for o in outcomes]


def write_summary(out_dir: str, outcomes: Sequence[CaseOutcome]) -> None:
    """Write both summaries (each atomically)."""
    rows = rows_of(outcomes)
    with atomic_output(os.path.join(out_dir, "summary.csv")) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(rows)
    counts = {status: sum(1 for o in outcomes if o.status == status) for status in ("done", "skipped", "failed")}
    lines = [f"# Batch summary: {counts['done']} done, {counts['skipped']} skipped (finished before), "
             f"{counts['failed']} failed", "", "| " + " | ".join(COLUMNS) + " |",
             "| --- | --- |" + " ---: |" * 3 + " --- | --- | --- |"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    with atomic_output(os.path.join(out_dir, "summary.md")) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
