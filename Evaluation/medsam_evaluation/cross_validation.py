"""Choose a setting by leave-one-group-out (LOGO) cross-validation across case groups, and say what it gives on
each group it was not chosen on.

A default chosen on the whole development set is judged on the same cases it was chosen on, which flatters it.
Here, for each case group held out in turn, the candidate with the best mean score on the *other* groups' cases is
chosen and scored on the held-out group. The mean of those held-out scores over all cases estimates what the
selection rule gives on cases it has never seen; the candidate the whole set chooses is the one that ships.

Scores are ``{candidate: {case name: score}}`` (higher is better, e.g. DSC); every candidate must score the same
cases. Ties go to the earlier candidate in the order given (put the current default first: a change must win).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence

#: The development set's case groups, by the start of a case's name (the first match wins).
GROUP_PREFIXES = (("ct_lesion", "ct_lesion"), ("brats", "brats"), ("cord", "cord"), ("totalseg", "totalseg"))


def case_group(name: str) -> str:
    """The group a development case belongs to: its name's known prefix, else the name's first word."""
    for prefix, group in GROUP_PREFIXES:
        if name.startswith(prefix):
            return group
    return name.split("_")[0]


@dataclass(frozen=True)
class HeldOutChoice:
    """One fold: the group held out, the candidate the other groups chose, and the held-out group's mean score
    with that candidate and with the reference candidate (the first one given)."""

    group: str
    chosen: str
    cases: int
    held_out_mean: float
    reference_mean: float
    worst_case_change: float


@dataclass(frozen=True)
class CrossValidation:
    """The whole set's choice and the folds; ``held_out_mean`` is the mean over all cases of the score each case
    gets from the candidate chosen without its group."""

    whole_set_choice: str
    whole_set_mean: float
    held_out_mean: float
    reference_mean: float
    folds: List[HeldOutChoice]

    @property
    def generalises(self) -> bool:
        """True when every fold chose the whole set's choice and none did worse than the reference on its
        held-out group."""
        return all(fold.chosen == self.whole_set_choice and fold.held_out_mean >= fold.reference_mean
                   for fold in self.folds)


def _mean_over(scores: Mapping[str, float], cases: Sequence[str]) -> float:
    return statistics.mean(scores[case] for case in cases)


def choose(scores: Mapping[str, Mapping[str, float]], cases: Sequence[str]) -> str:
    """The candidate with the highest mean over ``cases``; ties go to the earliest candidate."""
    best, best_mean = "", float("-inf")
    for candidate, by_case in scores.items():
        mean = _mean_over(by_case, cases)
        if mean > best_mean + 1e-12:
            best, best_mean = candidate, mean
    return best


def leave_one_group_out(scores: Mapping[str, Mapping[str, float]],
                        groups: Mapping[str, str] = None) -> CrossValidation:
    """Cross-validate the choice among ``scores``' candidates across ``groups`` (``{case: group}``, default
    :func:`case_group` of each name). The first candidate is the reference the folds are compared with.

    Raises ValueError when there are no candidates, the candidates score different cases, or fewer than two
    groups are present.
    """
    if not scores:
        raise ValueError("no candidates to choose from")
    candidates = list(scores)
    cases = sorted(scores[candidates[0]])
    for candidate in candidates[1:]:
        if sorted(scores[candidate]) != cases:
            raise ValueError(f"candidate {candidate!r} scores other cases than {candidates[0]!r}")
    groups = dict(groups) if groups is not None else {case: case_group(case) for case in cases}
    by_group: Dict[str, List[str]] = {}
    for case in cases:
        by_group.setdefault(groups[case], []).append(case)
    if len(by_group) < 2:
        raise ValueError("leave-one-group-out needs cases from two groups or more")
    reference = candidates[0]
    folds, held_out = [], {}
    for group, members in sorted(by_group.items()):
        others = [case for case in cases if groups[case] != group]
        chosen = choose(scores, others)
        changes = [scores[chosen][case] - scores[reference][case] for case in members]
        folds.append(HeldOutChoice(group, chosen, len(members), _mean_over(scores[chosen], members),
                                   _mean_over(scores[reference], members), min(changes)))
        held_out.update({case: scores[chosen][case] for case in members})
    whole = choose(scores, cases)
    return CrossValidation(whole, _mean_over(scores[whole], cases), statistics.mean(held_out.values()),
                           _mean_over(scores[reference], cases), folds)
