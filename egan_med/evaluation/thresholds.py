"""Operating thresholds: the cut on the minority score that reaches a sensitivity or specificity on validation.

Conventions as in egan_med.evaluation.metrics: ``s`` is a minority score (``-logit``), minority when ``s > t``.
"""
from __future__ import annotations

import math

import numpy as np

from egan_med.evaluation.metrics import _EPS, _check


def _needed(target: float, n: int) -> int:
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")
    return int(math.ceil(target * n - _EPS))


def _between(lo: float, hi: float) -> float:
    """A threshold t with lo <= t < hi, halfway when floats allow it."""
    mid = (lo + hi) / 2
    return mid if lo <= mid < hi else lo


def threshold_for_sensitivity(y, s, target: float) -> float:
    """Largest threshold (most specific) whose sensitivity on (y, s) is at least ``target``.

    The cut goes just below the k-th highest minority score, k = ceil(target * n_minority),
    halfway to the next lower observed score (any t in that gap gives the same decisions
    on this data). Items tied at a score always fall on the same side, so ties at the cut
    can push the reached sensitivity above the target.

    Args:
        y: validation labels, 1 = minority.
        s: validation minority scores.
        target: wanted sensitivity in (0, 1].

    Returns:
        t such that sensitivity(s > t) >= target on this data.
    """
    y, s = _check(y, s)
    s_min = np.sort(s[y == 1])[::-1]
    if s_min.size == 0:
        raise ValueError("no minority items: sensitivity is undefined")
    cut = s_min[_needed(target, s_min.size) - 1]
    lower = s[s < cut]
    return float(_between(lower.max(), cut)) if lower.size else float(cut - 1.0)


def threshold_for_specificity(y, s, target: float) -> float:
    """Smallest threshold (most sensitive) whose specificity on (y, s) is at least ``target``.

    The cut goes at or just above the m-th lowest majority score, m = ceil(target *
    n_majority), halfway to the next higher observed score. Ties at the cut fall on the
    majority side together, which can push the reached specificity above the target.

    Args:
        y: validation labels, 1 = minority.
        s: validation minority scores.
        target: wanted specificity in (0, 1].

    Returns:
        t such that specificity(s > t) >= target on this data.
    """
    y, s = _check(y, s)
    s_maj = np.sort(s[y == 0])
    if s_maj.size == 0:
        raise ValueError("no majority items: specificity is undefined")
    cut = s_maj[_needed(target, s_maj.size) - 1]
    higher = s[s > cut]
    return float(_between(cut, higher.min())) if higher.size else float(cut)


def operating_threshold(rule: str, y_val, s_val, target: float) -> float:
    """The decision threshold of an operating-point rule, fit on validation data.

    Args:
        rule: "logit0" (the paper: logit < 0, i.e. t = 0; data and target unused),
            "sensitivity" or "specificity" (reach ``target`` on validation).
        y_val: validation labels.
        s_val: validation minority scores.
        target: the sensitivity or specificity to reach.

    Returns:
        The threshold t; predict minority when s > t.
    """
    if rule == "logit0":
        return 0.0
    if rule == "sensitivity":
        return threshold_for_sensitivity(y_val, s_val, target)
    if rule == "specificity":
        return threshold_for_specificity(y_val, s_val, target)
    raise ValueError(f"unknown operating point rule {rule!r}; use logit0, sensitivity or specificity")
