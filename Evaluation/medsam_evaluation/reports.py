"""The evaluation's written outputs: ``results.csv`` (every row), ``results.md`` (every table) and
``readme_section.md`` (the README's "Results" section, spliced in by ``benchmarks/update_readme.py``)."""

from __future__ import annotations

import csv
import os
from typing import List, Optional, Sequence

from .config import NSD_TOLERANCE_MM, EvaluationConfig
from .methods import METHOD_LABELS
from .provenance import git_commit, machine_description, today
from .records import CSV_FIELDS, EvaluationReport, Row, summarise


def write_outputs(report: EvaluationReport, config: EvaluationConfig, device: Optional[str] = None) -> None:
    out = report.out_dir
    methods, spacings, montage_spacing = config.methods, config.spacings, config.montage_spacing
    with open(os.path.join(out, "results.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in report.rows:
            record = row.as_dict()
            record["dsc"] = f"{row.dsc:.4f}"
            record["nsd"] = f"{row.nsd:.4f}"
            writer.writerow(record)
    plots = []
    try:
        from .plots import plot_dsc_vs_spacing, plot_worst_slices

        plots.append(plot_dsc_vs_spacing(report.rows, methods, spacings, os.path.join(out, "dsc_vs_spacing.png")))
        if report.worst:
            plots.append(plot_worst_slices(report.worst, os.path.join(out, "worst_slices.png")))
    except ImportError as exc:  # matplotlib is an optional dependency (the "eval" extra)
        report.notes.append(f"plots skipped: {exc}")
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown_report(report, methods, spacings, config.command, device, plots))
    with open(os.path.join(out, "readme_section.md"), "w", encoding="utf-8") as handle:
        handle.write(readme_section(report.rows, methods, spacings, montage_spacing, config.command, device,
                                    report.seconds, report.notes))


def readme_section(rows, methods, spacings, spacing, command, device, seconds, notes=()) -> str:
    """The README's "Results" section: every method at every spacing (mean DSC / NSD), the goals, the plot and
    how it was made. Links are relative to the output folder (``update_readme`` rewrites them)."""
    n_cases = len({r.case for r in rows})
    commit = git_commit()
    lines = [
        "## Results",
        "",
        f"Simulated annotator on {n_cases} development cases (`../shared/data/cases.json`): key boxes = the "
        f"reference mask's box + 3 px every N slices from the first to the last target slice. Mean DSC / mean NSD "
        f"at {NSD_TOLERANCE_MM:g} mm over the cases; medians and every case are in [results.md](results.md).",
        "",
        f"Made with `{command or 'medsam-segment evaluate'}` in {seconds / 60:.1f} min on "
        f"{machine_description(device)}" + (f", commit {commit}" if commit else "") + f", {today()}.",
        "",
    ]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    header = "| method | " + " | ".join(f"every {n}" for n in spacings) + f" | boxes drawn (every {spacing}) | " \
        f"contours drawn (every {spacing}) | s per case (every {spacing}, cold) |"
    lines += [header, "| --- |" + " ---: |" * (len(spacings) + 3)]
    for method in methods:
        cells = []
        for n in spacings:
            summary = summarise(rows, method, n)
            cells.append("" if summary is None else f"{summary['dsc_mean']:.3f} / {summary['nsd_mean']:.3f}")
        at = summarise(rows, method, spacing)
        if at is None:
            continue
        lines.append(f"| {METHOD_LABELS.get(method, method)} | " + " | ".join(cells) +
                     f" | {at['boxes']:.1f} | {at['contours']:.1f} | {at['seconds_cold'] / max(at['n'], 1):.1f} |")
    lines.append("")
    lines.extend(goal_lines(rows, spacings, heading="###"))
    lines += ["![DSC against key-slice spacing](dsc_vs_spacing.png)", ""]
    return "\n".join(lines)


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown_report(report, methods, spacings, command, device, plots) -> str:
    rows = report.rows
    lines = ["# Evaluation results", ""]
    lines.append(f"- command: `{command or 'medsam-segment evaluate'}`")
    lines.append(f"- machine: {machine_description(device)}")
    commit = git_commit()
    lines.append(f"- date: {today(with_time=True)}" + (f", commit {commit}" if commit else ""))
    cases = sorted({r.case for r in rows})
    lines.append(f"- {len(cases)} cases, key-slice spacings {list(spacings)}, total {report.seconds:.0f} s")
    lines.append(f"- NSD tolerance {NSD_TOLERANCE_MM:g} mm; `boxes` = boxes the annotator drew, `contours` = contours "
                 "drawn; `seconds` with embeddings shared between methods, `cold` = including the encoder time of "
                 "the slices segmented")
    for note in report.notes:
        lines.append(f"- note: {note}")
    lines.append("")
    for spacing in spacings:
        lines.append(f"## Key boxes every {spacing} slices: all cases")
        lines.append("")
        lines.append("| method | DSC mean | DSC median | NSD mean | NSD median | boxes | contours | slices | "
                     "seconds | cold |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for method in methods:
            s = summarise(rows, method, spacing)
            if s is None:
                continue
            lines.append(
                f"| {method} | {_fmt(s['dsc_mean'])} | {_fmt(s['dsc_median'])} | {_fmt(s['nsd_mean'])} | "
                f"{_fmt(s['nsd_median'])} | {s['boxes']:.1f} | {s['contours']:.1f} | {s['slices']:.1f} | "
                f"{s['seconds']:.1f} | {s['seconds_cold']:.1f} |"
            )
        lines.append("")
    lines.extend(goal_lines(rows, spacings))
    for spacing in spacings:
        lines.append(f"## Per case, every {spacing} slices: DSC / NSD")
        lines.append("")
        lines.append("| case | " + " | ".join(methods) + " |")
        lines.append("| --- |" + " ---: |" * len(methods))
        by_key = {(r.case, r.method, r.spacing): r for r in rows}
        for case in cases:
            cells = []
            for method in methods:
                r = by_key.get((case, method, spacing))
                cells.append("" if r is None else f"{r.dsc:.3f} / {r.nsd:.3f}")
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    for path in plots:
        lines.append(f"![{os.path.basename(path)}]({os.path.basename(path)})")
        lines.append("")
    return "\n".join(lines) + "\n"


def goal_lines(rows: Sequence[Row], spacings: Sequence[int], heading: str = "##") -> List[str]:
    """The study's goals (docs/evaluation.md) checked on these rows, where the needed methods and spacings ran."""
    lines: List[str] = []
    if 5 not in spacings:
        return lines
    ours = [m for m in ("interpolate", "propagate") if summarise(rows, m, 5)]
    if not ours:
        return lines
    lines += [f"{heading} Issue 7 goals (every 5 slices)", "", "| goal | " + " | ".join(ours) + " |",
              "| --- |" + " --- |" * len(ours)]

    def mean(method, spacing=5):
        s = summarise(rows, method, spacing)
        return None if s is None else s["dsc_mean"]

    for reference in ("recipe_every_slice", "every_slice", "tight_boxes"):
        if mean(reference) is None:
            continue
        cells = [f"{mean(m):.3f} vs {mean(reference):.3f}: {'yes' if mean(m) > mean(reference) else 'no'}"
                 for m in ours]
        lines.append(f"| mean DSC above {reference} | " + " | ".join(cells) + " |")
    if summarise(rows, "filled_boxes", 5):
        filled = {r.case: r.dsc for r in rows if r.method == "filled_boxes" and r.spacing == 5}
        cells = []
        for m in ours:
            gaps = [(r.dsc - filled[r.case], r.case) for r in rows if r.method == m and r.spacing == 5
                    and r.case in filled]
            worst_gap, worst_case = min(gaps)
            cells.append(f"worst {worst_gap:+.3f} ({worst_case}): {'yes' if worst_gap >= -0.02 else 'no'}")
        lines.append("| no case below filled_boxes by > 0.02 | " + " | ".join(cells) + " |")
    if 10 in spacings:
        cells = []
        for m in ours:
            a, b = mean(m, 5), mean(m, 10)
            if a is not None and b is not None:
                cells.append(f"{b:.3f} vs {a:.3f}: {'yes' if a - b <= 0.03 else 'no'}")
            else:
                cells.append("")
        lines.append("| every 10 within 0.03 of every 5 (mean DSC) | " + " | ".join(cells) + " |")
    lines.append("")
    return lines
