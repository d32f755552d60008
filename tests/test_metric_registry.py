"""A metric is declared once (metrics.METRICS) and reaches the epoch log, the bootstrap, the report and the card."""
from __future__ import annotations

import numpy as np
import pandas as pd

from egan_med.evaluation import metrics, model_card, report
from egan_med import train


def _youden_point(p: metrics.Split) -> float:
    return p.tp / max(p.n_min, 1) + p.tn / max(p.n_maj, 1) - 1


def _youden_batch(r: metrics.Resamples) -> np.ndarray:
    return r.recall() + r.specificity() - 1


def test_a_new_metric_flows_everywhere(monkeypatch):
    extra = metrics.Metric("youden", "Youden J", _youden_point, _youden_batch)
    monkeypatch.setattr(metrics, "METRICS", metrics.METRICS + (extra,))
    monkeypatch.setattr(metrics, "METRIC_NAMES", metrics.METRIC_NAMES + ("youden",))
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(20, int), np.zeros(80, int)]
    s = rng.normal(size=100) + y
    m = metrics.binary_metrics(y, s, threshold=0.5)
    assert m["youden"] == m["recall"] + m["specificity"] - 1
    ci = metrics.bootstrap_ci(y, s, 0.5, n=200)
    assert ci["youden"][0] < m["youden"] < ci["youden"][1]
    assert "val_youden" in train._epoch_metrics("val", y, -s, 0.05)
    row = report.report_row("eGAN", {"train_minority": 1, "train_majority": 9, "test_minority": 20,
                                     "test_majority": 80}, "sensitivity", 0.5, m, ci, "-")
    assert row["youden_lo"] == ci["youden"][0]
    md = report._markdown([row], "t", [])
    assert "Youden J" in md and report.fmt_interval(m["youden"], *ci["youden"]) in md
    assert ("youden", "Youden J") in model_card._shown()


def test_registry_directions_and_labels():
    names = [m.name for m in metrics.METRICS]
    assert names == list(metrics.METRIC_NAMES) and len(set(names)) == len(names)
    assert all(m.higher_is_better for m in metrics.METRICS)  # every current metric: higher is better
    assert [h for _, h in report._md_metrics()] == ["Precision", "Recall", "Specificity", "F1", "AUROC", "AUPRC",
                                                    "Sens@{spec}%Spec (test ROC)"]
    assert pd.Series(names).isin(["precision", "auroc"]).sum() == 2
