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

from egan_med.config import FUSION_LABELS
from egan_med.evaluation import metrics, report, thresholds

GENEROUS, REALISTIC = "generous", "realistic"
FUSION_MEAN, FUSION_WEIGHTED = FUSION_LABELS["fusion_mean"], FUSION_LABELS["fusion_weighted"]


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


def resolve_budget_seed(budget_seed: int, train_seed: int, fold: int) -> int:
    """``eval.budget_seed``, with -1 ("auto") drawn from the run's training seed and fold.

    So the folds and seeds of a study are graded on different handfuls of validation positives, not on
    one draw counted several times.
    """
    if budget_seed >= 0:
        return int(budget_seed)
    return int(np.random.SeedSequence([int(train_seed), int(fold) + 1, 1_000_003]).generate_state(1)[0] % (2 ** 31))


def rank_normalise(reference, scores) -> np.ndarray:
    """Each score's position in ``reference`` (its empirical CDF), in [0, 1]; higher = more minority.

    Uses no labels: the reference is a detector's scores on the validation images a protocol keeps.
    """
    ref = np.sort(np.asarray(reference, float).ravel())
    s = np.asarray(scores, float)
    lo = np.searchsorted(ref, s, side="left")
    hi = np.searchsorted(ref, s, side="right")
    return (lo + hi) / (2.0 * max(len(ref), 1))  # mid-rank: ties share a rank


def fusion_weights(components: Mapping, weights: Mapping[str, float] | None) -> dict[str, float]:
    """The weight each component gets: non-negative, equal when none or all zero are given."""
    w = {k: max(0.0, float((weights or {}).get(k, 1.0))) for k in components}
    return {k: 1.0 for k in w} if sum(w.values()) <= 0 else w


def fuse(components: Mapping[str, tuple[np.ndarray, np.ndarray]],
         weights: Mapping[str, float] | None = None, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of rank-normalised minority scores (default: equal weights, no label spent on them).

    Args:
        components: name -> (validation scores, test scores) of one chosen epoch each, higher = minority.
        weights: name -> non-negative weight; None or all zero = equal weights.
        mask: the validation images the protocol keeps (None = all): the rank references come from these
            only, since a user with a budget of positives does not hold the others at all.

    Returns:
        (fused validation scores, fused test scores): ranks against the masked validation scores.
    """
    if not components:
        raise ValueError("fusion needs at least one component")
    w = np.array(list(fusion_weights(components, weights).values()))
    ref = {k: (v if mask is None else v[mask]) for k, (v, _) in components.items()}
    val = np.average([rank_normalise(ref[k], v) for k, (v, _) in components.items()], axis=0, weights=w)
    test = np.average([rank_normalise(ref[k], t) for k, (_, t) in components.items()], axis=0, weights=w)
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


def fusion_members(chosen: Mapping[str, tuple], aucs: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The two fusions of a protocol: label -> component weights (mean rank: equal; val-weighted: AUROC - 0.5)."""
    # Weights from the same budget: each component's val AUROC above chance on the masked images,
    # so a near-random component (often eGAN's D) stops diluting the others.
    return {FUSION_MEAN: {k: 1.0 for k in chosen}, FUSION_WEIGHTED: {k: max(0.0, aucs[k] - 0.5) for k in chosen}}


def protocol_rows(detectors: Mapping[str, Detector], y_val, y_test, masks: Mapping[str, np.ndarray],
                  counts: Mapping[str, int], rule: str, target: float, bootstrap: int, seed: int,
                  fusion: bool = True, choices: dict | None = None) -> list[dict]:
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
        choices: when given, filled with (protocol, label) -> {"row": epoch row index, "epoch", "weights"}:
            what a deployment of that row needs.

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
            if choices is not None:
                choices[(proto, label)] = {"row": i, "epoch": int(det.epochs[i]), "val_auroc": float(auc)}
        if fusion and len(chosen) > 1:
            for name, w in fusion_members(chosen, aucs).items():
                fv, ft = fuse(chosen, w, mask)
                why = ("mean of rank-normalised scores of " + ", ".join(chosen) + " (each at its own chosen epoch)"
                       if name == FUSION_MEAN else
                       "rank-normalised scores weighted by (val AUROC - 0.5) on the budgeted val images: "
                       + ", ".join(f"{k} {w[k]:.2f}" for k in chosen))
                rows.append(_row(name, proto, used, -1, fv, ft, y_val, y_test, mask, counts, rule,
                                 target, bootstrap, seed, why + "; ranks against the protocol's validation images"))
                if choices is not None:
                    choices[(proto, name)] = {"weights": fusion_weights(chosen, w)}
    return rows


def budget_spread(detectors: Mapping[str, Detector], y_val, y_test, n_positives: int, rule: str, target: float,
                  draws: int = 20, seed: int = 0, fusion: bool = True) -> list[dict]:
    """What other handfuls of validation positives would have given: the realistic protocol over ``draws`` draws.

    Each draw keeps a different seeded subset of ``n_positives`` validation positives (every validation majority
    image stays), chooses every detector's epoch and threshold on it as the report does, and grades on test.

    Returns:
        One dict per detector: ``model``, ``draws``, and for auroc, recall, specificity and precision the median
        and the 5th and 95th percentiles (``<metric>_median``, ``<metric>_p5``, ``<metric>_p95``).
    """
    y_val = np.asarray(y_val).astype(int)
    masks = {f"draw {d}": budget_mask(y_val, n_positives, seed + 7919 * (d + 1)) for d in range(draws)}
    rows = protocol_rows(detectors, y_val, y_test, masks, {k: 0 for k in report._COUNT_KEYS}, rule, target,
                         bootstrap=0, seed=0, fusion=fusion)
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        entry: dict = {"model": model, "draws": len(mine)}
        for k in SPREAD_METRICS:
            v = np.array([r[k] for r in mine], float)
            entry[f"{k}_median"], entry[f"{k}_p5"], entry[f"{k}_p95"] = (float(np.nanpercentile(v, q)) for q in (50, 5, 95))
        out.append(entry)
    return out


SPREAD_METRICS = ("auroc", "recall", "specificity", "precision")


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
