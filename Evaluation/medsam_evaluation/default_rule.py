"""The rule a default must pass to depart from MedSAM's published behaviour (issue 35).

An accuracy option (``mr_rule``, ``zoom``, ``guide``, ``slices``) keeps its published value unless one other
value, with every other option at its published value, passes on the wider development set at every key-box
spacing studied (every 5 and every 10 slices):

1. leave one group out (:mod:`cross_validation`): every fold, choosing among the published value and the
   alternatives on the other groups, chooses that value;
2. no held-out group's mean DSC with it is lower than with the published value by more than
   :data:`GROUP_LOSS_LIMIT`;
3. no case's DSC with it is lower than the published recipe's (the published value's) by more than
   :data:`CASE_LOSS_LIMIT`.

Scores are ``{spacing: {candidate: {case: DSC}}}``; the first candidate of each spacing is the published value and
every candidate scores the same cases. Groups are ``{case: group}``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Mapping

from .cross_validation import leave_one_group_out

#: The most a held-out group's mean DSC may fall against the published value.
GROUP_LOSS_LIMIT = 0.005
#: The most one case's DSC may fall below the published recipe's.
CASE_LOSS_LIMIT = 0.02

Scores = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class SpacingCheck:
    """The departure ``candidate`` judged at one spacing: how many folds chose it, the worst held-out group's and
    the worst case's change against the published value, and the failed criteria in words (none: it passes)."""

    spacing: int
    folds_choosing: int
    folds: int
    worst_group: str
    worst_group_change: float
    worst_case: str
    worst_case_change: float
    whole_set_change: float
    failures: List[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """``passes``, or ``fails:`` and the failed criteria."""
        return "passes" if not self.failures else "fails: " + "; ".join(self.failures)


@dataclass(frozen=True)
class Verdict:
    """One option's verdict: the departure judged (the best alternative), the published value, and a check per
    spacing. :attr:`default` is what the option should default to."""

    option: str
    candidate: str
    published: str
    checks: List[SpacingCheck]

    @property
    def passes(self) -> bool:
        return all(not check.failures for check in self.checks)

    @property
    def default(self) -> str:
        return self.candidate if self.passes else self.published


def _whole_mean(scores: Mapping[str, float]) -> float:
    return statistics.mean(scores.values())


def best_alternative(scores_by_spacing: Mapping[int, Scores]) -> str:
    """The non-published candidate with the highest whole-set mean DSC averaged over the spacings (ties: the
    earlier candidate)."""
    spacings = list(scores_by_spacing)
    candidates = list(scores_by_spacing[spacings[0]])[1:]
    if not candidates:
        raise ValueError("no alternative to the published value")
    return max(candidates, key=lambda c: (statistics.mean(_whole_mean(scores_by_spacing[s][c]) for s in spacings),
                                          -candidates.index(c)))


def check_spacing(spacing: int, scores: Scores, candidate: str, groups: Mapping[str, str]) -> SpacingCheck:
    """Judge ``candidate`` against the published value (``scores``' first candidate) at one spacing."""
    published = list(scores)[0]
    folds = leave_one_group_out(scores, groups).folds
    choosing = sum(fold.chosen == candidate for fold in folds)
    by_group: Dict[str, List[str]] = {}
    for case in scores[published]:
        by_group.setdefault(groups[case], []).append(case)
    group_changes = {group: statistics.mean(scores[candidate][c] for c in cases)
                     - statistics.mean(scores[published][c] for c in cases) for group, cases in by_group.items()}
    case_changes = {case: scores[candidate][case] - scores[published][case] for case in scores[published]}
    worst_group = min(group_changes, key=lambda g: (group_changes[g], g))
    worst_case = min(case_changes, key=lambda c: (case_changes[c], c))
    failures = []
    if choosing < len(folds):
        failures.append(f"chosen in {choosing} of {len(folds)} folds")
    if group_changes[worst_group] < -GROUP_LOSS_LIMIT:
        failures.append(f"held-out {worst_group} {group_changes[worst_group]:+.3f}")
    if case_changes[worst_case] < -CASE_LOSS_LIMIT:
        failures.append(f"{worst_case} {case_changes[worst_case]:+.3f}")
    whole_change = _whole_mean(scores[candidate]) - _whole_mean(scores[published])
    return SpacingCheck(spacing, choosing, len(folds), worst_group, group_changes[worst_group], worst_case,
                        case_changes[worst_case], whole_change, failures)


def judge_option(option: str, scores_by_spacing: Mapping[int, Scores], groups: Mapping[str, str]) -> Verdict:
    """The verdict on ``option``: its best alternative (:func:`best_alternative`) judged at every spacing.

    Raises ValueError when a spacing's candidates differ from another's, or when there is no alternative."""
    spacings = sorted(scores_by_spacing)
    names = [list(scores_by_spacing[s]) for s in spacings]
    if any(n != names[0] for n in names):
        raise ValueError(f"{option}: the spacings score different candidates")
    candidate = best_alternative(scores_by_spacing)
    checks = [check_spacing(s, scores_by_spacing[s], candidate, groups) for s in spacings]
    return Verdict(option, candidate, names[0][0], checks)


def verdict_table(verdicts: List[Verdict]) -> List[str]:
    """A Markdown table of ``verdicts``, one row per option and spacing."""
    lines = ["| option | departure judged | every | folds choosing it | whole set change | worst held-out group "
             "change | worst case change | verdict |", "| --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for verdict in verdicts:
        for check in verdict.checks:
            lines.append(f"| `{verdict.option}` | `{verdict.candidate}` | {check.spacing} | {check.folds_choosing}/"
                         f"{check.folds} | {check.whole_set_change:+.4f} | {check.worst_group} "
                         f"{check.worst_group_change:+.4f} | {check.worst_case} {check.worst_case_change:+.3f} | "
                         f"{check.outcome} |")
        value = verdict.default.split("=", 1)[-1]  # a departure is named option=value
        lines.append(f"| `{verdict.option}` | | | | | | | default: **`{value}`** |")
    return lines
