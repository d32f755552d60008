#!/usr/bin/env python
"""Render docs/RESULTS.md tables and docs/results/*.png from a finished reproduce.py grid.

    python scripts/results_page.py [--runs runs/repro/cpu_study] [--grid cpu_study] [--out docs]

Every number comes from the runs' report.json / metrics.csv (via RESULTS_TABLE.csv). Text between
``<!-- conclusions -->`` and ``<!-- /conclusions -->`` in an existing RESULTS.md is kept.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import reproduce  # noqa: E402

SETTINGS = ["CIFAR-10 1:2500", "CIFAR-10 1:500", "CIFAR-10 1:50", "CIFAR-10 1:1", "PneumoniaMNIST 1:36"]
KEEP = re.compile(r"<!-- conclusions -->.*?<!-- /conclusions -->", re.S)


def _cell(r: pd.Series, m: str, ci: bool = True) -> str:
    v, sd = r[m], r[f"{m}_sd"]
    if v != v:
        return "–"
    s = f"{v:.3f}" + (f" ± {sd:.3f}" if sd == sd else "")
    lo, hi = r.get(f"{m}_lo"), r.get(f"{m}_hi")
    return s + (f" [{lo:.2f}, {hi:.2f}]" if ci and lo == lo and hi == hi else "")


def _table(rows: pd.DataFrame, cols: list[tuple[str, str]], label) -> str:
    out = ["| " + " | ".join(["setting", "row", "runs"] + [c for c, _ in cols]) + " |", "|---" * (3 + len(cols)) + "|"]
    for _, r in rows.iterrows():
        cells = [_cell(r, m) if m in r and f"{m}_sd" in r else (f"{r[m]:.2f}" if r[m] == r[m] else "") for _, m in cols]
        out.append(f"| {r.setting} | {label(r)} | {r.n_runs} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(_s=df.setting.map({s: i for i, s in enumerate(SETTINGS)})).sort_values("_s", kind="stable").drop(columns="_s")


def issue5_table(t: pd.DataFrame) -> str:
    """Pretrained vs untrained: every row of the paper-eGAN and no-pretraining experiments."""
    rows = _order(t[t.variant.isin(["paper eGAN", "no pretraining"])])
    cols = [("AUROC", "auroc"), ("sens@90% spec", "sens_at_spec"), ("precision", "precision"), ("recall", "recall"),
            ("F1", "f1"), ("paper P", "paper_precision"), ("paper R", "paper_recall"), ("paper F1", "paper_f1")]
    return _table(rows, cols, lambda r: f"{r.model}{' (no pretraining)' if r.variant == 'no pretraining' else ''}")


def issue10_table(t: pd.DataFrame) -> str:
    """Validation-selected rows only: paper eGAN, variants, baseline, kNN, trivial."""
    rows = _order(t[~t.model.str.contains("optimistic") & ((t.variant != "no pretraining"))])
    rows = rows[(rows.variant == "paper eGAN") | rows.model.isin(["eGAN", "supervised baseline", "kNN one-class"])]
    cols = [("AUROC [95% CI]", "auroc"), ("sens@90% spec", "sens_at_spec"), ("AUPRC", "auprc")]
    return _table(rows, cols, lambda r: r.model if r.variant in ("paper eGAN",) else
                  (f"eGAN, {r.variant}" if r.model == "eGAN" else f"{r.model} ({r.variant})"))


def nash_table(runs_dir: str, t: pd.DataFrame) -> str:
    """Per paper-eGAN run: first epoch where test correct-minority ~ correct-majority (the paper's Nash)."""
    out = ["| setting | run | epochs with Nash (test) | val-selected epoch | test correct min/maj per epoch |", "|---|---|---|---|---|"]
    for exp in _order(t[t.variant.isin(["paper eGAN", "no pretraining"])].drop_duplicates("experiment")).itertuples():
        for path in sorted(glob.glob(os.path.join(runs_dir, exp.experiment, "*", "metrics.csv"))):
            m = pd.read_csv(path)
            nash = [int(e) + 1 for e, f in zip(m.epoch, m.test_nash) if bool(f)]
            best = int(m.val_auroc.idxmax()) + 1
            counts = " ".join(f"{a}/{b}" for a, b in zip(m.test_correct_minority, m.test_correct_majority))
            out.append(f"| {exp.setting}{' (no pretraining)' if exp.variant == 'no pretraining' else ''} | "
                       f"{os.path.basename(os.path.dirname(path))} | {', '.join(map(str, nash)) or 'never'} | {best} | {counts} |")
    return "\n".join(out)


def wall_table(t: pd.DataFrame) -> str:
    """Wall time per experiment (all its runs; eGAN plus any baseline and kNN trained alongside)."""
    out = ["| experiment | setting | variant | runs | wall s total | wall s per run |", "|---|---|---|---|---|---|"]
    for r in _order(t.drop_duplicates("experiment")).itertuples():
        out.append(f"| {r.experiment} | {r.setting} | {r.variant} | {r.n_runs} | {r.wall_s_total:.0f} | {r.wall_s_total / r.n_runs:.0f} |")
    return "\n".join(out)


def plots(t: pd.DataFrame, runs_dir: str, out_dir: str) -> list[str]:
    """AUROC bars per setting (pretraining; variants) and test-AUROC-per-epoch curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    files = []
    vs = t[~t.model.str.contains("optimistic") & ~t.model.str.startswith("all ")]
    groups = {"pretraining": vs[vs.variant.isin(["paper eGAN", "no pretraining"])],
              "variants": vs[(vs.variant != "no pretraining") & ((vs.model == "eGAN") | (vs.variant == "paper eGAN"))]}
    for name, g in groups.items():
        g = g.assign(label=[m if v == "paper eGAN" else f"{m} ({v})" for m, v in zip(g.model, g.variant)])
        settings = [s for s in SETTINGS if s in set(g.setting)]
        labels = list(dict.fromkeys(g.label))
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings) + 2), 4))
        w = 0.8 / max(len(labels), 1)
        for i, lab in enumerate(labels):
            sub = g[g.label == lab].set_index("setting")
            xs = [j + i * w for j, s in enumerate(settings) if s in sub.index]
            ys = [sub.loc[s, "auroc"] for s in settings if s in sub.index]
            # Error bars: the per-run 95% bootstrap CI (averaged over folds), which a fold std cannot give for n=1.
            lo = [max(0.0, y - sub.loc[s, "auroc_lo"]) if sub.loc[s, "auroc_lo"] == sub.loc[s, "auroc_lo"] else 0
                  for y, s in zip(ys, [s for s in settings if s in sub.index])]
            hi = [max(0.0, sub.loc[s, "auroc_hi"] - y) if sub.loc[s, "auroc_hi"] == sub.loc[s, "auroc_hi"] else 0
                  for y, s in zip(ys, [s for s in settings if s in sub.index])]
            ax.bar(xs, ys, w, yerr=[lo, hi], label=lab, capsize=2)
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(settings))], settings, fontsize=8)
        ax.set_ylabel("test AUROC (val-selected), 95% CI")
        ax.set_ylim(0.3, 1.0)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        files.append(os.path.join(out_dir, f"auroc_{name}.png"))
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for exp in _order(t[t.variant.isin(["paper eGAN", "no pretraining"])].drop_duplicates("experiment")).itertuples():
        ms = [pd.read_csv(p) for p in sorted(glob.glob(os.path.join(runs_dir, exp.experiment, "*", "metrics.csv")))]
        if ms:
            curve = pd.concat(ms).groupby("epoch").test_auroc.mean()
            ax.plot(curve.index + 1, curve.values, marker="o", ls="-" if exp.variant == "paper eGAN" else ":",
                    label=f"{exp.setting}{' no pretraining' if exp.variant == 'no pretraining' else ''}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("eGAN test AUROC (mean over folds)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    files.append(os.path.join(out_dir, "egan_auroc_per_epoch.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=os.path.join(REPO, "runs", "repro", "cpu_study"))
    p.add_argument("--grid", default="cpu_study")
    p.add_argument("--out", default=os.path.join(REPO, "docs"))
    a = p.parse_args(argv)
    grid = reproduce.load_grid(a.grid)
    t = reproduce.aggregate(grid, reproduce.expand(grid, os.path.abspath(a.runs), False), os.path.abspath(a.runs))
    if t.empty:
        print("error: no finished runs", file=sys.stderr)
        return 2
    pngs = plots(t, a.runs, os.path.join(a.out, "results"))
    walls = t.drop_duplicates("experiment")
    md_path = os.path.join(a.out, "RESULTS.md")
    old = open(md_path, encoding="utf-8").read() if os.path.isfile(md_path) else ""
    kept = KEEP.search(old)
    conclusions = kept.group(0) if kept else "<!-- conclusions -->\n<!-- /conclusions -->"
    text = f"""# Measured results (CPU-sized reproduction and variants)

Generated by `scripts/results_page.py` from `{os.path.relpath(a.runs, REPO)}` (grid `configs/grids/{a.grid}.yaml`,
run with `python scripts/reproduce.py {a.grid}`); only the conclusions section is written by hand.
Total wall time of the {int(sum(1 for _ in glob.glob(os.path.join(a.runs, '*', '*', 'report.json'))))} finished runs:
{walls.wall_s_total.sum() / 60:.1f} min (per experiment in `RESULTS_TABLE.md`).

{conclusions}

## Pretrained vs. no pretraining (issue 5), with the paper's Table 5/6 numbers

Mean ± std over folds/seeds, [..] = per-run 95% bootstrap CI averaged over runs. "eGAN" = epoch and operating
point chosen on validation (logit < 0 as in the paper); "optimistic (paper protocol)" = best test-F1 epoch.

{issue5_table(t)}

![AUROC, pretrained vs none](results/{os.path.basename(pngs[0])})

## Variants (issue 10): validation-selected test AUROC and sensitivity at 90% specificity

{issue10_table(t)}

![AUROC of variants](results/{os.path.basename(pngs[1])})

## Nash equilibrium (|correct minority − correct majority| small, on test) per run

{nash_table(a.runs, t)}

![eGAN test AUROC per epoch](results/{os.path.basename(pngs[2])})

## Wall time (2 shared CPU cores, 1 torch thread)

{wall_table(t)}
"""
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {md_path} and {len(pngs)} plots", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
