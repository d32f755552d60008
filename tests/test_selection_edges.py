"""Edges of epoch selection that the mutation run (docs/MUTATION.md) showed untested: exact reasons and messages,
default arguments, Nash boundaries, degenerate splits, non-numeric cells and the history's shape."""
import warnings

import numpy as np
import pandas as pd
import pytest

from egan_med.evaluation.selection import (as_frame, is_nash, nash_epochs, select_epoch,
                                           select_epoch_paper_protocol)

from test_selection import history


def test_select_epoch_returns_rule_value_and_exact_reason():
    sel = select_epoch(history(), "val_auroc")
    assert (sel.epoch, sel.rule, sel.value) == (2, "val_auroc", pytest.approx(0.80))
    assert sel.reason == "highest val_auroc = 0.8000 over 5 epochs (validation)"
    nash = select_epoch(history(), "nash")
    assert nash.reason == ("first epoch at Nash on validation (|recall - specificity| = 0.0100 <= 20/1000 per class "
                           "= 2.0 of 100 minority, 2.0 of 100 majority); epoch 3: correct minority 70, "
                           "correct majority 69")
    paper = select_epoch_paper_protocol(history())
    assert (paper.rule, paper.epoch) == ("paper_protocol", 4)
    assert paper.reason == ("optimistic (paper protocol): epoch with the highest test_f1 = 0.9000 over 5 epochs, "
                            "chosen on the test split itself")


def test_selection_messages_name_the_problem():
    with pytest.raises(ValueError, match=r"^unknown selection rule 'x'; use one of \('val_auroc', 'val_f1', 'nash'\)$"):
        select_epoch(history(), "x")
    with pytest.raises(ValueError, match=r"^rule val_f1 needs history columns \['val_f1'\]; have \['epoch'\]$"):
        select_epoch([{"epoch": 0, "test_f1": 0.5}], "val_f1")
    with pytest.raises(ValueError, match=r"^rule nash needs history columns \['val_correct_minority'"):
        select_epoch([{"epoch": 0}], "nash")
    with pytest.raises(ValueError, match=r"^the paper protocol needs history columns \['test_auroc'\]"):
        select_epoch_paper_protocol([{"epoch": 0}], "test_auroc")
    with pytest.raises(ValueError, match=r"^the paper protocol selects on a test_ column, got 'val_f1'$"):
        select_epoch_paper_protocol(history(), "val_f1")
    with pytest.raises(ValueError, match=r"^val_auroc is NaN at every epoch$"):
        select_epoch([{"epoch": 0, "val_auroc": np.nan}], "val_auroc")
    with pytest.raises(ValueError, match=r"^history must be non-empty and have an 'epoch' column$"):
        as_frame([])
    rows = [dict(r, val_n_minority=0, val_correct_minority=0) for r in history()]
    with pytest.raises(ValueError, match=r"^the Nash gap is NaN at every epoch$"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        select_epoch(rows, "nash")


def test_non_numeric_cells_are_skipped_not_fatal():
    rows = history()
    rows[2]["val_auroc"] = "n/a"  # e.g. a hand-edited metrics.csv
    assert select_epoch(rows, "val_auroc").epoch == 3


def test_as_frame_casts_sorts_and_keeps_only_its_columns():
    df = as_frame([{"epoch": 2.0, "m": "c"}, {"epoch": 0.0, "m": "a"}, {"epoch": 1.0, "m": "b"}])
    assert df["epoch"].dtype.kind == "i" and df["epoch"].tolist() == [0, 1, 2]
    assert list(df.columns) == ["epoch", "m"] and df.index.tolist() == [0, 1, 2] and df["m"].tolist() == ["a", "b", "c"]
    # stable: rows of a repeated epoch (a resumed run) keep their order, however many there are
    n = 60
    df = as_frame(pd.DataFrame({"epoch": [i % 2 for i in range(n)], "k": range(n)}))
    assert df["k"].tolist() == list(range(0, n, 2)) + list(range(1, n, 2))


def test_is_nash_is_false_without_a_class_and_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not is_nash(0, 5, 10, n_minority=0)
        assert not is_nash(5, 0, 5, n_minority=5)
        assert is_nash(1, 9, 10, n_minority=1)  # one minority image, all correct: at Nash
        assert is_nash(9, 1, 10, n_minority=9)  # one majority image
        assert is_nash(0, 0, 2, n_minority=1)  # both wrong: gap 0


def test_nash_defaults_are_the_papers_20_on_validation():
    rows = []
    for epoch, (cmin, cmaj) in enumerate([(900, 979), (900, 920), (900, 1000)]):  # gaps .079, .020, .100
        rows.append({"epoch": epoch, "val_correct_minority": cmin, "val_correct_majority": cmaj,
                     "val_n_minority": 1000, "val_n_majority": 1000})
    assert nash_epochs(rows) == [1]
    rows[1]["val_correct_majority"] = 920.5  # gap 0.0205: over 20/1000, under 21/1000
    assert nash_epochs(rows) == [] and nash_epochs(rows, threshold=21.0) == [1]
    assert select_epoch(rows, "nash").reason.startswith("no epoch reached Nash")
    # a gap of 1 - 0.98 (0.02 plus float error) is still at 20/1000
    rows[1].update(val_correct_minority=49, val_correct_majority=50, val_n_minority=50, val_n_majority=50)
    assert nash_epochs(rows) == [1] and select_epoch(rows, "nash").epoch == 1
