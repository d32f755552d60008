"""Exact operating thresholds at their edges, found untested by the mutation run (docs/MUTATION.md): the midpoint,
adjacent floats, a cut at the lowest or highest score, one item of a class, and the error messages."""
import numpy as np
import pytest

from egan_med.evaluation.metrics import binary_metrics
from egan_med.evaluation.thresholds import operating_threshold, threshold_for_sensitivity, threshold_for_specificity


def test_thresholds_are_the_midpoint_of_the_gap():
    y, s = np.array([1, 1, 0, 0]), np.array([4.0, 2.0, 1.0, 0.0])
    assert threshold_for_sensitivity(y, s, 1.0) == 1.5  # between the 2nd minority (2) and the next score (1)
    assert threshold_for_sensitivity(y, s, 0.5) == 3.0  # between 4 and 2
    assert threshold_for_specificity(y, s, 1.0) == 1.5  # between the top majority (1) and the next score (2)
    assert threshold_for_specificity(y, s, 0.5) == 0.5
    assert operating_threshold("sensitivity", y, s, 1.0) == 1.5


def test_thresholds_on_adjacent_floats_still_separate_them():
    lo = 1.0000000000000002
    hi = np.nextafter(lo, 2.0)  # (lo + hi) / 2 rounds to hi: the halfway point does not exist
    y, s = np.array([1, 0]), np.array([hi, lo])
    t = threshold_for_sensitivity(y, s, 1.0)
    assert t == lo and binary_metrics(y, s, t)["recall"] == 1.0 and binary_metrics(y, s, t)["specificity"] == 1.0
    t = threshold_for_specificity(y, s, 1.0)
    assert t == lo and binary_metrics(y, s, t)["recall"] == 1.0


def test_cut_at_the_extremes():
    # the minority item is the lowest score: nothing lies below the cut, so the threshold is the cut - 1
    y, s = np.array([1, 0, 0]), np.array([-1.0, 5.0, 3.0])
    assert threshold_for_sensitivity(y, s, 1.0) == -2.0
    # the top majority item is the highest score: nothing lies above, so the threshold is that score
    y, s = np.array([0, 1, 0]), np.array([7.0, 5.0, 3.0])
    assert threshold_for_specificity(y, s, 1.0) == 7.0
    # a tie at the cut: the next higher score is above the tied group
    y, s = np.array([0, 1, 0, 1]), np.array([2.0, 2.0, 1.0, 4.0])
    assert threshold_for_specificity(y, s, 1.0) == 3.0


def test_one_item_of_a_class_is_enough():
    y, s = np.array([1, 0, 0]), np.array([1.0, 0.0, -1.0])
    assert threshold_for_sensitivity(y, s, 1.0) == 0.5
    y, s = np.array([0, 1, 1]), np.array([0.0, 1.0, 2.0])
    assert threshold_for_specificity(y, s, 1.0) == 0.5


def test_threshold_messages():
    y, s = np.array([1, 0]), np.array([1.0, 0.0])
    for target in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"^target must be in \(0, 1\], got {target}$"):
            threshold_for_sensitivity(y, s, target)
    with pytest.raises(ValueError, match=r"^no minority items: sensitivity is undefined$"):
        threshold_for_sensitivity([0, 0], [1.0, 0.0], 0.9)
    with pytest.raises(ValueError, match=r"^no majority items: specificity is undefined$"):
        threshold_for_specificity([1, 1], [1.0, 0.0], 0.9)
    with pytest.raises(ValueError, match=r"^unknown operating point rule 'youden'; use logit0, sensitivity or "
                                         r"specificity$"):
        operating_threshold("youden", y, s, 0.9)
