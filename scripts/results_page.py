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
import yaml

from egan_med.io import fmt_bounds

try:
    from scripts import reproduce
except ImportError:  # run as a file (python scripts/results_page.py): scripts/ itself is on sys.path
    import reproduce

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETTINGS = ["CIFAR-10 1:2500", "CIFAR-10 1:500", "CIFAR-10 1:50", "CIFAR-10 1:1", "PneumoniaMNIST 1:36"]
KEEP = re.compile(r"<!-- conclusions -->.*?<!-- /conclusions -->", re.S)


def _cell(r: pd.Series, m: str, ci: bool = True) -> str:
    v, sd = r[m], r[f"{m}_sd"]
    if v != v:
        return "–"
    s = f"{v:.3f}" + (f" ± {sd:.3f}" if sd == sd else "")
    lo, hi = r.get(f"{m}_lo"), r.get(f"{m}_hi")
    return s + (fmt_bounds(lo, hi) if ci else "")


def _table(rows: pd.DataFrame, cols: list[tuple[str, str]], label) -> str:
    out = ["| " + " | ".join(["setting", "row", "runs"] + [c for c, _ in cols]) + " |", "|---" * (3 + len(cols)) + "|"]
    for _, r in rows.iterrows():
        cells = [_cell(r, m) if m in r and f"{m}_sd" in r else (f"{r[m]:.2f}" if r[m] == r[m] else "") for _, m in cols]
        out.append(f"| {r.setting} | {label(r)} | {r.n_runs} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(_s=df.setting.map(_rank)).sort_values("_s", kind="stable").drop(columns="_s")


def _rank(setting: str) -> int:
    """The study's settings in SETTINGS order; a grid's other settings after them, in grid order."""
    return SETTINGS.index(setting) if setting in SETTINGS else len(SETTINGS)


def _settings(df: pd.DataFrame) -> list[str]:
    return sorted(dict.fromkeys(df.setting), key=_rank)


def issue5_table(t: pd.DataFrame) -> str:
    """Pretrained vs untrained: every row of the paper-eGAN and no-pretraining experiments."""
    rows = _order(t[(t.variant == "paper eGAN") | _untrained(t)])
    cols = [("recall", "recall"), ("specificity", "specificity"), ("precision", "precision"), ("F1", "f1"),
            ("AUROC", "auroc"), ("sens@90% spec (test ROC)", "sens_at_spec"),
            ("paper P", "paper_precision"), ("paper R", "paper_recall"), ("paper F1", "paper_f1")]
    return _table(rows, cols, lambda r: f"{r.model}{f' ({r.variant})' if r.variant.startswith('no pretraining') else ''}")


def issue10_table(t: pd.DataFrame) -> str:
    """Validation-selected rows only: paper eGAN, variants, baseline, kNN, trivial."""
    rows = _order(t[~t.model.str.contains("optimistic") & ~_untrained(t)])
    rows = rows[(rows.variant == "paper eGAN") | rows.model.isin(["eGAN", "supervised baseline", "kNN one-class"])]
    cols = [("recall", "recall"), ("specificity", "specificity"), ("precision", "precision"),
            ("AUROC [95% CI]", "auroc"), ("sens@90% spec (test ROC)", "sens_at_spec"), ("AUPRC", "auprc")]
    return _table(rows, cols, lambda r: r.model if r.variant in ("paper eGAN",) else
                  (f"eGAN, {r.variant}" if r.model == "eGAN" else f"{r.model} ({r.variant})"))


def _untrained(t: pd.DataFrame) -> pd.Series:
    return t.variant.str.startswith("no pretraining")


def _exp_label(exp) -> str:
    return exp.setting if exp.variant == "paper eGAN" else f"{exp.setting} ({exp.variant})"


def nash_table(runs_dir: str, t: pd.DataFrame, every_variant: bool = False, counts_every: int = 1) -> str:
    """Per eGAN run: epochs where test correct-minority ~ correct-majority (the paper's Nash).

    Args:
        every_variant: all experiments, not only the paper eGAN and its no-pretraining ablations.
        counts_every: list the per-epoch counts of every k-th epoch (and the last), to keep long runs readable.
    """
    head = "test correct min/maj per epoch" + (f" (every {counts_every}th)" if counts_every > 1 else "")
    out = [f"| setting | run | epochs with Nash (test) | test AUROC there | closest \\|recall − specificity\\| (epoch) | "
           f"curves cross | val-selected epoch (its test AUROC) | {head} |", "|---|---|---|---|---|---|---|---|"]
    egan = t[t.model == "eGAN"]
    pick = egan if every_variant else egan[(egan.variant == "paper eGAN") | _untrained(egan)]
    for exp in _order(pick.drop_duplicates("experiment")).itertuples():
        for run, m in _finished_histories(runs_dir, exp.experiment).items():
            nash = [int(e) + 1 for e, f in zip(m.epoch, m.test_nash) if bool(f)]
            at_nash = m.test_auroc[m.test_nash.astype(bool)]
            at_nash = (f"{at_nash.mean():.2f}" + (f" ({at_nash.min():.2f}-{at_nash.max():.2f})" if len(at_nash) > 1 else "")
                       if len(at_nash) else "–")
            best = int(m.val_auroc.idxmax()) + 1
            keep = [i for i in range(len(m)) if (i + 1) % counts_every == 0 or i == len(m) - 1 or counts_every == 1]
            counts = " ".join(f"{m.test_correct_minority[i]}/{m.test_correct_majority[i]}" for i in keep)
            # Nash is a point where the two Fig. 4 curves meet; an oscillating run can cross them between epochs.
            diff = (m.test_correct_minority / m.test_n_minority - m.test_correct_majority / m.test_n_majority).to_numpy()
            closest = int(abs(diff).argmin())
            signs = [v for v in diff if v != 0]
            crossings = sum(1 for a, b in zip(signs, signs[1:]) if (a > 0) != (b > 0))
            out.append(f"| {_exp_label(exp)} | {run} | "
                       f"{', '.join(map(str, nash)) or 'never'} | {at_nash} | {abs(diff[closest]):.3f} ({closest + 1}) | "
                       f"{crossings or 'never'}{' times' if crossings > 1 else ' time' if crossings else ''} | "
                       f"{best} ({m.test_auroc[best - 1]:.2f}) | {counts} |")
    return "\n".join(out)


def wall_table(t: pd.DataFrame) -> str:
    """Wall time per experiment (all its runs; eGAN plus any baseline and kNN trained alongside)."""
    out = ["| experiment | setting | variant | runs | wall s total | wall s per run |", "|---|---|---|---|---|---|"]
    for r in _order(t.drop_duplicates("experiment")).itertuples():
        out.append(f"| {r.experiment} | {r.setting} | {r.variant} | {r.n_runs} | {r.wall_s_total:.0f} | {r.wall_s_total / r.n_runs:.0f} |")
    return "\n".join(out)


def _bars(g: pd.DataFrame, path: str) -> None:
    """Test AUROC bars per setting, one bar per row label, with the per-run 95% bootstrap CI as error bars."""
    import matplotlib.pyplot as plt

    settings = _settings(g)
    labels = list(dict.fromkeys(g.label))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings) + 2), 4))
    w = 0.8 / max(len(labels), 1)
    for i, lab in enumerate(labels):
        sub = g[g.label == lab].set_index("setting")
        have = [s for s in settings if s in sub.index]
        xs = [settings.index(s) + i * w for s in have]
        ys = [sub.loc[s, "auroc"] for s in have]
        # A fold std cannot be drawn for n=1; the bootstrap CI (averaged over folds) always can.
        lo = [max(0.0, y - sub.loc[s, "auroc_lo"]) if sub.loc[s, "auroc_lo"] == sub.loc[s, "auroc_lo"] else 0 for y, s in zip(ys, have)]
        hi = [max(0.0, sub.loc[s, "auroc_hi"] - y) if sub.loc[s, "auroc_hi"] == sub.loc[s, "auroc_hi"] else 0 for y, s in zip(ys, have)]
        ax.bar(xs, ys, w, yerr=[lo, hi], label=lab, capsize=2)
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(settings))], settings, fontsize=8)
    ax.set_ylabel("test AUROC (val-selected), 95% CI")
    ax.set_ylim(0.3, 1.0)
    ax.legend(fontsize=6, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))  # below: never over a bar
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _finished_histories(runs_dir: str, experiment: str, sub: str = "") -> dict[str, pd.DataFrame]:
    """{run name: metrics.csv} of every finished run of an experiment (``sub``: e.g. "baseline"), with an
    ``updates`` column; a run still training (no report.json) is left out, its history not being final."""
    out = {}
    for run in sorted(glob.glob(os.path.join(runs_dir, experiment, "*", ""))):
        path = os.path.join(run, sub, "metrics.csv")
        if not (os.path.isfile(os.path.join(run, "report.json")) and os.path.isfile(path)):
            continue
        with open(os.path.join(run, "config.yaml"), encoding="utf-8") as fh:
            steps = int((yaml.safe_load(fh).get("train") or {}).get("max_steps_per_epoch") or 0)
        m = pd.read_csv(path)
        out[os.path.basename(os.path.dirname(run))] = m.assign(updates=(m.epoch + 1) * steps if steps else m.epoch + 1)
    return out


def _per_epoch(t: pd.DataFrame, runs_dir: str, path: str) -> None:
    """One column per setting, mean over finished runs against D/G updates. Top: test AUROC of each eGAN variant
    (grey: the supervised baseline trained alongside). Bottom: the test fractions D gets right at logit 0 per
    class (the paper's Fig. 4; its Nash equilibrium is where the two curves of one colour meet)."""
    import matplotlib.pyplot as plt

    exps = _order(t.drop_duplicates("experiment"))
    variants = list(dict.fromkeys(exps.variant))
    hist = {e.experiment: list(_finished_histories(runs_dir, e.experiment).values()) for e in exps.itertuples()}
    # A column per (setting, run length), so that a 3,000-update run does not squash the 480-update ones.
    length = {k: int(max(m.updates.max() for m in ms)) for k, ms in hist.items() if ms}
    columns = list(dict.fromkeys((e.setting, length[e.experiment]) for e in exps.itertuples() if e.experiment in length))
    columns.sort(key=lambda c: (_rank(c[0]), c[1]))
    fig, axes = plt.subplots(2, len(columns), figsize=(3.3 * len(columns), 6.5), squeeze=False, sharey="row")
    for exp in exps.itertuples():
        ms = hist[exp.experiment]
        if not ms:
            continue
        col, color = columns.index((exp.setting, length[exp.experiment])), f"C{variants.index(exp.variant) % 10}"
        m = pd.concat(ms).groupby("updates").mean(numeric_only=True)
        axes[0, col].plot(m.index, m.test_auroc, color=color, lw=1, label=f"eGAN, {exp.variant}")
        axes[1, col].plot(m.index, m.test_correct_minority / m.test_n_minority, color=color, lw=1, label=f"{exp.variant}: minority")
        axes[1, col].plot(m.index, m.test_correct_majority / m.test_n_majority, color=color, lw=1, ls=":", label=f"{exp.variant}: majority")
        base = _finished_histories(runs_dir, exp.experiment, "baseline")
        if base:
            b = pd.concat(base.values()).groupby("updates").mean(numeric_only=True)
            axes[0, col].plot(b.index, b.test_auroc, color="k", lw=1.5, ls="-" if exp.variant == "paper eGAN" else "--",
                              label="supervised baseline" + ("" if exp.variant == "paper eGAN" else f" ({exp.variant})"))
    for col, (setting, n) in enumerate(columns):
        axes[0, col].set_title(setting + (f", {n:,} updates" if sum(c[0] == setting for c in columns) > 1 else ""), fontsize=9)
        axes[1, col].set_xlabel("D/G updates", fontsize=8)
        for ax in axes[:, col]:
            ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("test AUROC (mean over runs)", fontsize=8)
    axes[1, 0].set_ylabel("fraction right at logit 0\n(solid minority, dotted majority)", fontsize=8)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(4, len(handles)), fontsize=7)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * (len(handles) // 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(t: pd.DataFrame, runs_dir: str, out_dir: str, prefix: str = "") -> dict[str, str]:
    """AUROC bars per setting (pretraining; variants) and per-epoch curves; returns {name: png path}."""
    import matplotlib

    matplotlib.use("Agg")
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    vs = t[~t.model.str.contains("optimistic") & ~t.model.str.startswith("all ")]
    groups = {"pretraining": vs[(vs.variant == "paper eGAN") | _untrained(vs)],
              "variants": vs[~_untrained(vs) & ((vs.model == "eGAN") | (vs.variant == "paper eGAN"))]}
    for name, g in groups.items():
        if g.variant.nunique() < 2 and name == "pretraining":
            continue  # no untrained runs in this grid: the variants plot shows the same bars
        g = g.assign(label=[m if v == "paper eGAN" else f"{m} ({v})" for m, v in zip(g.model, g.variant)])
        files[name] = os.path.join(out_dir, f"{prefix}auroc_{name}.png")
        _bars(g, files[name])
    files["epochs"] = os.path.join(out_dir, f"{prefix}egan_auroc_per_epoch.png")
    egan = t[t.model == "eGAN"]
    # The main page has a dozen variants: its curves show the paper's eGAN and the pretraining ablations only.
    _per_epoch(egan if prefix else egan[(egan.variant == "paper eGAN") | _untrained(egan)], runs_dir, files["epochs"])
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=os.path.join(REPO, "runs", "repro", "cpu_study"))
    p.add_argument("--grid", default="cpu_study")
    p.add_argument("--out", default=os.path.join(REPO, "docs"))
    p.add_argument("--page", default="RESULTS.md", help="file name in --out; another page than RESULTS.md "
                   "prefixes its plots with the grid name and lists Nash for every variant")
    p.add_argument("--title", default="Measured results (CPU-sized reproduction and variants)")
    a = p.parse_args(argv)
    grid = reproduce.load_grid(a.grid)
    t = reproduce.aggregate(grid, reproduce.expand(grid, os.path.abspath(a.runs), False), os.path.abspath(a.runs))
    if t.empty:
        print("error: no finished runs", file=sys.stderr)
        return 2
    main_page = a.page == "RESULTS.md"
    name = os.path.splitext(os.path.basename(grid["_path"]))[0]
    pngs = plots(t, a.runs, os.path.join(a.out, "results"), "" if main_page else f"{name}_")
    epochs = max((len(pd.read_csv(m)) for m in glob.glob(os.path.join(a.runs, "*", "*", "metrics.csv"))), default=1)
    walls = t.drop_duplicates("experiment")
    md_path = os.path.join(a.out, a.page)
    old = open(md_path, encoding="utf-8").read() if os.path.isfile(md_path) else ""
    kept = KEEP.search(old)
    conclusions = kept.group(0) if kept else "<!-- conclusions -->\n<!-- /conclusions -->"
    img = lambda key, alt: f"![{alt}](results/{os.path.basename(pngs[key])})" if key in pngs else ""  # noqa: E731
    first = ("Pretrained vs. no pretraining (issue 5)" if _untrained(t).any() else "Paper eGAN beside the baselines")
    text = f"""# {a.title}

Generated by `scripts/results_page.py` from `{os.path.relpath(a.runs, REPO)}` (grid `configs/grids/{name}.yaml`,
run with `python scripts/reproduce.py {name}`); only the conclusions section is written by hand.
Total wall time of the {int(sum(1 for _ in glob.glob(os.path.join(a.runs, '*', '*', 'report.json'))))} finished runs:
{walls.wall_s_total.sum() / 60:.1f} min (per experiment in `RESULTS_TABLE.md`).

{conclusions}

## {first}, with the paper's Table 5/6 numbers

Mean ± std over folds/seeds, [..] = per-run 95% bootstrap CI averaged over runs. "eGAN" = epoch and operating
point chosen on validation (logit < 0 as in the paper); "optimistic (paper protocol)" = best test-F1 epoch.

{issue5_table(t)}

{img("pretraining", "AUROC, pretrained vs none")}

## Variants (issue 10): validation-selected test AUROC and sensitivity at 90% specificity

{issue10_table(t)}

{img("variants", "AUROC of variants")}

## Nash equilibrium (|correct minority − correct majority| small, on test) per run

{nash_table(a.runs, t, every_variant=not main_page, counts_every=max(1, epochs // 8))}

{img("epochs", "eGAN test AUROC and per-class correct fractions per epoch")}

## Wall time (2 shared CPU cores, 1 torch thread)

{wall_table(t)}
"""
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(text.replace("\n\n\n", "\n\n"))
    print(f"wrote {md_path} and {len(pngs)} plots", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
