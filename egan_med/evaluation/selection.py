"""Epoch selection from a per-epoch history, on the validation split only.

A history is a list of dicts or a DataFrame, one row per epoch, with an ``epoch`` column and
metric columns prefixed by split (``val_auroc``, ``test_f1``, ``val_correct_minority``, ...).
``select_epoch`` keeps only ``epoch`` and ``val_*`` columns before looking at anything, so no
test number can influence it. ``select_epoch_paper_protocol`` reproduces the paper's choice
(the best epoch on the test split) and says that it is optimistic.

The paper's Nash rule is |correct minority - correct majority| <= 20 on 1000 + 1000 test
images, i.e. per-class accuracies within 20/1000 of each other. Here it is applied to rates,
|recall - specificity| <= threshold / 1000, which is the paper's count rule with the threshold
scaled by (n_minority + n_majority) / 2000 on a balanced split, and stays meaningful on an
imbalanced one (raw counts there differ by the class sizes, not by the model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

RULES = ("val_auroc", "val_f1", "nash")
_PAPER_TEST_SIZE = 1000  # images per class in the paper's test set


@dataclass(frozen=True)
class Selection:
    """A chosen epoch and why.

    Attributes:
        epoch: the chosen epoch (value of the history's ``epoch`` column).
        rule: the rule that chose it.
        reason: one human-readable sentence.
        value: the criterion at that epoch (metric value, or Nash gap in per-class accuracy).
    """

    epoch: int
    rule: str
    reason: str
    value: float


def as_frame(history: pd.DataFrame | Iterable[Mapping]) -> pd.DataFrame:
    """A copy of the history as a DataFrame with an integer ``epoch`` column, sorted by epoch."""
    df = pd.DataFrame(history).copy() if not isinstance(history, pd.DataFrame) else history.copy()
    if df.empty or "epoch" not in df.columns:
        raise ValueError("history must be non-empty and have an 'epoch' column")
    df["epoch"] = df["epoch"].astype(int)
    return df.sort_values("epoch", kind="stable").reset_index(drop=True)


def nash_gap(correct_minority, correct_majority, n_minority, n_majority):
    """|recall - specificity|: the paper's count difference per image of each class."""
    return np.abs(np.asarray(correct_minority) / np.asarray(n_minority)
                  - np.asarray(correct_majority) / np.asarray(n_majority))


def is_nash(
    correct_minority: int, correct_majority: int, n_total: int, threshold: float = 20.0,
    n_minority: int | None = None,
) -> bool:
    """Whether one epoch is at the paper's Nash equilibrium.

    Args:
        correct_minority: minority images called minority (tp).
        correct_majority: majority images called majority (tn).
        n_total: images in the split (minority + majority).
        threshold: the paper's allowed |difference| for 1000 + 1000 images.
        n_minority: minority images in the split. If None the split is taken as balanced,
            which is the paper's count rule with threshold scaled by n_total / 2000.

    Returns:
        True when |recall - specificity| <= threshold / 1000.
    """
    n_min = n_total / 2 if n_minority is None else n_minority
    n_maj = n_total - n_min
    if n_min <= 0 or n_maj <= 0:
        return False
    gap = float(nash_gap(correct_minority, correct_majority, n_min, n_maj))
    return gap <= threshold / _PAPER_TEST_SIZE + 1e-12


def _split_only(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    # Whitelist rather than drop test_: an unprefixed or misspelt column cannot leak in either.
    return df[["epoch"] + [c for c in df.columns if c.startswith(prefix)]]


def _need(df: pd.DataFrame, columns: Iterable[str], why: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{why} needs history columns {missing}; have {sorted(df.columns)}")


def _best(df: pd.DataFrame, column: str) -> tuple[int, float]:
    """Earliest epoch with the largest non-NaN value of ``column``."""
    values = pd.to_numeric(df[column], errors="coerce")
    if values.isna().all():
        raise ValueError(f"{column} is NaN at every epoch")
    row = int(values.idxmax())  # as_frame reset the index, so labels are positions; first max wins
    return int(df["epoch"].iloc[row]), float(values.iloc[row])


def select_epoch(
    history: pd.DataFrame | Iterable[Mapping], rule: str, nash_threshold: float = 20.0
) -> Selection:
    """Choose the epoch to keep, reading validation columns only.

    Args:
        history: one row per epoch (see module docstring).
        rule: "val_auroc" or "val_f1" (largest value, earliest on ties) or "nash" (earliest
            epoch with |val recall - val specificity| <= nash_threshold / 1000; if none, the
            epoch with the smallest gap).
        nash_threshold: the paper's 20 (images out of 1000 per class).

    Returns:
        The Selection.
    """
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; use one of {RULES}")
    val = _split_only(as_frame(history), "val_")
    if rule != "nash":
        _need(val, [rule], f"rule {rule}")
        epoch, value = _best(val, rule)
        reason = f"highest {rule} = {value:.4f} over {len(val)} epochs (validation)"
        return Selection(epoch, rule, reason, value)

    cols = ["val_correct_minority", "val_correct_majority", "val_n_minority", "val_n_majority"]
    _need(val, cols, "rule nash")
    gap = pd.Series(nash_gap(*(val[c].astype(float) for c in cols)), index=val.index)
    if gap.isna().all():
        raise ValueError("the Nash gap is NaN at every epoch")
    limit = nash_threshold / _PAPER_TEST_SIZE
    n_min, n_maj = int(val["val_n_minority"].iloc[-1]), int(val["val_n_majority"].iloc[-1])
    scale = f"{nash_threshold:g}/1000 per class = {limit * n_min:.1f} of {n_min} minority, " \
            f"{limit * n_maj:.1f} of {n_maj} majority"
    meets = gap <= limit + 1e-12
    if meets.any():
        row = int(np.flatnonzero(meets.to_numpy())[0])
        head = f"first epoch at Nash on validation (|recall - specificity| = {gap.iloc[row]:.4f} <= {scale})"
    else:
        row = int(gap.idxmin())
        head = f"no epoch reached Nash on validation ({scale}); smallest gap {gap.iloc[row]:.4f}"
    epoch = int(val["epoch"].iloc[row])
    counts = f"correct minority {int(val['val_correct_minority'].iloc[row])}, " \
             f"correct majority {int(val['val_correct_majority'].iloc[row])}"
    return Selection(epoch, "nash", f"{head}; epoch {epoch}: {counts}", float(gap.iloc[row]))


def select_epoch_paper_protocol(
    history: pd.DataFrame | Iterable[Mapping], metric: str = "test_f1"
) -> Selection:
    """The paper's choice: the epoch with the best ``metric`` on the TEST split (optimistic).

    Args:
        history: one row per epoch.
        metric: a ``test_`` column, larger is better.

    Returns:
        The Selection, its reason labelled "optimistic (paper protocol)".
    """
    if not metric.startswith("test_"):
        raise ValueError(f"the paper protocol selects on a test_ column, got {metric!r}")
    test = _split_only(as_frame(history), "test_")
    _need(test, [metric], "the paper protocol")
    epoch, value = _best(test, metric)
    reason = (f"optimistic (paper protocol): epoch with the highest {metric} = {value:.4f} "
              f"over {len(test)} epochs, chosen on the test split itself")
    return Selection(epoch, "paper_protocol", reason, value)


def nash_epochs(
    history: pd.DataFrame | Iterable[Mapping], split: str = "val", threshold: float = 20.0
) -> list[int]:
    """Epochs at Nash on ``split`` (for plots); [] when the columns are missing."""
    df = as_frame(history)
    cols = [f"{split}_{c}" for c in ("correct_minority", "correct_majority", "n_minority", "n_majority")]
    if any(c not in df.columns for c in cols):
        return []
    gap = nash_gap(*(df[c].astype(float) for c in cols))
    return [int(e) for e, g in zip(df["epoch"], gap) if not math.isnan(g) and g <= threshold / 1000 + 1e-12]
