"""Binary metrics, bootstrap confidence intervals and operating thresholds.

Conventions: ``y`` is 1 for the minority (the positive class, e.g. pneumonia) and 0 for the
majority. ``s`` is a minority score, ``s = -logit`` for a discriminator whose positive logit
means majority; an item is called minority when ``s > threshold``. The paper's rule
(logit < 0 is minority) is ``threshold = 0``; a logit of exactly 0 is majority in both.

Degenerate cases (never an exception, always a defined value):
  * no predicted minority: precision 0 (scikit-learn's ``zero_division=0``), so F1 is 0;
  * a class absent from ``y``: the rates that divide by it (recall without minority items,
    specificity without majority items) are NaN, and so are F1 (without minority items),
    balanced accuracy, AUROC, AUPRC and sensitivity at specificity;
  * constant scores: AUROC 0.5, AUPRC = the minority prevalence.
Empty inputs, labels other than 0/1, mismatched lengths and non-finite scores raise ValueError.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

# Metrics that get a bootstrap interval, in report order.
METRIC_NAMES = (
    "precision", "recall", "specificity", "f1", "balanced_accuracy", "auroc", "auprc", "sens_at_spec",
)
_EPS = 1e-9  # float slack so that e.g. 0.9 * 1000 counts as exactly 900


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).ravel()
    s = np.asarray(s, dtype=float).ravel()
    if y.size == 0 or y.size != s.size:
        raise ValueError(f"y and s must be non-empty and of equal length, got {y.size} and {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must hold only 0 (majority) and 1 (minority)")
    if not np.isfinite(s).all():
        raise ValueError("s holds NaN or infinite scores")
    return y.astype(int), s


def _max_false_positives(n_majority: int, spec_target: float) -> int:
    """Most majority items that may be called minority while specificity >= spec_target."""
    return int(math.floor(n_majority * (1.0 - spec_target) + _EPS))


def binary_metrics(y, s, threshold: float = 0.0, spec_target: float = 0.9) -> dict:
    """Threshold and threshold-free metrics of one model on one split.

    Args:
        y: labels, 1 = minority, 0 = majority.
        s: minority scores (higher = more minority-like).
        threshold: an item is predicted minority when s > threshold.
        spec_target: the specificity at which ``sens_at_spec`` is read off the ROC curve.

    Returns:
        dict with tp, fp, tn, fn, precision, recall (sensitivity), specificity, f1,
        balanced_accuracy, auroc, auprc, sens_at_spec, correct_minority (= tp),
        correct_majority (= tn), n_minority, n_majority, threshold, spec_target.
    """
    y, s = _check(y, s)
    pred = (s > threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    n_min, n_maj = tp + fn, tn + fp
    both = n_min > 0 and n_maj > 0
    nan = float("nan")
    out = {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=np.nan)) if n_min else nan,
        "specificity": float(recall_score(y, pred, pos_label=0, zero_division=np.nan)) if n_maj else nan,
        "f1": float(f1_score(y, pred, zero_division=0)) if n_min else nan,
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else nan,
        "auroc": float(roc_auc_score(y, s)) if both else nan,
        "auprc": float(average_precision_score(y, s)) if both else nan,
        "sens_at_spec": nan,
        "correct_minority": tp, "correct_majority": tn, "n_minority": n_min, "n_majority": n_maj,
        "threshold": float(threshold), "spec_target": float(spec_target),
    }
    if both:
        # drop_intermediate=False keeps every distinct cut, so no reachable point is lost.
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        ok = np.rint(fpr * n_maj) <= _max_false_positives(n_maj, spec_target)
        out["sens_at_spec"] = float(tpr[ok].max())  # (0, 0) at threshold +inf is always ok
    return out


def _batch_metrics(s_min: np.ndarray, s_maj: np.ndarray, threshold: float, spec_target: float) -> dict:
    """METRIC_NAMES for each row of (B, n_minority) and (B, n_majority) score arrays.

    Same definitions as binary_metrics (ties included), in numpy so that a thousand
    resamples cost one sort; tests check it against scikit-learn.
    """
    n_min, n_maj = s_min.shape[1], s_maj.shape[1]
    tp = (s_min > threshold).sum(1)
    fp = (s_maj > threshold).sum(1)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall, specificity = tp / n_min, (n_maj - fp) / n_maj
    f1 = 2 * tp / (2 * tp + fp + (n_min - tp))

    ss = np.concatenate([s_min, s_maj], axis=1)
    order = np.argsort(-ss, axis=1, kind="stable")
    s_sorted = np.take_along_axis(ss, order, axis=1)
    y_sorted = (order < n_min).astype(np.int64)
    tp_cum = np.cumsum(y_sorted, axis=1)
    fp_cum = np.cumsum(1 - y_sorted, axis=1)
    pos = np.arange(ss.shape[1])
    # Tied scores form one group; every item takes the counts at its group's end (all ties in).
    is_end = np.ones_like(s_sorted, dtype=bool)
    is_end[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
    end_idx = np.minimum.accumulate(np.where(is_end, pos, pos[-1])[:, ::-1], axis=1)[:, ::-1]
    is_start = np.ones_like(is_end)
    is_start[:, 1:] = is_end[:, :-1]
    start_idx = np.maximum.accumulate(np.where(is_start, pos, 0), axis=1)
    fp_end = np.take_along_axis(fp_cum, end_idx, axis=1)
    fp_before = np.take_along_axis(fp_cum - (1 - y_sorted), start_idx, axis=1)
    # Mann-Whitney with ties counted one half: majority below + half of those tied.
    auroc = ((n_maj - 0.5 * (fp_end + fp_before)) * y_sorted).sum(1) / (n_min * n_maj)
    prec_end = np.take_along_axis(tp_cum / (pos + 1), end_idx, axis=1)
    auprc = (prec_end * y_sorted).sum(1) / n_min
    ok = is_end & (fp_cum <= _max_false_positives(n_maj, spec_target))
    sens_at_spec = np.where(ok, tp_cum, 0).max(1) / n_min
    return {
        "precision": precision, "recall": recall, "specificity": specificity, "f1": f1,
        "balanced_accuracy": (recall + specificity) / 2, "auroc": auroc, "auprc": auprc,
        "sens_at_spec": sens_at_spec,
    }


def bootstrap_ci(
    y, s, threshold: float, n: int = 1000, seed: int = 0, alpha: float = 0.05, spec_target: float = 0.9
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals, resampling each class separately.

    Stratifying keeps both classes (and their counts) in every resample, so every metric is
    defined in every resample. With a class absent, every interval is (NaN, NaN).

    Args:
        y: labels, 1 = minority.
        s: minority scores.
        threshold: decision threshold (s > threshold is minority).
        n: number of resamples.
        seed: seed of the resampling generator.
        alpha: 1 - coverage; (alpha/2, 1 - alpha/2) percentiles are returned.
        spec_target: specificity for ``sens_at_spec``.

    Returns:
        {metric: (lo, hi)} for every name in METRIC_NAMES.
    """
    y, s = _check(y, s)
    if n < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n >= 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    s_min, s_maj = s[y == 1], s[y == 0]
    if s_min.size == 0 or s_maj.size == 0:
        return {name: (float("nan"), float("nan")) for name in METRIC_NAMES}
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // y.size)  # bound memory to a few tens of MB per chunk
    parts: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        i_min = rng.integers(0, s_min.size, size=(b, s_min.size))
        i_maj = rng.integers(0, s_maj.size, size=(b, s_maj.size))
        for name, v in _batch_metrics(s_min[i_min], s_maj[i_maj], threshold, spec_target).items():
            parts[name].append(v)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    out = {}
    for name, chunks in parts.items():
        lo, hi = np.percentile(np.concatenate(chunks), q)
        out[name] = (float(lo), float(hi))
    return out


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
