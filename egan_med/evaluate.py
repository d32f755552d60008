"""Evaluate a run: ``python -m egan_med.evaluate RUN_DIR [--split val|test] [--sensitivity S | --specificity S | --threshold T]``.

The epoch and the operating point are both chosen on the VALIDATION split and then applied
unchanged to the reported split. The paper's protocol (best epoch over the test split) appears
only as a row labelled "optimistic (paper protocol)".
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pandas as pd
import torch

from egan_med.cli import ArgumentParser, boundary
from egan_med.evaluation import metrics, model_card, plots, report, selection, thresholds
from egan_med.engine.checkpoint import CheckpointError, load_checkpoint
from egan_med.config import KIND_LABELS, Config, ConfigError, config_from_dict, read_yaml
from egan_med.io import write_json
from egan_med.evaluation.scoring import score_loader
from egan_med.cohort.splits import CohortSplits, load_splits
from egan_med.evaluation.detectors import budget_section, oneclass_scores
from egan_med.xrv import run_leak_warning

from egan_med.evaluation.detectors import ONECLASS


def _eval_loaders(cfg: Config, splits: CohortSplits, names: tuple[str, ...]) -> dict:
    from egan_med import data as dl

    return {s: dl.make_loader(dl.make_dataset(getattr(splits, s), splits.root, cfg.data, train=False), 256,
                              shuffle=False, num_workers=cfg.data.num_workers, seed=cfg.train.seed) for s in names}


PATH_KEYS = (("data", "cohort"), ("data", "root"), ("data", "cache_dir"), ("model", "weights"),
             ("model", "encoder_weights"), ("model", "discriminator_weights"))


def resolve_run_paths(cfg: Config, train_cwd: str | None) -> Config:
    """Make the config's relative paths mean what they meant where training ran.

    Args:
        cfg: a run's config (changed in place).
        train_cwd: the working directory of the training (stored in its checkpoints), or None.

    Returns:
        ``cfg``: each relative path that exists under ``train_cwd`` becomes that absolute path; others are kept
        (e.g. a run directory moved together with its data, evaluated from the new place).
    """
    if not train_cwd:
        return cfg
    for section, key in PATH_KEYS:
        value = getattr(getattr(cfg, section), key)
        if value and value not in ("imagenet", "none") and not os.path.isabs(value):
            there = os.path.join(train_cwd, value)
            if os.path.exists(there):
                setattr(getattr(cfg, section), key, os.path.normpath(there))
    return cfg


def load_scorer(run_dir: str, which: str = "best") -> tuple[torch.nn.Module, Config, dict]:
    """The scoring network (D, or the classifier) of a run, with its config and checkpoint.

    Raises:
        CheckpointError: no usable checkpoint, or one whose network does not fit its own config.
        ConfigError: the stored config is invalid.
    """
    from egan_med.models import Classifier, Discriminator

    path = os.path.join(run_dir, "checkpoints", f"{which}.pt")
    state = load_checkpoint(path)
    if not isinstance(state["config"], dict) or not isinstance(state.get("models"), dict):
        raise CheckpointError(f"{path}: not an egan_med checkpoint (no config or models)")
    cwd = state.get("cwd")
    cfg = resolve_run_paths(config_from_dict(state["config"]), cwd if isinstance(cwd, str) else None)
    key, cls = ("D", Discriminator) if cfg.model.kind == "egan" else ("C", Classifier)
    if key not in state["models"]:
        raise CheckpointError(f"{path}: has no '{key}' network (it holds {sorted(map(str, state['models']))[:6]})")
    net = cls(cfg.model, load_weights=False)  # the checkpoint holds every weight: no ImageNet file needed
    try:
        net.load_state_dict(state["models"][key])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: its '{key}' weights do not fit a {cfg.model.discriminator} "
                              f"{cfg.model.kind} network ({first})") from None
    return net.eval(), cfg, state


def _operating_point(cfg: Config, sensitivity: float | None, specificity: float | None,
                     threshold: float | None) -> tuple[str, float]:
    if threshold is not None:
        return "fixed", threshold
    if sensitivity is not None:
        return "sensitivity", sensitivity
    if specificity is not None:
        return "specificity", specificity
    return cfg.eval.operating_point, cfg.eval.target


def _row(label: str, counts: dict, rule: str, target: float, thr: float, y, s, cfg: Config, why: str, seed: int) -> dict:
    m = metrics.binary_metrics(y, s, thr)
    ci = metrics.bootstrap_ci(y, s, thr, n=cfg.eval.bootstrap, seed=seed) if cfg.eval.bootstrap else None
    op = "logit < 0 (paper)" if rule == "logit0" else ("fixed" if rule == "fixed" else f"{rule} {target:.2f} on val")
    return report.report_row(label, counts, op, thr, m, ci, why)


def finalize_run(run_dir: str, split: str = "test", sensitivity: float | None = None,
                 specificity: float | None = None, threshold: float | None = None) -> list[dict]:
    """Score the selected checkpoint, set the operating point on val, and write reports and plots.

    Args:
        run_dir: a run directory written by ``egan_med.train``.
        split: the split to report (``val`` or ``test``).
        sensitivity, specificity, threshold: override the config's operating point.

    Returns:
        The report rows.
    """
    if _run_kind(run_dir) in ONECLASS:
        return _finalize_oneclass(run_dir)
    net, cfg, state = load_scorer(run_dir)
    config_yaml = os.path.join(run_dir, "config.yaml")
    if os.path.exists(config_yaml):  # the model card reads it last: fail now, before any report is written
        read_yaml(config_yaml)
    dev = torch.device("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    net.to(dev)
    history = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    chosen = selection.select_epoch(history, cfg.eval.select, cfg.eval.nash_threshold)
    splits = load_splits(cfg)
    counts = splits.counts()
    if split == "val":
        counts.update(test_minority=splits.sizes()["val"][0], test_majority=splits.sizes()["val"][1])
    loaders = _eval_loaders(cfg, splits, ("val", split) if split != "val" else ("val",))
    y_val, logit_val, _ = score_loader(net, loaders["val"], dev, cfg.train.amp, progress="scoring val")
    y_rep, logit_rep, _ = (y_val, logit_val, None) if split == "val" else score_loader(
        net, loaders[split], dev, cfg.train.amp, progress=f"scoring {split}")
    rule, target = _operating_point(cfg, sensitivity, specificity, threshold)
    thr = threshold if rule == "fixed" else thresholds.operating_threshold(rule, y_val, -logit_val, target)
    label = KIND_LABELS[cfg.model.kind]
    rows = [_row(label, counts, rule, target, thr, y_rep, -logit_rep, cfg, chosen.reason, cfg.train.seed)]
    curves = {label: (y_rep, -logit_rep, thr)}
    np.savez(os.path.join(run_dir, f"scores_{split}.npz"), y=y_rep, logit=logit_rep)

    if split == "test":
        rows += report.paper_protocol_rows(history, label, counts)

    baseline_dir = os.path.join(run_dir, "baseline")
    if os.path.exists(os.path.join(baseline_dir, "checkpoints", "best.pt")):
        b_rows = finalize_run(baseline_dir, split, sensitivity, specificity, threshold)
        rows.append(b_rows[0])
        b = np.load(os.path.join(baseline_dir, f"scores_{split}.npz"))
        curves[b_rows[0]["model"]] = (b["y"], -b["logit"], b_rows[0]["threshold"])
    if cfg.eval.knn and cfg.model.kind == "egan":
        rows.append(_knn_row(cfg, splits, counts, split, dev, curves, run_dir))
    rows += report.trivial_rows(y_rep, counts)

    notes = [f"Epoch {chosen.epoch} selected on the validation split by '{cfg.eval.select}'; "
             f"operating point set on validation, then applied unchanged to {split}.",
             "Rows marked 'optimistic' are chosen on the test split itself, as the paper did, and overstate what a "
             "deployed model would do: '(paper protocol)' is the best test-F1 epoch, one model; 'per-metric maxima' "
             "takes each metric from its own best epoch, as the paper's table does, and is no single model.",
             f"Confidence intervals: 95% stratified bootstrap, {cfg.eval.bootstrap} resamples."]
    if split == "val":
        # The epoch (and, unless --threshold, the operating point) came from this very data.
        fitted = "selected on it" + ("" if rule == "fixed" else " and the operating point fitted on it")
        notes.insert(0, f"Graded on the VALIDATION split, the data the epoch was {fitted}: optimistic, not a test result.")
        print(f"note: {notes[0]}", file=sys.stderr)
    default = split == "test" and sensitivity is None and specificity is None and threshold is None
    # A re-scoring at another split or operating point goes beside the run's own report, not over it.
    out_dir = run_dir if default else os.path.join(run_dir, "evaluations", f"{split}-{rule}-{target:g}")
    os.makedirs(out_dir, exist_ok=True)
    leak = run_leak_warning(cfg, splits.meta)
    if leak:
        print(f"warning: {leak}", file=sys.stderr)
    header, p_rows = budget_section(cfg, run_dir, splits, dev) if default else ([], [])
    report.write_report(out_dir, rows, f"{cfg.name}: {label} on {os.path.basename(os.path.dirname(cfg.data.cohort))}",
                        notes, split, warnings=[leak] if leak else [], header=header, protocol_rows=p_rows)
    plots.plot_correct_counts(history, os.path.join(run_dir, "correct_counts.png"), split="test", nash_threshold=cfg.eval.nash_threshold)
    plots.plot_losses(history, os.path.join(run_dir, "losses.png"))
    plots.plot_roc_pr(curves, os.path.join(out_dir, f"roc_pr_{split}.png"))
    write_json(os.path.join(out_dir, "operating_point.json"),
               {"rule": rule, "target": target, "threshold": float(thr), "chosen_on": "val", "epoch": int(chosen.epoch),
                "selection": chosen.reason, "score": "minority score = -logit; minority when score > threshold"}, indent=2)
    if default:
        _log_hparams(run_dir, cfg, rows[0])
        model_card.write_model_card(run_dir, val_scores=(y_val, logit_val))
    return rows


def _run_kind(run_dir: str) -> str:
    """model.kind of a run directory, from its config.yaml ("" when it has none).

    Raises:
        ConfigError: config.yaml is unreadable or not strict YAML (read before any report is written).
    """
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(path):
        return ""
    doc = read_yaml(path)
    model = doc.get("model") if isinstance(doc, dict) else None
    return str(model.get("kind", "")) if isinstance(model, dict) else ""


def _finalize_oneclass(run_dir: str) -> list[dict]:
    """Report of a one-class run (model.kind knn | patchcore): both protocols' rows and the trivial rows."""
    from egan_med.evaluation.detectors import oneclass_run_cwd

    cfg = resolve_run_paths(config_from_dict(read_yaml(os.path.join(run_dir, "config.yaml"))), oneclass_run_cwd(run_dir))
    splits = load_splits(cfg)
    header, p_rows = budget_section(cfg, run_dir, splits, "cpu")
    first = [r for r in p_rows if r["protocol"] == p_rows[0]["protocol"]]
    y_test = oneclass_scores(cfg, splits, cfg.model.kind, run_dir)["y_test"]
    rows = first + report.trivial_rows(y_test, splits.counts())
    notes = ["No training: fitted on the majority training images only; the operating point is set on the "
             "validation images the label budget allows, then applied unchanged to test.",
             f"Confidence intervals: 95% stratified bootstrap, {cfg.eval.bootstrap} resamples."]
    report.write_report(run_dir, rows, f"{cfg.name}: {KIND_LABELS[cfg.model.kind]} on "
                        f"{os.path.basename(os.path.dirname(cfg.data.cohort))}", notes, "test", header=header, protocol_rows=p_rows)
    return rows


def _knn_row(cfg: Config, splits: CohortSplits, counts: dict, split: str, dev, curves: dict, run_dir: str) -> dict:
    d = oneclass_scores(cfg, splits, "knn", run_dir, dev)  # cached: the budget section reuses it
    y_val, s_val = d["y_val"], d["s_val"]
    y_rep, s_rep = (y_val, s_val) if split == "val" else (d["y_test"], d["s_test"])
    # A distance has no natural zero: logit0 falls back to the configured specificity on val.
    rule = "specificity" if cfg.eval.operating_point == "logit0" else cfg.eval.operating_point
    thr = thresholds.operating_threshold(rule, y_val, s_val, cfg.eval.target)
    curves[KIND_LABELS["knn"]] = (y_rep, s_rep, thr)
    return _row(KIND_LABELS["knn"], counts, rule, cfg.eval.target, thr, y_rep, s_rep, cfg, "no training; k-NN on frozen features", cfg.train.seed)


def _log_hparams(run_dir: str, cfg: Config, row: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    hp = {"model": cfg.model.kind, "encoder": cfg.model.encoder, "discriminator": cfg.model.discriminator,
          "weights": cfg.model.weights, "image_size": cfg.data.image_size, "epochs": cfg.train.epochs,
          "lr_d": cfg.train.lr_d, "lr_g": cfg.train.lr_g, "select": cfg.eval.select}
    final = {f"hparam/{k}": float(row[k]) for k in ("auroc", "auprc", "f1", "recall", "specificity")
             if row.get(k) is not None and not (isinstance(row[k], float) and math.isnan(row[k]))}
    with SummaryWriter(os.path.join(run_dir, "tb")) as w:
        w.add_hparams(hp, final, run_name="hparams")


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
    try:
        rows = finalize_run(args.run_dir, args.split, args.sensitivity, args.specificity, args.threshold)
    except (CheckpointError, ConfigError, CohortError, FileNotFoundError, WeightsError, BadImageError) as exc:
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
