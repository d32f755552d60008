"""Figures of a run (paper Fig. 2 and 4, plus ROC/PR), drawn with matplotlib's Agg canvas.

Figures are built on ``matplotlib.figure.Figure`` directly rather than pyplot, so nothing here
changes the process-wide backend or keeps figures alive. Every function writes its PNG
atomically (temporary file + os.replace) and returns the path.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from egan_med.io import atomic_path
from egan_med.evaluation.selection import as_frame, nash_epochs

History = pd.DataFrame | Iterable[Mapping]


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_correct_counts(
    history: History, path: str, split: str = "test", nash_threshold: float = 20.0
) -> str:
    """Correctly classified minority and majority images per epoch (paper Fig. 4).

    Args:
        history: per-epoch rows with ``{split}_correct_minority``/``_majority`` and
            ``{split}_n_minority``/``_majority``.
        path: PNG to write.
        split: column prefix, "test" (the paper's figure) or "val".
        nash_threshold: the paper's 20 per 1000 + 1000 images, for the Nash markers.

    Returns:
        path.
    """
    df = as_frame(history)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for cls, color in (("minority", "tab:red"), ("majority", "tab:blue")):
        col = f"{split}_correct_{cls}"
        if col not in df.columns:
            raise ValueError(f"history has no {col} column")
        ax.plot(df["epoch"], df[col], marker=".", color=color, label=f"correct {cls}")
        n_col = f"{split}_n_{cls}"
        if n_col in df.columns and df[n_col].notna().any():
            n = float(df[n_col].dropna().iloc[-1])
            ax.axhline(n, color=color, linestyle="--", linewidth=1, label=f"n {cls} = {n:g}")
    nash = nash_epochs(df, split, nash_threshold)
    for i, epoch in enumerate(nash):
        ax.axvline(epoch, color="tab:green", alpha=0.3, linewidth=3, label="Nash" if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"correctly classified ({split})")
    ax.set_title(f"Correct minority / majority per epoch on {split} ({len(nash)} Nash epochs)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def plot_losses(history: History, path: str) -> str:
    """Discriminator and generator losses per epoch (paper Fig. 2).

    Reference lines: ln 4 is D's loss (sum of two BCE terms) and ln 2 is G's when D outputs
    one half for everything, i.e. D at chance. Missing loss columns are skipped.

    Args:
        history: per-epoch rows with ``loss_d`` and/or ``loss_g``.
        path: PNG to write.

    Returns:
        path.
    """
    df = as_frame(history)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    drawn = 0
    for col, label, color in (("loss_d", "D loss", "tab:blue"), ("loss_g", "G loss", "tab:orange")):
        if col in df.columns and df[col].notna().any():
            ax.plot(df["epoch"], df[col], marker=".", color=color, label=label)
            drawn += 1
    ax.axhline(math.log(4), color="tab:blue", linestyle="--", linewidth=1, label="ln 4 (D at chance)")
    ax.axhline(math.log(2), color="tab:orange", linestyle="--", linewidth=1, label="ln 2 (G at chance)")
    if not drawn:
        ax.text(0.5, 0.5, "no loss_d / loss_g recorded", transform=ax.transAxes, ha="center")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (BCE, nats)")
    ax.set_title("Discriminator and generator loss")
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def plot_roc_pr(curves: Mapping[str, tuple], path: str) -> str:
    """ROC (left) and precision-recall (right) curves, each model's operating point marked.

    Args:
        curves: {model name: (y, s, threshold)} with y 1 = minority, s the minority score,
            and the threshold applied as s > threshold.
        path: PNG to write.

    Returns:
        path.
    """
    fig = Figure(figsize=(11, 4.8))
    roc_ax, pr_ax = fig.subplots(1, 2)
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    for i, (name, (y, s, threshold)) in enumerate(curves.items()):
        y, s = np.asarray(y).ravel().astype(int), np.asarray(s, dtype=float).ravel()
        color = f"C{i}"
        if y.min() == y.max():  # one class only: no curve exists
            roc_ax.plot([], [], color=color, label=f"{name}: one class only")
            continue
        fpr, tpr, _ = roc_curve(y, s)
        precision, recall, _ = precision_recall_curve(y, s)
        roc_ax.plot(fpr, tpr, color=color, label=f"{name} (AUROC {roc_auc_score(y, s):.3f})")
        pr_ax.plot(recall, precision, color=color, drawstyle="steps-post",
                   label=f"{name} (AUPRC {average_precision_score(y, s):.3f})")
        pred = s > threshold
        tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
        sens, fpr_op = tp / (y == 1).sum(), fp / (y == 0).sum()
        prec = tp / (tp + fp) if tp + fp else 0.0
        roc_ax.plot([fpr_op], [sens], marker="o", markersize=8, markeredgecolor="black", color=color)
        pr_ax.plot([sens], [prec], marker="o", markersize=8, markeredgecolor="black", color=color)
        pr_ax.axhline(y.mean(), color=color, linestyle=":", linewidth=1)  # a chance-level classifier
    roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (dotted: prevalence)",
              xlim=(0, 1), ylim=(0, 1.02))
    roc_ax.legend(loc="lower right", fontsize="small")
    if pr_ax.get_legend_handles_labels()[0]:
        pr_ax.legend(loc="lower left", fontsize="small")
    fig.suptitle("Operating points marked with circles")
    return _save(fig, path)
