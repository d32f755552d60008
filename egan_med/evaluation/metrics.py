"""Binary metrics, declared once in a registry, and their bootstrap intervals (thresholds: egan_med.evaluation.thresholds).

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

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


@dataclass
class Split:
    """One model's scores on one split at one threshold: what a metric's ``point`` function reads."""

    y: np.ndarray
    s: np.ndarray
    pred: np.ndarray
    tp: int
    fp: int
    tn: int
    fn: int
    spec_target: float

    @property
    def n_min(self) -> int:
        return self.tp + self.fn

    @property
    def n_maj(self) -> int:
        return self.tn + self.fp

    @property
    def both(self) -> bool:
        return self.n_min > 0 and self.n_maj > 0


class Resamples:
    """B bootstrap resamples, (B, n_minority) and (B, n_majority) scores: what a metric's ``batch`` reads.

    Counts and the tie-aware ranking are computed once, on first use, and shared by every metric; the
    definitions match binary_metrics (ties included), in numpy so that a thousand resamples cost one sort.
    """

    def __init__(self, s_min: np.ndarray, s_maj: np.ndarray, threshold: float, spec_target: float):
        self.s_min, self.s_maj, self.threshold, self.spec_target = s_min, s_maj, threshold, spec_target
        self.n_min, self.n_maj = s_min.shape[1], s_maj.shape[1]
        self.tp = (s_min > threshold).sum(1)
        self.fp = (s_maj > threshold).sum(1)

    @functools.cached_property
    def ranking(self) -> dict[str, np.ndarray]:
        """Scores sorted high to low per resample, with cumulative counts and tie-group boundaries."""
        ss = np.concatenate([self.s_min, self.s_maj], axis=1)
        order = np.argsort(-ss, axis=1, kind="stable")
        s_sorted = np.take_along_axis(ss, order, axis=1)
        y_sorted = (order < self.n_min).astype(np.int64)
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
        return {"y": y_sorted, "tp_cum": tp_cum, "fp_cum": fp_cum, "pos": pos, "is_end": is_end,
                "end_idx": end_idx, "start_idx": start_idx}

    def recall(self) -> np.ndarray:
        return self.tp / self.n_min

    def specificity(self) -> np.ndarray:
        return (self.n_maj - self.fp) / self.n_maj


def _nan_unless(ok: bool, value: Callable[[], Any]) -> float:
    return float(value()) if ok else float("nan")


def _auroc_batch(r: Resamples) -> np.ndarray:
    k = r.ranking
    fp_end = np.take_along_axis(k["fp_cum"], k["end_idx"], axis=1)
    fp_before = np.take_along_axis(k["fp_cum"] - (1 - k["y"]), k["start_idx"], axis=1)
    # Mann-Whitney with ties counted one half: majority below + half of those tied.
    return ((r.n_maj - 0.5 * (fp_end + fp_before)) * k["y"]).sum(1) / (r.n_min * r.n_maj)


def _auprc_batch(r: Resamples) -> np.ndarray:
    k = r.ranking
    prec_end = np.take_along_axis(k["tp_cum"] / (k["pos"] + 1), k["end_idx"], axis=1)
    return (prec_end * k["y"]).sum(1) / r.n_min


def _sens_at_spec_point(p: Split) -> float:
    if not p.both:
        return float("nan")
    # drop_intermediate=False keeps every distinct cut, so no reachable point is lost.
    fpr, tpr, _ = roc_curve(p.y, p.s, drop_intermediate=False)
    ok = np.rint(fpr * p.n_maj) <= _max_false_positives(p.n_maj, p.spec_target)
    return float(tpr[ok].max())  # (0, 0) at threshold +inf is always ok


def _sens_at_spec_batch(r: Resamples) -> np.ndarray:
    k = r.ranking
    ok = k["is_end"] & (k["fp_cum"] <= _max_false_positives(r.n_maj, r.spec_target))
    return np.where(ok, k["tp_cum"], 0).max(1) / r.n_min


@dataclass(frozen=True)
class Metric:
    """A metric, declared once; the epoch log, bootstrap, report, model card and study tables read this.

    Attributes:
        name: column name (``val_<name>``, ``test_<name>``, ``<name>_lo`` ...).
        label: display label; ``{spec}`` is replaced by the specificity target in percent.
        point: value on one split (a Split); NaN when undefined.
        batch: values on B resamples (a Resamples), the same definition vectorised.
        higher_is_better: direction, for anything that ranks runs by it.
        in_report: a column of report.md's table.
        in_card: a column of the model card's table (which states no specificity target).
    """

    name: str
    label: str
    point: Callable[[Split], float]
    batch: Callable[[Resamples], np.ndarray]
    higher_is_better: bool = True
    in_report: bool = True
    in_card: bool = True


# Every metric, in report order. Add one here and it is logged per epoch, bootstrapped, reported and tabled.
METRICS: tuple[Metric, ...] = (
    Metric("precision", "Precision", lambda p: float(precision_score(p.y, p.pred, zero_division=0)),
           lambda r: np.where(r.tp + r.fp > 0, r.tp / np.maximum(r.tp + r.fp, 1), 0.0)),
    Metric("recall", "Recall", lambda p: _nan_unless(p.n_min > 0, lambda: recall_score(p.y, p.pred, zero_division=np.nan)),
           Resamples.recall),
    Metric("specificity", "Specificity",
           lambda p: _nan_unless(p.n_maj > 0, lambda: recall_score(p.y, p.pred, pos_label=0, zero_division=np.nan)),
           Resamples.specificity),
    Metric("f1", "F1", lambda p: _nan_unless(p.n_min > 0, lambda: f1_score(p.y, p.pred, zero_division=0)),
           lambda r: 2 * r.tp / (2 * r.tp + r.fp + (r.n_min - r.tp))),
    Metric("balanced_accuracy", "Balanced accuracy",
           lambda p: _nan_unless(p.both, lambda: balanced_accuracy_score(p.y, p.pred)),
           lambda r: (r.recall() + r.specificity()) / 2, in_report=False, in_card=False),
    Metric("auroc", "AUROC", lambda p: _nan_unless(p.both, lambda: roc_auc_score(p.y, p.s)), _auroc_batch),
    Metric("auprc", "AUPRC", lambda p: _nan_unless(p.both, lambda: average_precision_score(p.y, p.s)), _auprc_batch),
    Metric("sens_at_spec", "Sens@{spec}%Spec (test ROC)", _sens_at_spec_point, _sens_at_spec_batch, in_card=False),
)
METRIC_NAMES = tuple(m.name for m in METRICS)  # every metric gets a bootstrap interval
COUNT_NAMES = ("correct_minority", "correct_majority", "n_minority", "n_majority")


def binary_metrics(y, s, threshold: float = 0.0, spec_target: float = 0.9) -> dict:
    """Threshold and threshold-free metrics of one model on one split.

    Args:
        y: labels, 1 = minority, 0 = majority.
        s: minority scores (higher = more minority-like).
        threshold: an item is predicted minority when s > threshold.
        spec_target: the specificity at which ``sens_at_spec`` is read off the ROC curve.

    Returns:
        dict with tp, fp, tn, fn, every METRICS entry (precision, recall (sensitivity), specificity, f1,
        balanced_accuracy, auroc, auprc, sens_at_spec), correct_minority (= tp), correct_majority (= tn),
        n_minority, n_majority, threshold, spec_target.
    """
    y, s = _check(y, s)
    pred = (s > threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    split = Split(y, s, pred, tp, fp, tn, fn, spec_target)
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, **{m.name: m.point(split) for m in METRICS},
            "correct_minority": tp, "correct_majority": tn, "n_minority": split.n_min, "n_majority": split.n_maj,
            "threshold": float(threshold), "spec_target": float(spec_target)}


def _batch_metrics(s_min: np.ndarray, s_maj: np.ndarray, threshold: float, spec_target: float) -> dict:
    """Every METRICS entry for each row of (B, n_minority) and (B, n_majority) score arrays."""
    r = Resamples(s_min, s_maj, threshold, spec_target)
    return {m.name: m.batch(r) for m in METRICS}


def bootstrap_ci(
    y, s, threshold: float, n: int = 1000, seed: int = 0, alpha: float = 0.05, spec_target: float = 0.9
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals, resampling each class separately.

    Stratifying keeps both classes (and their counts) in every resample, so every metric is
    defined in every resample. With a class absent, every interval is (NaN, NaN). Hand-written because
    scikit-learn and scipy.stats.bootstrap do not resample within classes, and vectorised (Resamples) so
    that a thousand resamples cost one sort rather than a thousand scikit-learn calls.

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
        return {m.name: (float("nan"), float("nan")) for m in METRICS}
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // y.size)  # bound memory to a few tens of MB per chunk
    parts: dict[str, list[np.ndarray]] = {m.name: [] for m in METRICS}
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
