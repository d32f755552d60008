"""scripts/reproduce.py end to end on a tiny grid: cohorts, runs, aggregation, skip on rerun, errors."""
from __future__ import annotations

import importlib.util
import os
import sys

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", os.path.join(REPO, "scripts", "reproduce.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def test_tiny_grid_runs_aggregates_and_skips_on_rerun(tmp_path, capsys):
    rep = _reproduce()
    out = str(tmp_path / "repro")
    assert rep.main(["test", "--out", out]) == 0
    table = pd.read_csv(os.path.join(out, "RESULTS_TABLE.csv"))
    egan = table[(table.experiment == "tiny") & (table.model == "eGAN")].iloc[0]
    assert egan.n_runs == 2 and egan.paper_f1 == 0.67  # two folds averaged, paper's number beside it
    assert {"supervised baseline", "kNN one-class", "eGAN, optimistic (paper protocol)"} <= set(table.model)
    assert "recon_weight 1" in set(table.variant)
    assert "| paper F1 |" in open(os.path.join(out, "RESULTS_TABLE.md"), encoding="utf-8").read()
    capsys.readouterr()
    assert rep.main(["test", "--out", out]) == 0  # everything finished: all skipped
    err = capsys.readouterr().err
    assert err.count("done before, skipped") == 3 and "running" not in err


def test_unknown_grid_is_one_line_and_status_2(capsys):
    assert _reproduce().main(["no_such_grid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: grid not found")
