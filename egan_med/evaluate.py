"""Evaluate a run: ``python -m egan_med.evaluate RUN_DIR [--split val|test] [--sensitivity S | --specificity S | --threshold T]``.

The epoch and the operating point are both chosen on the VALIDATION split and then applied
unchanged to the reported split. The paper's protocol (best epoch over the test split) appears
only as a row labelled "optimistic (paper protocol)". Without options it also (re)writes what the run
deploys (``deploy/scorer.pt``, ``operating_point.json``): see ``egan_med.deploy.finalize``.
"""
from __future__ import annotations

import math
import sys

from egan_med.cli import ArgumentParser, boundary
from egan_med.config import ConfigError
from egan_med.deploy.finalize import finalize_run
from egan_med.engine.checkpoint import CheckpointError


@boundary("evaluating")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m egan_med.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--split", choices=("val", "test"), default="test")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sensitivity", type=float, help="operating point: this sensitivity on val")
    g.add_argument("--specificity", type=float, help="operating point: this specificity on val")
    g.add_argument("--threshold", type=float, help="operating point: minority when -logit > T")
    args = p.parse_args(argv)
    if args.threshold is not None and not math.isfinite(args.threshold):
        print(f"error: --threshold must be a finite number, got {args.threshold}", file=sys.stderr)
        return 2
    for name in ("sensitivity", "specificity"):
        v = getattr(args, name)
        if v is not None and not 0 < v <= 1:
            print(f"error: --{name} must be within (0, 1], got {v}", file=sys.stderr)
            return 2
    from egan_med.cohort import CohortError
    from egan_med.data import BadImageError
    from egan_med.models import WeightsError
    from egan_med.models.scorers import ScorerError
    try:
        rows = finalize_run(args.run_dir, args.split, args.sensitivity, args.specificity, args.threshold)
    except (CheckpointError, ConfigError, CohortError, FileNotFoundError, WeightsError, BadImageError, ScorerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nerror: interrupted; run the same command again", file=sys.stderr)
        return 130
    for r in rows:
        print(f"{r['model']:40s} auroc {r['auroc']:.3f}  recall {r['recall']:.3f}  specificity {r['specificity']:.3f}  f1 {r['f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
