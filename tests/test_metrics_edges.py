"""Edges of the metric registry and its bootstrap that the mutation run (docs/MUTATION.md) showed untested:
the bootstrap against an independent reference, its resample count and argument checks, sens@spec at its
boundaries, input checks and their messages, single-class confusion matrices."""
import math

import numpy as np
import pandas as pd
import pytest

from egan_med.evaluation import metrics
from egan_med.evaluation.metrics import METRIC_NAMES, Resamples, _batch_metrics, binary_metrics, bootstrap_ci


def _data(n_min=7, n_maj=11, seed=4):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(0.8, 1.0, n_min), rng.normal(0.0, 1.0, n_maj)]
    return np.r_[np.ones(n_min, int), np.zeros(n_maj, int)], s


def _reference(y, s, thr, n, seed, alpha, spec_target=0.9):
    """Percentile bootstrap written out: every class drawn uniformly with replacement from all its items."""
    s_min, s_maj = s[y == 1], s[y == 0]
    rng = np.random.default_rng(seed)
    i_min = rng.integers(0, s_min.size, size=(n, s_min.size))
    i_maj = rng.integers(0, s_maj.size, size=(n, s_maj.size))
    vals = _batch_metrics(s_min[i_min], s_maj[i_maj], thr, spec_target)
    return {k: tuple(float(q) for q in np.percentile(v, [100 * alpha / 2, 100 - 100 * alpha / 2]))
            for k, v in vals.items()}


@pytest.mark.parametrize("alpha", [0.05, 0.2, 0.5])
def test_bootstrap_equals_the_written_out_percentile_bootstrap(alpha):
    y, s = _data()
    got = bootstrap_ci(y, s, 0.2, n=200, seed=5, alpha=alpha)
    want = _reference(y, s, 0.2, 200, 5, alpha)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_bootstrap_draws_every_item_including_the_first():
    y = np.array([1, 1, 0, 0])
    s = np.array([5.0, -5.0, 1.0, -1.0])  # item 0 is the only minority above 0, item 2 the only false positive
    ci = bootstrap_ci(y, s, 0.0, n=400, seed=0, alpha=0.01)
    assert ci["recall"] == (0.0, 1.0) and ci["specificity"] == (0.0, 1.0)


def test_bootstrap_runs_n_resamples_by_default_1000_and_seed_0(monkeypatch):
    sizes = []
    real = metrics._batch_metrics

    def spy(s_min, s_maj, threshold, spec_target):
        sizes.append(s_min.shape[0])
        assert s_maj.shape[0] == s_min.shape[0]
        return real(s_min, s_maj, threshold, spec_target)

    y, s = _data()
    monkeypatch.setattr(metrics, "_batch_metrics", spy)
    default = bootstrap_ci(y, s, 0.0)
    assert sum(sizes) == 1000
    assert default == bootstrap_ci(y, s, 0.0, n=1000, seed=0)
    # chunked (memory bound): still exactly n resamples over all chunks
    sizes.clear()
    big_y = np.r_[np.ones(333_333, int), np.zeros(333_334, int)]  # 2_000_000 // 666_667 = 2 per chunk
    big_s = np.random.default_rng(0).normal(size=big_y.size)
    bootstrap_ci(big_y, big_s, 0.0, n=3, seed=0)
    assert sizes == [2, 1]


def test_bootstrap_arguments_are_checked():
    y, s = _data()
    assert set(bootstrap_ci(y, s, 0.0, n=1)) == set(METRIC_NAMES)  # one resample is allowed
    for n, alpha in ((0, 0.05), (1, 0.0), (1, 1.0), (1, 1.5), (0, 0.5)):
        with pytest.raises(ValueError, match=rf"^need n >= 1 and 0 < alpha < 1, got n={n}, alpha={alpha}$"):
            bootstrap_ci(y, s, 0.0, n=n, alpha=alpha)


def test_bootstrap_with_one_majority_item_is_defined():
    ci = bootstrap_ci([1, 1, 0], [0.5, 0.7, 0.1], 0.3, n=20)
    assert ci["recall"] == (1.0, 1.0) and ci["specificity"] == (1.0, 1.0) and ci["auroc"] == (1.0, 1.0)


def test_sens_at_spec_batch_when_no_cut_is_allowed_and_at_the_boundary():
    # The top item is majority and no false positive is allowed: sensitivity 0 at 100% specificity.
    r = Resamples(np.array([[0.1, 0.2]]), np.array([[0.9, 0.0]]), 0.0, 1.0)
    assert metrics._sens_at_spec_batch(r)[0] == 0.0
    # 10 majority at 90%: exactly one false positive allowed, and it is the top item.
    s_min, s_maj = np.array([[3.0, 2.0, 1.0]]), np.array([[4.0, *np.linspace(-5, -1, 9)]])
    assert metrics._sens_at_spec_batch(Resamples(s_min, s_maj, 0.0, 0.9))[0] == 1.0
    y = np.r_[np.ones(3, int), np.zeros(10, int)]
    assert binary_metrics(y, np.r_[s_min[0], s_maj[0]], spec_target=0.9)["sens_at_spec"] == 1.0


def test_sens_at_spec_on_diagonal_roc_steps():
    # Ties across classes make diagonal ROC steps; the point between two equal steps (fpr 0.1, tpr 0.5) is
    # exactly the one 90% specificity allows.
    y = np.r_[np.ones(2, int), np.zeros(10, int)]
    s = np.r_[[2.0, 1.0], [2.0, 1.0], np.full(8, 0.0)]
    assert binary_metrics(y, s, spec_target=0.9)["sens_at_spec"] == 0.5
    assert _batch_metrics(s[:2][None], s[2:][None], 0.0, 0.9)["sens_at_spec"][0] == 0.5


def test_input_checks_and_messages():
    assert binary_metrics([1], [0.5])["tp"] == 1  # one item is a valid input
    with pytest.raises(ValueError, match=r"^y and s must be non-empty and of equal length, got 2 and 1$"):
        binary_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match=r"^y and s must be non-empty and of equal length, got 0 and 0$"):
        binary_metrics([], [])
    with pytest.raises(ValueError, match=r"^y must hold only 0 \(majority\) and 1 \(minority\)$"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"^s holds NaN or infinite scores$"):
        binary_metrics([0, 1], [0.1, math.inf])
    # scores that arrive as objects (a CSV column read as text) are taken as numbers
    m = binary_metrics([1, 0, 1], pd.Series(["0.5", "-0.2", "0.1"], dtype=object), threshold=0.3)
    assert (m["tp"], m["fn"], m["tn"]) == (1, 1, 1) and m["auroc"] == 1.0


def test_single_class_confusion_matrix_and_recorded_settings():
    m = binary_metrics([0, 0], [-1.0, -2.0], threshold=0.25, spec_target=0.8)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 0, 2, 0)
    assert m["threshold"] == 0.25 and m["spec_target"] == 0.8
    m = binary_metrics([1, 1], [1.0, 2.0])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 0, 0, 0)
