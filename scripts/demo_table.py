"""Print the README's "Measured results of make demo" tables from a finished run's report.json.

    python scripts/demo_table.py [runs/demo]

The deployed detector and every detector under the realistic protocol (recall, specificity and precision at the
validation-chosen threshold first), then the spread over budget draws: what the README quotes, read from disk.
"""
from __future__ import annotations

import json
import os
import sys

from egan_med.io import fmt_interval


def main(argv: list[str] | None = None) -> int:
    run = (argv if argv is not None else sys.argv[1:] or ["runs/demo"])[0]
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
        print(f"Deployed: {dep['detector']}, epochs {dep.get('epochs')}, threshold {dep['threshold']:.4g} set on "
              f"{dep['val_minority']} validation positives and {dep['val_majority']} majority images.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
