"""egan_med.evaluation.metrics: the paper's own confusion matrices, degenerate cases, bootstrap, thresholds."""
import math
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from egan_med.evaluation.metrics import METRIC_NAMES, _batch_metrics, binary_metrics, bootstrap_ci
from egan_med.evaluation.thresholds import operating_threshold, threshold_for_sensitivity, threshold_for_specificity


def realize(tp: int, fn: int, fp: int, tn: int) -> tuple[np.ndarray, np.ndarray]:
    """y and s (= -logit) whose decisions at t = 0 give exactly this confusion matrix."""
    y = np.r_[np.ones(tp + fn), np.zeros(fp + tn)].astype(int)
    s = np.r_[np.full(tp, 1.0), np.full(fn, -1.0), np.full(fp, 1.0), np.full(tn, -1.0)]
    return y, s


@pytest.mark.parametrize(
    "matrix, precision, recall, f1, specificity",
    [
        # Table 1 (1:1000): 810/1176, 810/1000, 2*810/(2*810+366+190), 634/1000
        ((810, 190, 366, 634), 0.688776, 0.81, 0.744485, 0.634),
        # Table 2 (1:2500): 821/1588, 821/1000, 2*821/(2*821+767+179), 233/1000
        ((821, 179, 767, 233), 0.517003, 0.821, 0.634467, 0.233),
        # NOTES.md trivial row: all minority on 1000/1000
        ((1000, 0, 1000, 0), 0.5, 1.0, 0.666667, 0.0),
    ],
)
def test_paper_confusion_matrices(matrix, precision, recall, f1, specificity):
    tp, fn, fp, tn = matrix
    m = binary_metrics(*realize(tp, fn, fp, tn))
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (tp, fn, fp, tn)
    assert (m["correct_minority"], m["correct_majority"]) == (tp, tn)
    assert (m["n_minority"], m["n_majority"]) == (tp + fn, fp + tn)
    assert m["precision"] == pytest.approx(precision, abs=1e-6)
    assert m["recall"] == pytest.approx(recall, abs=1e-6)
    assert m["f1"] == pytest.approx(f1, abs=1e-6)
    assert m["specificity"] == pytest.approx(specificity, abs=1e-6)
    assert m["balanced_accuracy"] == pytest.approx((recall + specificity) / 2, abs=1e-6)


def test_table1_rounds_to_paper_f1():
    m = binary_metrics(*realize(810, 190, 366, 634))
    assert round(m["f1"], 2) == 0.74  # the paper's "maximum F1 0.74 at epoch 6"


def test_logit_zero_is_majority():
    # s = -logit; logit 0 must be majority under the paper's rule (logit < 0 is minority).
    m = binary_metrics([1, 0], [0.0, 0.0], threshold=0.0)
    assert m["tp"] == 0 and m["tn"] == 1


def test_degenerate_cases():
    nothing = binary_metrics([1, 1, 0, 0], [-1.0, -2.0, -1.0, -3.0])  # no predicted minority
    assert nothing["precision"] == 0.0 and nothing["f1"] == 0.0 and nothing["recall"] == 0.0
    single = binary_metrics([0, 0, 0], [0.5, -0.5, 1.0])
    assert math.isnan(single["auroc"]) and math.isnan(single["auprc"])
    assert math.isnan(single["recall"]) and math.isnan(single["f1"]) and math.isnan(single["sens_at_spec"])
    assert single["specificity"] == pytest.approx(1 / 3)
    constant = binary_metrics([1, 0, 0, 0], [0.0] * 4)
    assert constant["auroc"] == 0.5 and constant["auprc"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        binary_metrics([0, 1], [0.1, float("nan")])


def test_sens_at_spec_exact_boundary():
    # 10 majority, one above all minority: specificity 0.9 allows exactly that one false positive.
    y = np.r_[np.ones(4), np.zeros(10)].astype(int)
    s = np.r_[[5.0, 4.0, 3.0, -3.2], [4.5], np.linspace(-5, -1, 9)]
    assert binary_metrics(y, s, spec_target=0.9)["sens_at_spec"] == pytest.approx(0.75)
    assert binary_metrics(y, s, spec_target=0.95)["sens_at_spec"] == pytest.approx(0.25)


def _scores(n_min: int, n_maj: int, seed: int = 1, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(1.0, 1.0, n_min), rng.normal(0.0, 1.0, n_maj)]
    if decimals is not None:
        s = np.round(s, decimals)  # many ties
    return np.r_[np.ones(n_min), np.zeros(n_maj)].astype(int), s


@pytest.mark.parametrize("decimals", [None, 1])
def test_batch_kernel_matches_sklearn(decimals):
    y, s = _scores(30, 70, decimals=decimals)
    rng = np.random.default_rng(3)
    i_min, i_maj = rng.integers(0, 30, (5, 30)), rng.integers(0, 70, (5, 70))
    batch = _batch_metrics(s[:30][i_min], s[30:][i_maj], 0.3, 0.9)
    for row in range(5):
        m = binary_metrics(y, np.r_[s[:30][i_min[row]], s[30:][i_maj[row]]], threshold=0.3)
        for name in METRIC_NAMES:
            assert batch[name][row] == pytest.approx(m[name], abs=1e-12), name
        assert m["auroc"] == pytest.approx(roc_auc_score(y, np.r_[s[:30][i_min[row]], s[30:][i_maj[row]]]))


def test_bootstrap_contains_point_and_is_fast():
    y, s = _scores(1000, 1000)
    point = binary_metrics(y, s, threshold=0.5)
    start = time.perf_counter()
    ci = bootstrap_ci(y, s, threshold=0.5, n=1000, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"1000 resamples of 2000 items took {elapsed:.1f} s"
    assert set(ci) == set(METRIC_NAMES)
    for name, (lo, hi) in ci.items():
        assert lo <= point[name] <= hi, name
        assert hi - lo < 0.1, name  # n = 1000 per class: intervals are a few points wide
    assert ci == bootstrap_ci(y, s, threshold=0.5, n=1000, seed=0)  # seeded
    narrow = bootstrap_ci(y, s, threshold=0.5, n=300, seed=0, alpha=0.5)
    assert narrow["auroc"][1] - narrow["auroc"][0] < ci["auroc"][1] - ci["auroc"][0]


def test_bootstrap_single_class_is_nan():
    ci = bootstrap_ci([0, 0, 0], [0.1, 0.2, 0.3], threshold=0.0, n=10)
    assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in ci.values())


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_thresholds_reach_targets(target, decimals):
    y, s = _scores(97, 303, seed=2, decimals=decimals)
    t_sens = threshold_for_sensitivity(y, s, target)
    assert binary_metrics(y, s, threshold=t_sens)["recall"] >= target
    t_spec = threshold_for_specificity(y, s, target)
    assert binary_metrics(y, s, threshold=t_spec)["specificity"] >= target
    if decimals is None:  # without ties the cut is tight: one more item would miss the target
        assert binary_metrics(y, s, threshold=t_sens)["recall"] == pytest.approx(math.ceil(target * 97) / 97)
        assert binary_metrics(y, s, threshold=t_spec)["specificity"] == pytest.approx(
            math.ceil(target * 303) / 303
        )
        # the most specific / most sensitive choice: the next observed score breaks the target
        assert binary_metrics(y, s, threshold=s[s > t_sens].min())["recall"] < target
        assert binary_metrics(y, s, threshold=s[s <= t_spec].max() - 1e-12)["specificity"] < target


def test_operating_threshold_rules():
    y, s = _scores(50, 50)
    assert operating_threshold("logit0", y, s, 0.9) == 0.0
    assert operating_threshold("sensitivity", y, s, 0.9) == threshold_for_sensitivity(y, s, 0.9)
    assert operating_threshold("specificity", y, s, 0.9) == threshold_for_specificity(y, s, 0.9)
    with pytest.raises(ValueError):
        operating_threshold("youden", y, s, 0.9)
    with pytest.raises(ValueError):
        threshold_for_sensitivity(y, s, 0.0)


def test_auprc_matches_sklearn_on_ties():
    y, s = _scores(40, 60, decimals=0)
    assert binary_metrics(y, s)["auprc"] == pytest.approx(average_precision_score(y, s))
