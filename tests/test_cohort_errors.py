"""Bad input to the cohort command (egan_med.cohort_cli, run by scripts/build_cohort.py): one line `error: ...` naming the problem, exit status 2, nothing written."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import data_file

from egan_med import cohort_cli as build_cohort

REPO = Path(__file__).resolve().parents[1]
COVID = data_file("cxr_covid_ccby", "train.csv")
NIH = data_file("nih_cxr14_labels", "Data_Entry_2017_v2020.csv.gz")


def _fails(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], *expected: str) -> str:
    out = tmp_path / "out" / "cohort"
    assert build_cohort.main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written, no temp dir
    return err


def _covid_variant(tmp_path: Path, edit) -> Path:
    df = pd.read_csv(COVID, dtype=str, keep_default_na=False)
    edit(df)
    path = tmp_path / "cxr_covid_ccby" / "train.csv"
    path.parent.mkdir(exist_ok=True)
    df.to_csv(path, index=False)
    return path


def test_missing_file(tmp_path, capsys) -> None:
    _fails(tmp_path, capsys, ["--csv", str(tmp_path / "nope.csv")], "no such file", "nope.csv")


def test_missing_columns_are_named(tmp_path, capsys) -> None:
    csv = _covid_variant(tmp_path, lambda df: df.pop("Frontal/Lateral"))
    _fails(tmp_path, capsys, ["--csv", str(csv)], "missing columns: Frontal/Lateral")
    nih = tmp_path / "nih.csv"
    pd.read_csv(NIH, nrows=5).drop(columns=["Patient ID"]).to_csv(nih, index=False)
    _fails(tmp_path, capsys, ["--nih", str(nih)], "missing columns: Patient ID")


def test_unknown_label(tmp_path, capsys) -> None:
    _fails(tmp_path, capsys, ["--csv", str(COVID), "--label", "Pneumonai"], "unknown label 'Pneumonai'",
           "did you mean 'Pneumonia'")


def test_label_values_outside_policy(tmp_path, capsys) -> None:
    def two_rows_of_2(df: pd.DataFrame) -> None:
        df.loc[[3, 7], "Pneumonia"] = "2.0"
    csv = _covid_variant(tmp_path, two_rows_of_2)
    _fails(tmp_path, capsys, ["--csv", str(csv)], "'Pneumonia' has 2 value(s) outside {1, 0, -1, blank}", "2.0")


def test_sizes_the_data_cannot_meet(tmp_path, capsys) -> None:
    _fails(tmp_path, capsys, ["--csv", str(COVID), "--label", "No Finding", "--test-minority", "50"],
           "test split needs 50 minority images but only 5 are available")
    _fails(tmp_path, capsys, ["--nih", str(NIH), "--ratio", "200000"],
           "--ratio 200000 needs at least 200000 majority training images per minority image", "available")
    _fails(tmp_path, capsys, ["--medmnist", str(REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"),
                              "--minority", "1", "--folds", "5", "--train-minority", "1000"],
           "train split needs 5000 minority images (5 folds x 1000) but only 3494 are available")


def test_paths_escaping_the_root(tmp_path, capsys) -> None:
    table = tmp_path / "table.csv"
    pd.DataFrame({"path": ["a.png", "../../etc/passwd", "b.png"], "label": ["x", "y", "y"]}).to_csv(table, index=False)
    _fails(tmp_path, capsys, ["--generic", str(table), "--minority", "x"], "escape the data root", "../../etc/passwd")
    csv = _covid_variant(tmp_path, lambda df: df.__setitem__("Path", "/abs/" + df.Path))
    _fails(tmp_path, capsys, ["--csv", str(csv)], "escape the data root", "'/abs/cxr_covid_ccby")


def test_empty_class(tmp_path, capsys) -> None:
    folder = tmp_path / "imgs"
    (folder / "normal").mkdir(parents=True)
    (folder / "pneumonia").mkdir()
    (folder / "normal" / "a.png").write_bytes(data_file("cxr_samples", "nih", "00000001_000.png").read_bytes())
    _fails(tmp_path, capsys, ["--folder", str(folder), "--minority", "pneumonia", "--majority", "normal"],
           "class 'pneumonia' has no images")
    csv = _covid_variant(tmp_path, lambda df: df.__setitem__("No Finding", ""))
    _fails(tmp_path, capsys, ["--csv", str(csv), "--label", "No Finding"], "empty class: no minority images")


def test_csv_that_is_not_a_csv(tmp_path, capsys) -> None:
    _fails(tmp_path, capsys, ["--csv", str(REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz")],
           "not a", "pneumoniamnist_28.npz")
    text = tmp_path / "notes.csv"
    text.write_text("just some words\nand more words\n")
    _fails(tmp_path, capsys, ["--csv", str(text)], "not a CSV with a header row")


def test_option_for_another_source_and_bad_ranges(tmp_path, capsys) -> None:
    _fails(tmp_path, capsys, ["--nih", str(NIH), "--uncertain", "zeros"], "--uncertain does not apply to nih")
    _fails(tmp_path, capsys, ["--csv", str(COVID), "--folds", "1"], "--folds must be 0 (none) or at least 2")
    _fails(tmp_path, capsys, ["--csv", str(COVID), "--ratio", "2", "--train-minority", "3", "--train-majority", "6"],
           "at most two of --ratio")
