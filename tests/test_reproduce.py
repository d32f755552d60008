"""scripts/reproduce.py end to end on a tiny grid (cohorts, runs, aggregation, skip on rerun, errors), and the
results page that scripts/results_page.py renders from it."""
from __future__ import annotations

import importlib.util
import os
import sys

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def _reproduce():
    return _module("reproduce")


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

    # The results page from the same runs: tables, plots, and hand-written conclusions kept on regeneration.
    page = _module("results_page")
    docs = tmp_path / "docs"
    args = ["--runs", out, "--grid", "test", "--out", str(docs), "--page", "TINY.md", "--title", "Tiny"]
    assert page.main(args) == 0
    md = (docs / "TINY.md").read_text(encoding="utf-8")
    nash_rows = [ln for ln in md.splitlines() if ln.startswith("| tiny 1:8") and "-seed0 |" in ln]
    assert len(nash_rows) == 3  # every eGAN run of every variant: 2 folds of tiny, 1 of tiny_recon
    assert "| tiny 1:8 | eGAN, optimistic (paper protocol) | 2 |" in md and "| 0.67 |" in md
    pngs = sorted(p.name for p in (docs / "results").iterdir())
    assert pngs == ["test_auroc_variants.png", "test_egan_auroc_per_epoch.png"]
    assert all((docs / "results" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    (docs / "TINY.md").write_text(md.replace("<!-- /conclusions -->", "We measured X.\n<!-- /conclusions -->"), encoding="utf-8")
    assert page.main(args) == 0
    assert "We measured X." in (docs / "TINY.md").read_text(encoding="utf-8")


def test_unknown_grid_is_one_line_and_status_2(capsys):
    assert _reproduce().main(["no_such_grid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: grid not found")
