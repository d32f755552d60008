"""egan_med.evaluation.selection: validation-only selection, Nash scaling, the paper protocol."""
import numpy as np
import pandas as pd
import pytest

from egan_med.evaluation.selection import Selection, is_nash, nash_epochs, select_epoch, select_epoch_paper_protocol


def history(n_val: int = 100) -> list[dict]:
    """Five epochs; validation favours epoch 2 (AUROC) / 3 (F1), test favours epoch 4."""
    rows = []
    for epoch, (auroc, f1, cmin, cmaj) in enumerate(
        [(0.60, 0.40, 5, 95), (0.70, 0.50, 30, 80), (0.80, 0.55, 60, 70), (0.75, 0.60, 70, 69),
         (0.65, 0.45, 90, 20)]
    ):
        rows.append({
            "epoch": epoch, "loss_d": 1.3, "loss_g": 0.7,
            "val_auroc": auroc, "val_f1": f1,
            "val_correct_minority": cmin * n_val // 100, "val_correct_majority": cmaj * n_val // 100,
            "val_n_minority": n_val, "val_n_majority": n_val,
            "test_auroc": [0.5, 0.6, 0.7, 0.8, 0.99][epoch], "test_f1": [0.1, 0.2, 0.3, 0.4, 0.9][epoch],
            "test_correct_minority": 500, "test_correct_majority": 500,  # Nash at every epoch on test
            "test_n_minority": 1000, "test_n_majority": 1000,
        })
    return rows


def test_rules_pick_validation_best():
    assert select_epoch(history(), "val_auroc").epoch == 2
    assert select_epoch(history(), "val_f1").epoch == 3
    # gaps |cmin - cmaj| / 100: 0.9, 0.5, 0.1, 0.01, 0.7 -> only epoch 3 is within 20/1000
    nash = select_epoch(history(), "nash")
    assert isinstance(nash, Selection) and nash.epoch == 3 and nash.rule == "nash"
    assert nash.value == pytest.approx(0.01)
    assert "first epoch at Nash" in nash.reason


@pytest.mark.parametrize("rule", ["val_auroc", "val_f1", "nash"])
def test_test_columns_cannot_change_the_choice(rule):
    clean = select_epoch(history(), rule)
    for garbage in (np.nan, "junk", 1e9):
        rows = [{k: (garbage if k.startswith("test_") else v) for k, v in r.items()} for r in history()]
        assert select_epoch(rows, rule) == clean
    no_test = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in history()]
    assert select_epoch(pd.DataFrame(no_test), rule) == clean


@pytest.mark.parametrize("rule", ["val_auroc", "val_f1", "nash"])
def test_only_test_columns_raises(rule):
    rows = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in history()]
    with pytest.raises(ValueError, match="needs history columns"):
        select_epoch(rows, rule)


def test_nash_threshold_scales_with_split_size():
    # 1000 + 1000: a gap of 20 images is Nash, 21 is not (the paper's rule verbatim).
    assert is_nash(520, 500, 2000) and not is_nash(521, 500, 2000)
    # 100 + 100: the same rule allows 2 images.
    assert is_nash(52, 50, 200) and not is_nash(53, 50, 200)
    # threshold 5 on 100 + 100 (the paper's 1:1 CIFAR-100 run allowed 5 of 100): 0.5 image.
    assert not is_nash(76, 71, 200, threshold=5.0) and is_nash(76, 71, 200, threshold=50.0)
    # imbalanced split: compare per-class accuracy, not raw counts.
    assert is_nash(90, 3240, 3700, n_minority=100)  # 0.90 vs 0.90
    assert not is_nash(100, 100, 3700, n_minority=100)  # equal counts, accuracies 1.0 vs 0.03
    # select_epoch uses the split's own sizes: history() at 1000 + 1000 gives the same choice.
    assert select_epoch(history(1000), "nash").epoch == 3


def test_nash_fallback_is_smallest_gap():
    rows = history()
    rows[3]["val_correct_majority"] = 66  # gap 0.04 > 0.02: no epoch at Nash now
    sel = select_epoch(rows, "nash")
    assert sel.epoch == 3 and "no epoch reached Nash" in sel.reason
    assert select_epoch(rows, "nash", nash_threshold=40.0).reason.startswith("first epoch at Nash")


def test_ties_go_to_the_earliest_epoch_and_nan_is_skipped():
    rows = history()
    rows[0]["val_auroc"], rows[4]["val_auroc"] = np.nan, 0.80
    assert select_epoch(rows, "val_auroc").epoch == 2
    assert select_epoch(list(reversed(rows)), "val_auroc").epoch == 2  # order of rows does not matter


def test_paper_protocol_picks_test_best():
    sel = select_epoch_paper_protocol(history())
    assert sel.epoch == 4 and sel.value == pytest.approx(0.9)
    assert "optimistic (paper protocol)" in sel.reason
    assert select_epoch_paper_protocol(history(), "test_auroc").epoch == 4
    with pytest.raises(ValueError):
        select_epoch_paper_protocol(history(), "val_f1")


def test_nash_epochs_for_plots():
    assert nash_epochs(history(), "val") == [3]
    assert nash_epochs(history(), "test") == [0, 1, 2, 3, 4]
    assert nash_epochs([{"epoch": 0}], "val") == []


def test_unknown_rule_and_missing_epoch():
    with pytest.raises(ValueError):
        select_epoch(history(), "test_f1")
    with pytest.raises(ValueError):
        select_epoch([{"val_auroc": 0.5}], "val_auroc")
