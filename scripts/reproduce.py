#!/usr/bin/env python
"""Run a named grid of experiments one after another and aggregate them into one table.

    python scripts/reproduce.py GRID [--out runs/repro] [--quick]

GRID is ``configs/grids/GRID.yaml`` (or a path to such a file): the cohorts it needs (build_cohort.py
arguments, where ``{name}`` stands for a data root of the grid's ``data_roots``), grid-wide overrides, and a
list of experiments (config, overrides, folds, seeds, the paper's numbers). Cohorts are built once; a run whose directory holds report.json is skipped, an
interrupted one continues where it stopped (egan_med.train resumes a run dir of the same config).
The table goes to OUT/RESULTS_TABLE.md and .csv. Errors print one line and exit with status 2.

Data roots: a grid's ``data_roots`` maps a name to ``{default: PATH, get: HOW}`` (PATH relative to the repository);
``--data-root NAME=PATH`` points it elsewhere. A root that is missing when its cohort must be built stops the run
with one line naming it and HOW to get it (README, "Getting the public datasets").
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from egan_med.io import fmt_bounds, write_json
from egan_med.evaluation.metrics import METRIC_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --quick: one fold and seed per experiment, one short epoch; enough to see the whole pipeline work.
QUICK = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16", "eval.bootstrap=20"]
METRICS = METRIC_NAMES  # every declared metric: mean, sd and averaged CI per experiment


class GridError(Exception):
    """A grid file, cohort build or run failed; the message is the one line the user sees."""


@dataclass
class Run:
    """One training run of one experiment: a fold and a seed."""

    exp: dict[str, Any]
    fold: int
    seed: int
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{f'fold{self.fold}' if self.fold >= 0 else 'all'}-seed{self.seed}"


def load_grid(name: str) -> dict[str, Any]:
    """Read a grid by name (configs/grids/NAME.yaml) or path, and check its shape."""
    path = name if name.endswith((".yaml", ".yml")) else os.path.join(REPO, "configs", "grids", f"{name}.yaml")
    if not os.path.isfile(path):
        raise GridError(f"grid not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            grid = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise GridError(f"{path}: cannot read grid ({type(exc).__name__})") from None
    if not isinstance(grid, dict):
        raise GridError(f"{path}: expected a mapping at the top level")
    if not isinstance(grid.get("experiments"), list) or not grid["experiments"]:
        raise GridError(f"{path}: needs a non-empty 'experiments' list")
    cohorts = grid.get("cohorts") or {}
    for exp in grid["experiments"]:
        for key in ("name", "config", "cohort"):
            if key not in exp:
                raise GridError(f"{path}: an experiment lacks '{key}': {exp}")
        if exp["cohort"] not in cohorts:
            raise GridError(f"{path}: experiment '{exp['name']}' names unknown cohort '{exp['cohort']}'")
    grid["_path"] = path
    return grid


def expand(grid: dict[str, Any], out: str, quick: bool) -> list[Run]:
    """Every (experiment, fold, seed) with its full override list.

    Grid order, or with ``order: fold_first`` every experiment's first fold/seed before any second one,
    so that a study cut short still covers every experiment; an experiment's ``order_offset`` delays it.
    """
    runs, rank = [], []
    for e_idx, exp in enumerate(grid["experiments"]):
        folds, seeds = exp.get("folds", [-1]), exp.get("seeds", [0])
        if quick:
            folds, seeds = folds[:1], seeds[:1]
        cohort = os.path.join(out, "cohorts", exp["cohort"], "cohort.csv")
        for f_idx, fold in enumerate(folds):
            for s_idx, seed in enumerate(seeds):
                ov = [o.replace("{out}", out) for o in grid.get("overrides", [])] + list(exp.get("overrides", []))
                ov += [f"data.cohort={cohort}", f"data.fold={fold}", f"train.seed={seed}", f"name={exp['name']}"]
                runs.append(Run(exp, int(fold), int(seed), ov + (QUICK if quick else [])))
                rank.append((f_idx + s_idx + exp.get("order_offset", 0), e_idx) if grid.get("order") == "fold_first" else (e_idx, 0))
    return [r for _, r in sorted(zip(rank, runs), key=lambda t: t[0])]


def parse_roots(pairs: list[str]) -> dict[str, str]:
    """``NAME=PATH`` arguments of --data-root as a mapping.

    Args:
        pairs: the raw arguments.

    Returns:
        NAME -> PATH.
    """
    roots = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise GridError(f"--data-root expects NAME=PATH, got '{pair}'")
        roots[name] = path
    return roots


def cohort_args(grid: dict[str, Any], key: str, roots: dict[str, str]) -> list[str]:
    """The build_cohort arguments of cohort ``key`` with its ``{root}`` placeholders filled and checked.

    Args:
        grid: the loaded grid.
        key: a cohort name of the grid.
        roots: --data-root overrides (NAME -> PATH).

    Returns:
        The argument list, every data root in it known to exist.

    Raises:
        GridError: a placeholder names no data root, or the root is missing (the message says how to get it).
    """
    declared = grid.get("data_roots") or {}
    line = str(grid["cohorts"][key])
    for name in re.findall(r"\{(\w+)\}", line):
        if name not in declared and name not in roots:
            raise GridError(f"cohort '{key}' names data root '{name}', which {grid['_path']} does not declare")
        spec = declared.get(name) or {}
        path = roots.get(name, spec.get("default", ""))
        full = path if os.path.isabs(path) else os.path.join(REPO, path)
        if not path or not os.path.exists(full):
            how = spec.get("get", "see README, 'Getting the public datasets'")
            raise GridError(f"data root '{name}' not found at {full}: {how}; or pass --data-root {name}=PATH")
        line = line.replace(f"{{{name}}}", path)
    return line.split()


def build_cohorts(grid: dict[str, Any], names: set[str], out: str, roots: dict[str, str] | None = None) -> None:
    """Build each needed cohort once; an existing cohort.csv is kept (idempotent)."""
    for key in sorted(names):
        dest = os.path.join(out, "cohorts", key)
        if os.path.isfile(os.path.join(dest, "cohort.csv")):
            continue
        args = cohort_args(grid, key, roots or {})
        cmd = [sys.executable, "-m", "egan_med.cohort_cli", *args, "--out", dest]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise GridError(f"cohort '{key}': {last}")
        print(f"built cohort {key}", file=sys.stderr)


def run_one(run: Run, out: str) -> float:
    """Train and finalise one run in-process (log to a file); return this call's wall seconds."""
    from egan_med.train import main as train_main

    exp_dir = os.path.join(out, run.exp["name"])
    os.makedirs(exp_dir, exist_ok=True)
    log = os.path.join(exp_dir, f"{run.name}.log")
    config = os.path.join(REPO, run.exp["config"])
    t0 = time.time()
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stderr(fh), contextlib.redirect_stdout(fh):
        try:
            rc = train_main([config, *run.overrides, "--out", os.path.join(exp_dir, run.name)])
        except Exception as exc:  # noqa: BLE001 - any failure becomes the one-line error below
            print(f"error: {type(exc).__name__}: {exc}", file=fh)
            rc = 2
    seconds = time.time() - t0
    _add_wall(exp_dir, run.name, seconds)
    if rc != 0:
        raise GridError(f"{run.exp['name']}/{run.name} failed (exit {rc}); see {log}: {_last_error(log)}")
    return seconds


def _last_error(log: str) -> str:
    with open(log, encoding="utf-8", errors="replace") as fh:
        lines = [ln.strip() for ln in fh if ln.strip().startswith("error")]
    return lines[-1] if lines else "no error line"


def _add_wall(exp_dir: str, name: str, seconds: float) -> None:
    # Accumulated across resumptions, so an interrupted run's total is still its real cost.
    path = os.path.join(exp_dir, f"{name}.wall.json")
    total = _wall(exp_dir, name) + seconds
    write_json(path, {"seconds": total})  # a killed study never leaves half a file to misread


def _wall(exp_dir: str, name: str) -> float:
    path = os.path.join(exp_dir, f"{name}.wall.json")
    if not os.path.isfile(path):
        return 0.0
    with open(path, encoding="utf-8") as fh:
        return float(json.load(fh)["seconds"])


def aggregate(grid: dict[str, Any], runs: list[Run], out: str):
    """Mean ± std over folds/seeds of every report row, with the paper's numbers beside eGAN rows."""
    import numpy as np
    import pandas as pd

    records = []
    for run in runs:
        exp_dir = os.path.join(out, run.exp["name"])
        path = os.path.join(exp_dir, run.name, "report.json")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as fh:
            for row in json.load(fh)["rows"]:
                records.append({"experiment": run.exp["name"], "run": run.name, "wall_s": _wall(exp_dir, run.name), **row})
    if not records:
        return pd.DataFrame()
    df = pd.DataFrame(records)
    table = []
    for (exp_name, model), g in df.groupby(["experiment", "model"], sort=False):
        exp = next(e for e in grid["experiments"] if e["name"] == exp_name)
        row: dict[str, Any] = {"setting": exp.get("setting", ""), "variant": exp.get("variant", ""),
                               "experiment": exp_name, "model": model, "n_runs": len(g),
                               "ratio": g["ratio"].iloc[0], "train_minority": int(g["train_minority"].iloc[0]),
                               "train_majority": int(g["train_majority"].iloc[0]),
                               "test_minority": int(g["test_minority"].iloc[0]), "test_majority": int(g["test_majority"].iloc[0])}
        for m in METRICS:
            vals = g[m].astype(float)
            row[m], row[f"{m}_sd"] = vals.mean(), (vals.std(ddof=1) if len(g) > 1 else np.nan)
            # Per-run bootstrap CIs averaged over folds: the typical single-run uncertainty.
            row[f"{m}_lo"], row[f"{m}_hi"] = g[f"{m}_lo"].astype(float).mean(), g[f"{m}_hi"].astype(float).mean()
        paper = exp.get("paper") or {}
        is_egan = model.startswith("eGAN")
        for m in ("precision", "recall", "f1"):
            row[f"paper_{m}"] = paper.get(m, np.nan) if is_egan else np.nan
        row["wall_s_total"] = float(df[df.experiment == exp_name].drop_duplicates("run")["wall_s"].sum())
        table.append(row)
    result = pd.DataFrame(table)
    result.to_csv(os.path.join(out, "RESULTS_TABLE.csv"), index=False)
    with open(os.path.join(out, "RESULTS_TABLE.md"), "w", encoding="utf-8") as fh:
        fh.write(markdown_table(result, os.path.relpath(grid["_path"], REPO)))
    return result


def _fmt(row: Any, m: str) -> str:
    v, sd, lo, hi = row[m], row[f"{m}_sd"], row[f"{m}_lo"], row[f"{m}_hi"]
    if v != v:
        return "–"
    text = f"{v:.3f}" + (f" ± {sd:.3f}" if sd == sd else "")
    return text + fmt_bounds(lo, hi)


def markdown_table(result, grid_name: str) -> str:
    """The aggregated table as Markdown: measured metrics, then the paper's P/R/F1."""
    head = ("| setting | variant | model | runs | ratio | recall | specificity | precision | F1 | AUROC "
            "| sens@90% spec (test ROC) | paper P | paper R | paper F1 | wall s |\n" + "|---" * 15 + "|\n")
    lines = []
    for _, r in result.iterrows():
        paper = [f"{r[f'paper_{m}']:.2f}" if r[f"paper_{m}"] == r[f"paper_{m}"] else "" for m in ("precision", "recall", "f1")]
        lines.append(f"| {r.setting} | {r.variant} | {r.model} | {r.n_runs} | {r.ratio} | " +
                     " | ".join(_fmt(r, m) for m in ("recall", "specificity", "precision", "f1", "auroc", "sens_at_spec")) +
                     f" | {' | '.join(paper)} | {r.wall_s_total:.0f} |")
    return (f"# Results of grid `{grid_name}`\n\nMean ± std over folds/seeds; [..] = 95% bootstrap CI of one run, "
            "averaged over runs. Validation-selected rows unless labelled 'optimistic (paper protocol)'. Recall, "
            "specificity, precision and F1 at the threshold chosen on validation; sens@90% spec is read off the test "
            "ROC (a threshold no user could set).\n\n"
            + head + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/reproduce.py", description=__doc__.splitlines()[0])
    p.add_argument("grid", help="grid name in configs/grids/ (e.g. cpu_study) or a YAML path")
    p.add_argument("--out", default=None, help="output folder (default runs/repro/GRID)")
    p.add_argument("--quick", action="store_true", help="1 epoch of 2 steps, first fold/seed only (into OUT/quick)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a busy shared machine 2 threads spin-wait ~10x slower)")
    p.add_argument("--keep-going", action="store_true", help="after a failed run, go on with the next (exit 2 at the end)")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild RESULTS_TABLE from finished runs")
    p.add_argument("--data-root", action="append", default=[], metavar="NAME=PATH",
                   help="where a data root of the grid's data_roots lives (repeatable; default: the grid's)")
    args = p.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        roots = parse_roots(args.data_root)
        grid = load_grid(args.grid)
        name = os.path.splitext(os.path.basename(grid["_path"]))[0]
        out = os.path.abspath(args.out or os.path.join(REPO, "runs", "repro", name))
        if args.quick:
            out = os.path.join(out, "quick")
        runs, failed = expand(grid, out, args.quick), []
        if not args.aggregate_only:
            build_cohorts(grid, {r.exp["cohort"] for r in runs}, out, roots)
            t_all = time.time()
            for i, run in enumerate(runs, 1):
                tag = f"[{i}/{len(runs)}] {run.exp['name']} {run.name}"
                if os.path.isfile(os.path.join(out, run.exp["name"], run.name, "report.json")):
                    print(f"{tag}: done before, skipped", file=sys.stderr, flush=True)
                    continue
                print(f"{tag}: running ...", file=sys.stderr, flush=True)
                try:
                    seconds = run_one(run, out)
                except GridError as exc:
                    if not args.keep_going:
                        raise
                    failed.append(f"{run.exp['name']}/{run.name}")
                    print(f"{tag}: FAILED: {exc}", file=sys.stderr, flush=True)
                    continue
                print(f"{tag}: finished in {seconds:.0f} s (elapsed {time.time() - t_all:.0f} s)", file=sys.stderr, flush=True)
        result = aggregate(grid, runs, out)
        print(f"wrote {out}/RESULTS_TABLE.md ({len(result)} rows)", file=sys.stderr)
        if failed:
            raise GridError(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs beside their run dirs)")
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
