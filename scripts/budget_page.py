#!/usr/bin/env python
"""Render docs/RESULTS_BUDGET.md from a finished budget_study grid (issue 17).

    python scripts/budget_page.py [--runs runs/repro/budget_study] [--grid budget_study] [--out docs]

Every number comes from the runs' report.json ``protocol_rows`` (both protocols of each run). Text between
``<!-- conclusions -->`` and ``<!-- /conclusions -->`` in an existing page is kept.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd

try:
    from scripts import reproduce
    from scripts.results_page import KEEP
except ImportError:  # run as a file: scripts/ itself is on sys.path
    import reproduce
    from results_page import KEEP

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ["CIFAR-10 1:2500", "CIFAR-10 1:500", "CIFAR-10 1:50", "PneumoniaMNIST 1:36",
            "CIFAR-10 deer vs horse 1:500", "CIFAR-10 ship vs truck 1:500",
            "CIFAR-10 1:2500 (64 px)", "CIFAR-10 1:500 (64 px)", "PneumoniaMNIST 1:36 (64 px)",
            "CIFAR-10 1:2500 (480 updates)", "CIFAR-10 1:500 (480 updates)", "PneumoniaMNIST 1:36 (480 updates)"]
RECOMMENDED = "fusion (val-weighted rank)"
SINGLE = ["paper eGAN", "eGAN, TTUR", "supervised baseline", "kNN one-class", "patch memory"]
ORDER = SINGLE + ["fusion (mean rank)", RECOMMENDED, "all minority", "all majority"]


def collect(grid: dict, runs_dir: str) -> pd.DataFrame:
    """One row per (run, protocol, detector) from every finished run's report.json."""
    out = []
    for run in reproduce.expand(grid, runs_dir, False):
        path = os.path.join(runs_dir, run.exp["name"], run.name, "report.json")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as fh:
            rep = json.load(fh)
        paper = run.exp.get("variant") == "paper eGAN"
        # "64 px: ..." or "480 updates: ...": a variant of the setting, kept apart from the 32 px short schedule.
        head, colon, _ = str(run.exp.get("variant", "")).partition(":")
        setting = run.exp["setting"] + (f" ({head})" if colon else "")
        for r in rep.get("protocol_rows", []):
            model = ("paper eGAN" if paper else "eGAN, TTUR") if r["model"] == "eGAN" else r["model"]
            out.append(dict(setting=setting, experiment=run.exp["name"], run=run.name, protocol=r["protocol"], model=model,
                            used=r["val_minority_used"], epoch=r["epoch"], threshold=r["threshold"],
                            **{k: r[k] if r[k] is not None else np.nan for k in
                               ("auroc", "auroc_lo", "auroc_hi", "sens_at_spec", "sens_at_spec_lo", "sens_at_spec_hi",
                                "recall", "specificity")}))
        if not paper:  # constant scores: the same under either protocol
            for r in rep["rows"]:
                if r["model"] in ("all minority", "all majority"):
                    for proto in {x["protocol"] for x in rep.get("protocol_rows", [])}:
                        out.append(dict(setting=setting, experiment=run.exp["name"], run=run.name, protocol=proto, model=r["model"],
                                        used=np.nan, epoch=-1, threshold=np.nan, auroc=0.5, auroc_lo=np.nan,
                                        auroc_hi=np.nan, sens_at_spec=r["sens_at_spec"], sens_at_spec_lo=np.nan,
                                        sens_at_spec_hi=np.nan, recall=r["recall"], specificity=r["specificity"]))
    return pd.DataFrame(out)


def _ms(values: pd.Series, ci_lo: pd.Series | None = None, ci_hi: pd.Series | None = None) -> str:
    v = values.dropna()
    if v.empty:
        return "–"
    s = f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")
    if ci_lo is not None and ci_lo.notna().any():
        s += f" [{ci_lo.mean():.2f}, {ci_hi.mean():.2f}]"
    return s


def main_table(df: pd.DataFrame) -> str:
    """Per setting and detector: both protocols side by side."""
    head = ("| setting | detector | runs | val positives (realistic / generous) | recall at the val threshold, realistic | "
            "specificity at the val threshold, realistic | AUROC realistic | AUROC generous | "
            "sens@90% spec read off the test ROC, realistic | same, generous | epochs chosen realistic / generous |")
    lines = [head, "|---" * 11 + "|"]
    for setting in [s for s in SETTINGS if s in set(df.setting)]:
        for model in [m for m in ORDER if m in set(df[df.setting == setting].model)]:
            g = df[(df.setting == setting) & (df.model == model)]
            rl, gn = g[g.protocol == "realistic"], g[g.protocol == "generous"]
            used = f"{_num(rl.used)} / {_num(gn.used)}"
            ep = lambda x: ",".join(str(int(e)) for e in x.epoch) if (x.epoch >= 0).any() else "–"  # noqa: E731
            lines.append(f"| {setting} | {model} | {rl.run.nunique()} | {used} | {_ms(rl.recall)} | {_ms(rl.specificity)} | "
                         f"{_ms(rl.auroc, rl.auroc_lo, rl.auroc_hi)} | {_ms(gn.auroc, gn.auroc_lo, gn.auroc_hi)} | "
                         f"{_ms(rl.sens_at_spec, rl.sens_at_spec_lo, rl.sens_at_spec_hi)} | "
                         f"{_ms(gn.sens_at_spec, gn.sens_at_spec_lo, gn.sens_at_spec_hi)} | {ep(rl)} / {ep(gn)} |")
    return "\n".join(lines)


def _num(x: pd.Series) -> str:
    x = x.dropna()
    return "–" if x.empty else "/".join(sorted({str(int(v)) for v in x}))


def goal_table(df: pd.DataFrame, protocol: str = "realistic", recommended: str = RECOMMENDED) -> str:
    """Per run under ``protocol``: the recommended detector vs the best single detector of that run and vs the baseline."""
    lines = ["| setting | run | recommended AUROC [95% CI] | best single detector (AUROC [95% CI]) | within CI | "
             "recommended − baseline AUROC |", "|---|---|---|---|---|---|"]
    summary = []
    d = df[df.protocol == protocol]
    for setting in [s for s in SETTINGS if s in set(d.setting)]:
        for run in sorted(set(d[d.setting == setting].run)):
            g = d[(d.setting == setting) & (d.run == run)].set_index("model")
            if recommended not in g.index:
                continue
            rec = g.loc[recommended]
            singles = g[g.index.isin(SINGLE)]
            best = singles.auroc.idxmax()
            b = singles.loc[best]
            within = rec.auroc >= rec.auroc_lo and rec.auroc_hi >= b.auroc  # the best's point inside the recommended's CI
            delta = rec.auroc - g.loc["supervised baseline"].auroc if "supervised baseline" in g.index else np.nan
            summary.append(dict(setting=setting, within=bool(rec.auroc >= b.auroc or within), delta=delta))
            lines.append(f"| {setting} | {run} | {rec.auroc:.3f} [{rec.auroc_lo:.2f}, {rec.auroc_hi:.2f}] | {best} "
                         f"({b.auroc:.3f} [{b.auroc_lo:.2f}, {b.auroc_hi:.2f}]) | "
                         f"{'yes' if rec.auroc >= b.auroc else ('within CI' if within else 'NO')} | {delta:+.3f} |")
    s = pd.DataFrame(summary)
    if not s.empty:
        lines += ["", "| setting | runs | runs at or within CI of the best single detector | mean recommended − baseline "
                  "AUROC (min, max) |", "|---|---|---|---|"]
        for setting, g in s.groupby("setting", sort=False):
            lines.append(f"| {setting} | {len(g)} | {int(g.within.sum())} of {len(g)} | {g.delta.mean():+.3f} "
                         f"({g.delta.min():+.3f}, {g.delta.max():+.3f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=os.path.join(REPO, "runs", "repro", "budget_study"))
    p.add_argument("--grid", default="budget_study")
    p.add_argument("--out", default=os.path.join(REPO, "docs"))
    p.add_argument("--page", default="RESULTS_BUDGET.md")
    a = p.parse_args(argv)
    grid = reproduce.load_grid(a.grid)
    df = collect(grid, os.path.abspath(a.runs))
    if df.empty:
        print("error: no finished runs with protocol rows", file=sys.stderr)
        return 2
    md_path = os.path.join(a.out, a.page)
    old = open(md_path, encoding="utf-8").read() if os.path.isfile(md_path) else ""
    kept = KEEP.search(old)
    conclusions = kept.group(0) if kept else "<!-- conclusions -->\n<!-- /conclusions -->"
    n_runs = df.groupby(["experiment", "run"]).ngroups
    text = f"""# Few positives, honestly: a realistic label budget (issue 17)

Generated by `scripts/budget_page.py` from `{os.path.relpath(os.path.abspath(a.runs), REPO)}` (grid
`configs/grids/budget_study.yaml`, run with `python scripts/reproduce.py budget_study --data-root ...`); only the
conclusions section is written by hand. {n_runs} finished runs. EfficientNet-Lite0 (ImageNet, frozen trunk), 2 CPU
cores, 1 torch thread; schedule: 4 epochs of 6 majority batches of 64 (24 D/G updates) at 32 px, except settings
marked "(64 px)" (same schedule at 64 px) and "(480 updates)" (40 epochs of 12 batches, cpu_long's schedule).
Epochs are numbered from 0.

Protocols (both from the same trained models): **realistic** = epoch selection and threshold use only as many
validation positives as there are training positives (`eval.val_minority_budget: -1`; a seeded subset, the same
images for every detector) plus every validation majority image; **generous** = all 100 (CIFAR-10) or 389
(PneumoniaMNIST) validation positives, the protocol of `docs/RESULTS.md`. Thresholds: 90% specificity on the
validation images the protocol keeps. Recall and specificity at that validation-chosen threshold are what a
deployment does; the "sens@90% spec" columns are read off the test ROC at 90% test specificity, a threshold no user
could have set, so they compare rankings, not deployments.
Recommended detector: `{RECOMMENDED}` (rank-normalised scores of eGAN (TTUR), supervised baseline, kNN and patch
memory, weighted by each one's validation AUROC above 0.5 on the budgeted images).

{conclusions}

## Every detector under both protocols (test split)

Mean ± std over folds/seeds; [..] = per-run 95% bootstrap CI (200 resamples) averaged over runs.

{main_table(df)}

## Goal check under the realistic budget

"yes" = the recommended detector's test AUROC is at least the best single detector's of the same run; "within CI" =
the best single detector's AUROC lies inside the recommended detector's 95% CI. (The best single detector is picked
on test, after the fact: an oracle no user has.)

{goal_table(df)}

### The same check for the other fusion rule, `fusion (mean rank)` (equal weights, no label spent on them)

{goal_table(df, recommended="fusion (mean rank)")}
"""
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {md_path} ({len(df)} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
