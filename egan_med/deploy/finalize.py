"""Finish a run: score, report both label protocols, and deploy the detector the run recommends.

The epoch and the operating point are both chosen on the VALIDATION split (under the label budget when one is
set) and then applied unchanged to the reported split. The paper's protocol (best epoch over the test split)
appears only as a row labelled "optimistic (paper protocol)". What gets deployed (``deploy/scorer.pt`` and
``operating_point.json``) is ``eval.deploy``'s detector, chosen under the realistic protocol whenever a budget
holds validation positives back; the generous choice stays a report row.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pandas as pd
import torch

from egan_med.cohort.splits import CohortSplits, load_splits
from egan_med.config import KIND_LABELS, Config, config_from_dict, deploy_label, read_yaml
from egan_med.deploy.assemble import checkpoint_net, deployed_scorer
from egan_med.engine.checkpoint import CheckpointError, load_checkpoint
from egan_med.evaluation import budget as bud
from egan_med.evaluation import metrics, model_card, plots, report, selection, thresholds
from egan_med.evaluation.detectors import ONECLASS, BudgetSection, budget_section, oneclass_run_cwd, run_device
from egan_med.evaluation.scoring import score_loader
from egan_med.io import file_hash, write_json
from egan_med.models.scorers import save_scorer, score_batches
from egan_med.xrv import run_leak_warning

PATH_KEYS = (("data", "cohort"), ("data", "root"), ("data", "cache_dir"), ("model", "weights"),
             ("model", "encoder_weights"), ("model", "discriminator_weights"))
DEPLOY_DIR = "deploy"
SCORER_FILE = os.path.join(DEPLOY_DIR, "scorer.pt")


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


def load_checkpoint_scorer(run_dir: str, which: str = "best") -> tuple[torch.nn.Module, Config, dict]:
    """The scoring network (D, or the classifier) of a run's checkpoint, with its config and checkpoint.

    Raises:
        CheckpointError: no usable checkpoint, or one whose network does not fit its own config.
        ConfigError: the stored config is invalid.
    """
    path = os.path.join(run_dir, "checkpoints", f"{which}.pt")
    state = load_checkpoint(path)
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: not an egan_med checkpoint (no config or models)")
    cwd = state.get("cwd")
    cfg = resolve_run_paths(config_from_dict(state["config"]), cwd if isinstance(cwd, str) else None)
    net, _ = checkpoint_net(state, path, cfg)
    return net, cfg, state


def split_loader(cfg: Config, splits: CohortSplits, df: pd.DataFrame):
    from egan_med import data as dl

    return dl.make_loader(dl.make_dataset(df, splits.root, cfg.data, train=False), 256, shuffle=False,
                          num_workers=cfg.data.num_workers, seed=cfg.train.seed)


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


def deploy(run_dir: str, cfg: Config, splits: CohortSplits, section: BudgetSection, dev: torch.device) -> dict:
    """Save the run's deployed detector and its operating point, and return its realistic-protocol report row.

    The scorer is built from the epochs the deploy protocol chose, scored here on the validation images that
    protocol keeps (positives beyond the budget are dropped entirely) and on test; the threshold is set on
    those validation scores. ``predict`` runs this very scorer, so its scores equal the row's.

    Returns:
        The operating point dict (also written to ``operating_point.json``), with the row under ``"row"``.
    """
    label, proto = deploy_label(cfg), section.deploy_protocol
    mask = section.masks[proto]
    val_kept = splits.val.reset_index(drop=True)[mask]
    val_loader = split_loader(cfg, splits, val_kept)
    scorer, spec, chosen = deployed_scorer(run_dir, section, label, val_loader, dev)
    y_val, s_val = score_batches(scorer, val_loader, dev)
    y_test, s_test = score_batches(scorer, split_loader(cfg, splits, splits.test), dev)
    if not (np.array_equal(y_val, section.y_val[mask]) and np.array_equal(y_test, section.y_test)):
        raise RuntimeError("the deployed scorer saw the splits in another order than the report")
    rule = "specificity" if cfg.eval.operating_point == "logit0" else cfg.eval.operating_point
    thr = float(thresholds.operating_threshold(rule, y_val, s_val, cfg.eval.target))
    old = next(r for r in section.rows if r["protocol"] == proto and r["model"] == label)
    why = old["selection"] + "; scored by the saved scorer (deploy/scorer.pt)"
    row = _row(label, splits.counts(), rule, cfg.eval.target, thr, y_test, s_test, cfg, why, cfg.train.seed)
    row.update(protocol=proto, val_minority_used=int(y_val.sum()), epoch=old["epoch"])
    section.rows[section.rows.index(old)] = row
    op = {"detector": label, "protocol": proto, "rule": rule, "target": cfg.eval.target, "threshold": thr,
          "chosen_on": "val", "val_minority": int(y_val.sum()), "val_majority": int((y_val == 0).sum()),
          "epochs": chosen["epochs"], "selection": row["selection"], "scorer": SCORER_FILE,
          "score": "minority score (higher = more minority-like); minority when score > threshold",
          "precision": "float32, no autocast (scoring that sets the threshold and scoring that applies it match)",
          "budget_seed": section.budget_seed}
    if "weights" in chosen:
        op["fusion_weights"] = chosen["weights"]
    if label in section.detectors:  # the same detector's stored per-epoch scores: how closely they match
        det = section.detectors[label]
        i = section.choices[(proto, label)]["row"]
        op["max_abs_diff_vs_stored_scores"] = float(np.abs(det.test[i] - s_test).max())
    path = os.path.join(run_dir, SCORER_FILE)
    cwd = oneclass_run_cwd(run_dir) or _train_cwd(run_dir)
    save_scorer(path, scorer.cpu(), spec, {"detector": label, "config": cfg.to_dict(), "cwd": cwd,
                                           "operating_point": dict(op)})
    op["scorer_sha256"] = file_hash(path)
    np.savez(os.path.join(run_dir, DEPLOY_DIR, "scores_val.npz"), y=y_val, s=s_val)
    np.savez(os.path.join(run_dir, DEPLOY_DIR, "scores_test.npz"), y=y_test, s=s_test)
    write_json(os.path.join(run_dir, "operating_point.json"), op, indent=2)
    return op | {"row": row}


def _train_cwd(run_dir: str) -> str | None:
    try:
        cwd = load_checkpoint(os.path.join(run_dir, "checkpoints", "last.pt")).get("cwd")
    except CheckpointError:
        return None
    return cwd if isinstance(cwd, str) else None


def _deploy_curves(section: BudgetSection, op: dict, run_dir: str) -> dict:
    """ROC/PR curves of every detector of the deploy protocol (the fusions included), at their chosen thresholds."""
    proto, curves = op["protocol"], {}
    for r in section.rows:
        if r["protocol"] != proto:
            continue
        label = r["model"]
        if label == op["detector"]:
            with np.load(os.path.join(run_dir, DEPLOY_DIR, "scores_test.npz")) as z:
                curves[f"{label} (deployed)"] = (z["y"], z["s"], r["threshold"])
        elif label in section.detectors:
            det = section.detectors[label]
            curves[label] = (section.y_test, det.test[section.choices[(proto, label)]["row"]], r["threshold"])
        else:
            comps = {k: (d.val[section.choices[(proto, k)]["row"]], d.test[section.choices[(proto, k)]["row"]])
                     for k, d in section.detectors.items()}
            _, ft = bud.fuse(comps, section.choices[(proto, label)]["weights"], section.masks[proto])
            curves[label] = (section.y_test, ft, r["threshold"])
    return curves


def finalize_run(run_dir: str, split: str = "test", sensitivity: float | None = None,
                 specificity: float | None = None, threshold: float | None = None) -> list[dict]:
    """Score the selected checkpoint, set the operating point on val, write reports and plots, and deploy.

    Args:
        run_dir: a run directory written by ``egan_med.train``.
        split: the split to report (``val`` or ``test``).
        sensitivity, specificity, threshold: override the config's operating point (then nothing is deployed:
            the re-scoring goes beside the run, under ``evaluations/``).

    Returns:
        The report rows.
    """
    if _run_kind(run_dir) in ONECLASS:
        return _finalize_oneclass(run_dir)
    net, cfg, state = load_checkpoint_scorer(run_dir)
    config_yaml = os.path.join(run_dir, "config.yaml")
    if os.path.exists(config_yaml):  # the model card reads it last: fail now, before any report is written
        read_yaml(config_yaml)
    dev = run_device(cfg)
    net.to(dev)
    history = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    chosen = selection.select_epoch(history, cfg.eval.select, cfg.eval.nash_threshold)
    splits = load_splits(cfg)
    counts = splits.counts()
    if split == "val":
        counts.update(test_minority=splits.sizes()["val"][0], test_majority=splits.sizes()["val"][1])
    y_val, logit_val, _ = score_loader(net, split_loader(cfg, splits, splits.val), dev, progress="scoring val")
    y_rep, logit_rep, _ = (y_val, logit_val, None) if split == "val" else score_loader(
        net, split_loader(cfg, splits, getattr(splits, split)), dev, progress=f"scoring {split}")
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
    rows += report.trivial_rows(y_rep, counts)

    notes = [f"Checkpoint rows: epoch {chosen.epoch} selected on every validation positive by '{cfg.eval.select}' "
             f"(best.pt); operating point set on validation, then applied unchanged to {split}.",
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
    section = budget_section(cfg, run_dir, splits, dev) if default and _is_parent(run_dir) else None
    op = deploy(run_dir, cfg, splits, section, dev) if section is not None else None
    knn = KIND_LABELS["knn"]
    if section is not None and knn in section.detectors and cfg.model.kind == "egan":
        # The checkpoint table's kNN row, as before budgets: selected on every validation positive (generous).
        generous = next(r for r in section.rows if r["protocol"] == bud.GENEROUS and r["model"] == knn)
        rows.insert(len(rows) - 2, {k: v for k, v in generous.items() if k not in ("protocol", "val_minority_used", "epoch")})
    report.write_report(out_dir, rows, f"{cfg.name}: {label} on {os.path.basename(os.path.dirname(cfg.data.cohort))}",
                        notes, split, warnings=[leak] if leak else [], header=section.header if section else [],
                        protocol_rows=section.rows if section else [], deployed=_public(op),
                        spread=section.spread if section else [])
    plots.plot_correct_counts(history, os.path.join(run_dir, "correct_counts.png"), split="test", nash_threshold=cfg.eval.nash_threshold)
    plots.plot_losses(history, os.path.join(run_dir, "losses.png"))
    plots.plot_roc_pr(_deploy_curves(section, op, run_dir) if op else curves, os.path.join(out_dir, f"roc_pr_{split}.png"))
    if not default:
        write_json(os.path.join(out_dir, "operating_point.json"),
                   {"detector": label, "rule": rule, "target": target, "threshold": float(thr), "chosen_on": "val",
                    "epoch": int(chosen.epoch), "selection": chosen.reason, "deployed": False,
                    "score": "minority score = -logit; minority when score > threshold"}, indent=2)
    if op:
        _log_hparams(run_dir, cfg, op["row"])
        model_card.write_model_card(run_dir)
    return rows


def _is_parent(run_dir: str) -> bool:
    """A run's baseline/ is reported (and deployed) by its parent run, not on its own."""
    return not (os.path.basename(os.path.normpath(run_dir)) == "baseline"
                and os.path.exists(os.path.join(os.path.dirname(os.path.normpath(run_dir)), "config.yaml")))


def _public(op: dict | None) -> dict | None:
    return None if op is None else {k: v for k, v in op.items() if k != "row"}


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
    """Report and deployment of a one-class run (model.kind knn | patchcore)."""
    cfg = resolve_run_paths(config_from_dict(read_yaml(os.path.join(run_dir, "config.yaml"))), oneclass_run_cwd(run_dir))
    splits = load_splits(cfg)
    dev = run_device(cfg)
    section = budget_section(cfg, run_dir, splits, dev)
    op = deploy(run_dir, cfg, splits, section, dev)
    first = [r for r in section.rows if r["protocol"] == section.deploy_protocol]
    rows = first + report.trivial_rows(section.y_test, splits.counts())
    notes = ["No training: fitted on the majority training images only; the operating point is set on the "
             "validation images the label budget allows, then applied unchanged to test.",
             f"Confidence intervals: 95% stratified bootstrap, {cfg.eval.bootstrap} resamples."]
    leak = run_leak_warning(cfg, splits.meta)
    if leak:
        print(f"warning: {leak}", file=sys.stderr)
    report.write_report(run_dir, rows, f"{cfg.name}: {KIND_LABELS[cfg.model.kind]} on "
                        f"{os.path.basename(os.path.dirname(cfg.data.cohort))}", notes, "test",
                        warnings=[leak] if leak else [], header=section.header, protocol_rows=section.rows,
                        deployed=_public(op), spread=section.spread)
    plots.plot_roc_pr(_deploy_curves(section, op, run_dir), os.path.join(run_dir, "roc_pr_test.png"))
    model_card.write_model_card(run_dir)
    return rows


def _log_hparams(run_dir: str, cfg: Config, row: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    hp = {"model": cfg.model.kind, "encoder": cfg.model.encoder, "discriminator": cfg.model.discriminator,
          "weights": cfg.model.weights, "image_size": cfg.data.image_size, "epochs": cfg.train.epochs,
          "lr_d": cfg.train.lr_d, "lr_g": cfg.train.lr_g, "select": cfg.eval.select, "deploy": deploy_label(cfg)}
    final = {f"hparam/{k}": float(row[k]) for k in ("auroc", "auprc", "f1", "recall", "specificity")
             if row.get(k) is not None and not (isinstance(row[k], float) and math.isnan(row[k]))}
    with SummaryWriter(os.path.join(run_dir, "tb")) as w:
        w.add_hparams(hp, final, run_name="hparams")
