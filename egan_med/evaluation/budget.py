"""The label budget: how many validation positives selection may use, and the two-protocol table.

A user with 33 training positives rarely has 389 more to validate on. ``eval.val_minority_budget``
caps the validation positives that epoch selection and the operating point may see: a seeded subset
of N validation minority images (every validation majority image stays, they are plentiful). The
subset depends only on the validation labels and ``eval.budget_seed``, so every detector of a run
(eGAN, baseline, kNN, patch memory, fusion) is selected on exactly the same labelled images.

Because training never reads validation, one run reports two protocols from the same scores:
"generous" (all validation positives, the earlier studies' protocol) and "realistic" (the budget).
Trained detectors keep their per-epoch validation and test scores (``epoch_scores/``), so a protocol
can pick its own epoch without another checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from egan_med.evaluation import metrics, report, thresholds

GENEROUS, REALISTIC = "generous", "realistic"
FUSION_MEAN, FUSION_WEIGHTED = "fusion (mean rank)", "fusion (val-weighted rank)"


def resolve_budget(budget: int, n_train_minority: int, n_val_minority: int) -> int:
    """Validation positives the budget allows.

    Args:
        budget: ``eval.val_minority_budget``: 0 = every validation positive; -1 = as many as training
            positives; N > 0 = N.
        n_train_minority: training positives of the cohort.
        n_val_minority: validation positives of the cohort.

    Returns:
        The count, at least 1 and at most ``n_val_minority``.
    """
    if budget == 0:
        return n_val_minority
    want = n_train_minority if budget < 0 else budget
    return max(1, min(int(want), n_val_minority))


def budget_mask(y_val, n_positives: int, seed: int = 0) -> np.ndarray:
    """Validation images a protocol may use: every majority image and a seeded subset of positives.

    Args:
        y_val: validation labels (1 = minority), in the split's fixed order.
        n_positives: positives to keep (all of them when >= their count).
        seed: the subset's seed (``eval.budget_seed``); the same for every detector of a run.

    Returns:
        Boolean mask over ``y_val``.
    """
    y = np.asarray(y_val).ravel().astype(int)
    pos = np.flatnonzero(y == 1)
    keep = np.ones(len(y), bool)
    if n_positives < len(pos):
        chosen = np.random.default_rng(seed).choice(pos, size=n_positives, replace=False)
        keep[pos] = False
        keep[chosen] = True
    return keep


def rank_normalise(reference, scores) -> np.ndarray:
    """Each score's position in ``reference`` (its empirical CDF), in [0, 1]; higher = more minority.

    Uses no labels: the reference is a detector's scores on the whole validation split.
    """
    ref = np.sort(np.asarray(reference, float).ravel())
    s = np.asarray(scores, float)
    lo = np.searchsorted(ref, s, side="left")
    hi = np.searchsorted(ref, s, side="right")
    return (lo + hi) / (2.0 * max(len(ref), 1))  # mid-rank: ties share a rank


def fuse(components: Mapping[str, tuple[np.ndarray, np.ndarray]],
         weights: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of rank-normalised minority scores (default: equal weights, no label spent on them).

    Args:
        components: name -> (validation scores, test scores) of one chosen epoch each, higher = minority.
        weights: name -> non-negative weight; None or all zero = equal weights.

    Returns:
        (fused validation scores, fused test scores).
    """
    if not components:
        raise ValueError("fusion needs at least one component")
    w = np.array([max(0.0, float((weights or {}).get(k, 1.0))) for k in components])
    w = np.ones(len(w)) if w.sum() <= 0 else w
    val = np.average([rank_normalise(v, v) for v, _ in components.values()], axis=0, weights=w)
    test = np.average([rank_normalise(v, t) for v, t in components.values()], axis=0, weights=w)
    return val, test


@dataclass
class Detector:
    """Minority scores of one detector, one row per epoch (one-class detectors: a single row).

    Attributes:
        val: array [epochs, n_val], higher = more minority.
        test: array [epochs, n_test].
        epochs: the epoch number of each row.
        how: what the detector is, for the selection column.
    """

    val: np.ndarray
    test: np.ndarray
    epochs: list[int]
    how: str = ""


def select_row(det: Detector, y_val, mask: np.ndarray) -> tuple[int, float]:
    """Row of ``det`` with the best validation AUROC on the masked images (earliest on ties)."""
    y = np.asarray(y_val)[mask]
    best, best_auc = 0, -math.inf
    for i in range(len(det.val)):
        auc = metrics.binary_metrics(y, det.val[i][mask], 0.0)["auroc"]
        if not math.isnan(auc) and auc > best_auc + 1e-12:
            best, best_auc = i, auc
    return best, best_auc


def protocol_rows(detectors: Mapping[str, Detector], y_val, y_test, masks: Mapping[str, np.ndarray],
                  counts: Mapping[str, int], rule: str, target: float, bootstrap: int, seed: int,
                  fusion: bool = True) -> list[dict]:
    """Report rows for every detector under every protocol, plus the fusion of them.

    Args:
        detectors: label -> Detector, scores aligned with ``y_val`` / ``y_test``.
        y_val, y_test: labels (1 = minority).
        masks: protocol name -> validation mask (``budget_mask``).
        counts: the report's count columns.
        rule: operating point rule (``logit0`` falls back to ``specificity``: fused and one-class scores
            have no natural zero).
        target: the sensitivity or specificity to reach on the masked validation images.
        bootstrap: CI resamples (0 = none).
        seed: bootstrap seed.
        fusion: add the two fusion rows (mean rank; rank weighted by budgeted val AUROC above chance).

    Returns:
        Rows with a ``protocol`` and ``val_minority_used`` key and the chosen ``epoch``.
    """
    rule = "specificity" if rule == "logit0" else rule
    y_val, y_test = np.asarray(y_val).astype(int), np.asarray(y_test).astype(int)
    rows = []
    for proto, mask in masks.items():
        used = int(y_val[mask].sum())
        chosen, aucs = {}, {}
        for label, det in detectors.items():
            i, auc = select_row(det, y_val, mask)
            chosen[label], aucs[label] = (det.val[i], det.test[i]), auc
            why = (f"epoch {det.epochs[i]} of {len(det.epochs)} by val AUROC {auc:.3f} on {used} val positives"
                   if len(det.epochs) > 1 else f"no epochs ({det.how}); val AUROC {auc:.3f} on {used} val positives")
            rows.append(_row(label, proto, used, det.epochs[i], det.val[i], det.test[i], y_val, y_test, mask,
                             counts, rule, target, bootstrap, seed, why))
        if fusion and len(chosen) > 1:
            fv, ft = fuse(chosen)
            why = "mean of rank-normalised scores of " + ", ".join(chosen) + " (each at its own chosen epoch)"
            rows.append(_row(FUSION_MEAN, proto, used, -1, fv, ft, y_val, y_test, mask, counts, rule,
                             target, bootstrap, seed, why))
            # Weights from the same budget: each component's val AUROC above chance on the masked images,
            # so a near-random component (often eGAN's D) stops diluting the others.
            w = {k: max(0.0, aucs[k] - 0.5) for k in chosen}
            fv, ft = fuse(chosen, w)
            why = ("rank-normalised scores weighted by (val AUROC - 0.5) on the budgeted val images: "
                   + ", ".join(f"{k} {w[k]:.2f}" for k in chosen))
            rows.append(_row(FUSION_WEIGHTED, proto, used, -1, fv, ft, y_val, y_test, mask, counts, rule,
                             target, bootstrap, seed, why))
    return rows


def _row(label, proto, used, epoch, s_val, s_test, y_val, y_test, mask, counts, rule, target, bootstrap, seed, why):
    thr = thresholds.operating_threshold(rule, y_val[mask], s_val[mask], target)
    m = metrics.binary_metrics(y_test, s_test, thr)
    ci = metrics.bootstrap_ci(y_test, s_test, thr, n=bootstrap, seed=seed) if bootstrap else None
    row = report.report_row(label, counts, f"{rule} {target:.2f} on val", thr, m, ci, why)
    row.update(protocol=proto, val_minority_used=used, epoch=int(epoch))
    return row


def budget_header(n_train_minority: int, n_val_minority: int, used: int, budget: int, seed: int) -> list[str]:
    """The report's label-budget lines (training positives, validation positives used, how selection was done)."""
    how = ("all of them (eval.val_minority_budget=0)" if budget == 0 else
           f"as many as training positives (eval.val_minority_budget={budget})" if budget < 0 else
           f"eval.val_minority_budget={budget}")
    return [f"Label budget: {n_train_minority} training positives; {used} of {n_val_minority} validation positives "
            f"used for selection ({how}; seeded subset, eval.budget_seed={seed}, the same images for every detector).",
            "Selection: each detector's epoch by validation AUROC and its threshold by the operating point, both on "
            "every validation majority image plus those validation positives only; then applied unchanged to test.",
            f"Protocols: '{REALISTIC}' = the budget above; '{GENEROUS}' = all {n_val_minority} validation positives "
            "(optimistic: a user rarely has them). Both come from the same trained models."]
