"""Print the README's "Measured results of make demo" tables and figures from a finished run on disk.

    python scripts/demo_table.py [runs/demo] [--predict scores.csv]

The deployed detector and every detector under the realistic protocol (recall, specificity and precision at the
validation-chosen threshold first), the spread over budget draws, what the run deploys, the generous protocol
beside it, and with ``--predict`` (``egan_med.predict``'s CSV of the test split) its parity with the report.
"""
from __future__ import annotations

import json
import os
import sys

from egan_med.io import fmt_interval


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", default="runs/demo")
    p.add_argument("--predict", help="egan_med.predict's CSV of the run's test split")
    args = p.parse_args(argv)
    run = args.run
    path = os.path.join(run, "report.json")
    if not os.path.isfile(path):
        print(f"error: {path} not found: run `make demo` first", file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as fh:
        rep = json.load(fh)
    dep = rep.get("deployed") or {}
    proto = dep.get("protocol", "realistic")
    rows = [r for r in rep.get("protocol_rows", []) if r["protocol"] == proto]
    if not rows:
        print(f"error: {path} has no {proto} protocol rows", file=sys.stderr)
        return 2
    print(f"| model ({proto} budget: {rows[0]['val_minority_used']} validation positives) | epoch | threshold | "
          "recall | specificity | precision | AUROC | sens@90% spec (test ROC) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = r["model"] + (" **(deployed)**" if r["model"] == dep.get("detector") else "")
        epoch = "-" if r.get("epoch", -1) < 0 else str(r["epoch"])
        print(f"| {name} | {epoch} | {r['threshold']:.4g} | " + " | ".join(
            fmt_interval(r[k], r.get(f"{k}_lo"), r.get(f"{k}_hi")) for k in ("recall", "specificity", "precision", "auroc", "sens_at_spec")) + " |")
    spread = rep.get("budget_spread") or []
    if spread:
        print()
        print(f"| model: over {spread[0]['draws']} draws of the budgeted validation positives | AUROC | recall | "
              "specificity | precision |")
        print("|---|---|---|---|---|")
        for e in spread:
            print(f"| {e['model']} | " + " | ".join(
                f"{e[f'{k}_median']:.2f} [{e[f'{k}_p5']:.2f}, {e[f'{k}_p95']:.2f}]"
                for k in ("auroc", "recall", "specificity", "precision")) + " |")
    if dep:
        print()
        weights = dep.get("fusion_weights") or {}
        print(f"Deployed: {dep['detector']}, epochs {dep.get('epochs')}"
              + (f", weights {' / '.join(f'{w:.2f}' for w in weights.values())}" if weights else "")
              + f", threshold {dep['threshold']:.3f} set on {dep['val_minority']} validation positives and "
              f"{dep['val_majority']} majority images.")
    generous = {r["model"]: r for r in rep.get("protocol_rows", []) if r["protocol"] == "generous"}
    if generous and proto != "generous":
        print()
        print("Generous protocol, same models: " + "; ".join(
            f"{r['model']} epoch {r['epoch'] if r['epoch'] >= 0 else '-'}, threshold {r['threshold']:.3g}, AUROC "
            f"{r['auroc']:.2f}, recall {r['recall']:.2f}, specificity {r['specificity']:.2f}"
            for r in generous.values()) + ".")
    if args.predict:
        import numpy as np
        import pandas as pd

        got = pd.read_csv(args.predict, keep_default_na=False)
        with np.load(os.path.join(run, "deploy", "scores_test.npz")) as z:
            ref_y, ref_s = z["y"], z["s"]
        row = next(r for r in rows if r["model"] == dep.get("detector"))
        minority = (got["decision"] == "minority").to_numpy()
        y = got["minority"].to_numpy()
        same = bool((minority == (ref_s > dep["threshold"])).all() and (y == ref_y).all())
        print()
        print(f"predict vs the report's deployed row on {len(got)} test images: max |score difference| "
              f"{float(np.abs(got['score'].to_numpy() - ref_s).max()):.3g}; decisions identical: {same}; "
              f"{int(minority.sum())} minority (tp {int((minority & (y == 1)).sum())}, fp {int((minority & (y == 0)).sum())}; "
              f"the row's tp {row['tp']}, fp {row['fp']}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
