"""egan_med.evaluation.report and egan_med.evaluation.plots: Table 6 rows, the three report files, valid PNGs."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from egan_med.evaluation.metrics import METRIC_NAMES, binary_metrics, bootstrap_ci
from egan_med.evaluation.plots import plot_correct_counts, plot_losses, plot_roc_pr
from egan_med.evaluation.report import report_row, trivial_rows, write_report
from egan_med.evaluation.selection import nash_epochs

COUNTS = {"train_minority": 30, "train_majority": 1080, "test_minority": 1000, "test_majority": 1000}


def _data(seed: int = 0, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(1000), np.zeros(1000)].astype(int)
    return y, np.r_[rng.normal(shift, 1, 1000), rng.normal(0, 1, 1000)]


def _egan_row():
    y, s = _data()
    m = binary_metrics(y, s, threshold=0.5)
    ci = bootstrap_ci(y, s, threshold=0.5, n=200)
    return report_row("eGAN", COUNTS, "sensitivity", 0.5, m, ci, "highest val_auroc = 0.7600"), m, ci


def test_report_row_is_flat_and_complete():
    row, m, ci = _egan_row()
    assert row["ratio"] == "1:36"  # Table 6: 30 minority vs 1080 majority
    assert row["test_minority"] == 1000 and row["threshold"] == 0.5
    for name in METRIC_NAMES:
        assert row[name] == m[name]
        assert (row[f"{name}_lo"], row[f"{name}_hi"]) == ci[name]
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (m["tp"], m["fp"], m["tn"], m["fn"])
    assert all(not isinstance(v, (dict, list, tuple)) for v in row.values())
    no_ci = report_row("x", COUNTS, "logit0", 0.0, m, None, "-")
    assert math.isnan(no_ci["auroc_lo"]) and math.isnan(no_ci["auroc_hi"])
    with pytest.raises(ValueError):
        report_row("x", {"train_minority": 1}, "logit0", 0.0, m, None, "-")


def test_trivial_rows_reproduce_table6_baseline():
    y, _ = _data()
    everything, nothing = trivial_rows(y, COUNTS)
    assert everything["model"] == "all minority" and nothing["model"] == "all majority"
    # Table 6 baseline / NOTES.md: 0.50 / 1.00 / 0.67
    assert (everything["precision"], everything["recall"]) == (0.5, 1.0)
    assert everything["f1"] == pytest.approx(2 / 3)
    assert (nothing["precision"], nothing["recall"], nothing["specificity"]) == (0.0, 0.0, 1.0)
    assert everything["auroc"] == nothing["auroc"] == 0.5
    assert everything["auprc"] == pytest.approx(0.5)


def test_write_report_files(tmp_path):
    row, _, ci = _egan_row()
    y, _ = _data()
    rows = [row, *trivial_rows(y, COUNTS)]
    run_dir = tmp_path / "run"
    write_report(str(run_dir), rows, "CheXpert pneumonia 1:36", ["epoch chosen on validation"])
    assert sorted(os.listdir(run_dir)) == ["report.csv", "report.json", "report.md"]  # no temp files left

    md = (run_dir / "report.md").read_text()
    assert md.startswith("# CheXpert pneumonia 1:36")
    header = "| Model | #train minor | #train major | #test minor | #test major | ratio | " \
             "operating point | " \
             "Precision | Recall | Specificity | F1 | AUROC | AUPRC | Sens@90%Spec (test ROC) |"
    assert header in md
    lo, hi = ci["f1"]
    assert f"{row['f1']:.2f} [{lo:.2f}, {hi:.2f}]" in md
    trivial = "| all minority | 30 | 1080 | 1000 | 1000 | 1:36 | constant | 0.50 | 1.00 | 0.00 | 0.67 | 0.50 |"
    assert trivial in md
    assert "epoch chosen on validation" in md and "highest val_auroc" in md

    csv = pd.read_csv(run_dir / "report.csv")
    assert list(csv["model"]) == ["eGAN", "all minority", "all majority"]
    assert csv.loc[0, "auroc"] == pytest.approx(row["auroc"])

    data = json.loads((run_dir / "report.json").read_text())  # strict JSON: NaN became null
    assert data["title"] == "CheXpert pneumonia 1:36" and data["notes"] == ["epoch chosen on validation"]
    assert data["rows"][1]["auroc_lo"] is None and data["rows"][0]["tp"] == row["tp"]


def _is_png(path: str) -> np.ndarray:
    """The plot's RGB pixels, after checking it is a PNG with lines drawn in colour (not a blank canvas)."""
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
        rgb = np.asarray(im.convert("RGB")).astype(int)
    coloured = (rgb.max(2) - rgb.min(2)) > 60  # saturated pixels: data lines, not axes or text (grey)
    assert coloured.mean() > 0.002, path
    return rgb


def _hues(rgb: np.ndarray) -> set[tuple[int, int, int]]:
    """Distinct saturated colours (coarsely binned) in a plot."""
    sat = rgb[(rgb.max(2) - rgb.min(2)) > 60] // 64
    values, counts = np.unique(sat, axis=0, return_counts=True)
    return {tuple(v) for v, c in zip(values, counts) if c > 30}


def _history(epochs: int = 12) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for e in range(epochs):
        cmin = int(1000 * e / (epochs - 1))
        rows.append({"epoch": e, "loss_d": 1.2 + 0.05 * rng.random(), "loss_g": 0.8 + 0.05 * rng.random(),
                     "test_correct_minority": cmin,
                     "test_correct_majority": cmin + 10 if e == 6 else 1000 - cmin,
                     "test_n_minority": 1000, "test_n_majority": 1000})
    return rows


def test_plots_write_valid_pngs(tmp_path):
    assert nash_epochs(_history(), "test") == [6]  # the Nash marker is drawn
    p = plot_correct_counts(_history(), str(tmp_path / "counts.png"))
    assert p == str(tmp_path / "counts.png")
    counts = _is_png(p)
    assert len(_hues(counts)) >= 2  # minority and majority lines in two colours
    flat = [{**r, "test_correct_minority": 500} for r in _history()]
    assert not np.array_equal(counts, _is_png(plot_correct_counts(flat, str(tmp_path / "flat.png"))))  # data drawn
    both = _hues(_is_png(plot_losses(_history(), str(tmp_path / "losses.png"))))
    only_d = [{"epoch": r["epoch"], "loss_d": r["loss_d"]} for r in _history()]
    assert len(_hues(_is_png(plot_losses(pd.DataFrame(only_d), str(tmp_path / "losses_d.png"))))) < len(both)
    y, s = _data()
    y2, s2 = _data(seed=1, shift=0.3)
    curves = {"eGAN": (y, s, 0.0), "baseline": (y2, s2, 0.5), "empty": (np.zeros(5), np.arange(5.0), 0.0)}
    one = _hues(_is_png(plot_roc_pr({"eGAN": curves["eGAN"]}, str(tmp_path / "one.png"))))
    assert len(_hues(_is_png(plot_roc_pr(curves, str(tmp_path / "sub" / "roc_pr.png"))))) > len(one)  # one colour per model
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    with pytest.raises(ValueError):
        plot_correct_counts(_history(), str(tmp_path / "val.png"), split="val")
