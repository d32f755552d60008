"""Every detector of a run as minority scores on validation and test, for the two-protocol table.

Trained detectors (eGAN's D, the supervised baseline) leave one ``epoch_scores/epoch_NNN.npz`` per
epoch; one-class detectors (``knn``, ``patchcore``) need no training and are scored once, cached in
``oneclass/<kind>.npz``. ``model.kind: knn`` or ``patchcore`` runs one of them on its own.
"""
from __future__ import annotations

import glob
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from egan_med.evaluation import budget as bud
from egan_med.config import KIND_LABELS, Config, budget_note, fusion_note
from egan_med.io import atomic_path, write_json
from egan_med.cohort.splits import CohortSplits

ONECLASS = ("knn", "patchcore")
LABELS = KIND_LABELS  # the row label of each model kind


def save_epoch_scores(run_dir: str, epoch: int, scored: Mapping[str, tuple]) -> None:
    """Keep one epoch's validation and test scores (minority score = -logit), so any protocol can pick it."""
    folder = os.path.join(run_dir, "epoch_scores")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"epoch_{epoch:03d}.npz")
    arrays = {}
    for split, (y, logits) in scored.items():
        arrays[f"y_{split}"], arrays[f"s_{split}"] = np.asarray(y), -np.asarray(logits, np.float32)
    with atomic_path(path, tmp=path + ".tmp.npz") as tmp:  # (np.savez would add .npz to a name without it)
        np.savez(tmp, **arrays)


def epoch_detector(run_dir: str, how: str = "") -> tuple[bud.Detector, np.ndarray, np.ndarray] | None:
    """The per-epoch scores of a trained run as a Detector, with y_val and y_test; None if it kept none."""
    files = sorted(glob.glob(os.path.join(run_dir, "epoch_scores", "epoch_*.npz")))
    if not files:
        return None
    loaded = [np.load(f) for f in files]
    epochs = [int(os.path.basename(f)[6:9]) for f in files]
    det = bud.Detector(np.stack([d["s_val"] for d in loaded]), np.stack([d["s_test"] for d in loaded]), epochs, how)
    return det, loaded[0]["y_val"], loaded[0]["y_test"]


def _loaders(cfg: Config, splits: CohortSplits) -> dict:
    from egan_med import data as dl

    out = {s: dl.make_loader(dl.make_dataset(getattr(splits, s), splits.root, cfg.data, train=False), 256,
                             shuffle=False, num_workers=cfg.data.num_workers, seed=0) for s in ("val", "test")}
    out["majority"] = dl.make_loader(dl.make_dataset(splits.train_majority, splits.root, cfg.data, train=False), 256,
                                     shuffle=False, num_workers=cfg.data.num_workers, seed=0)
    return out


def oneclass_scorer_path(run_dir: str, kind: str) -> str:
    """Where a run keeps its fitted one-class detector (a saved scorer: ``models.scorers.load_scorer``)."""
    return os.path.join(run_dir, "oneclass", f"{kind}.pt")


def oneclass_scores(cfg: Config, splits: CohortSplits, kind: str, run_dir: str,
                    device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Fit the one-class detector ``kind`` on the majority training images and score val and test (cached).

    The fitted detector is saved beside its scores (``oneclass/<kind>.pt``), so it deploys without refitting.

    Returns:
        dict with y_val, s_val, y_test, s_test (s: higher = more minority).
    """
    from egan_med.models.scorers import save_scorer, spec_of

    path = os.path.join(run_dir, "oneclass", f"{kind}.npz")
    if os.path.exists(path) and os.path.exists(oneclass_scorer_path(run_dir, kind)):
        with np.load(path) as d:
            return {k: d[k] for k in d.files}
    weights = cfg.model.discriminator_weights or cfg.model.weights
    if kind == "knn":
        from egan_med.models.knn import KNNOneClass
        model = KNNOneClass(cfg.model.discriminator, weights, cfg.model.knn_k, device)
    elif kind == "patchcore":
        from egan_med.models.patchcore import PatchMemory
        model = PatchMemory(cfg.model.discriminator, weights, cfg.model.patch_memory, cfg.train.seed, device,
                            subsample=cfg.model.patch_subsample)
    else:
        raise ValueError(f"not a one-class detector: {kind!r}")
    loaders = _loaders(cfg, splits)
    model.fit(loaders["majority"])
    out = {}
    for split in ("val", "test"):
        out[f"y_{split}"], out[f"s_{split}"] = model.score(loaders[split])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_scorer(oneclass_scorer_path(run_dir, kind), model, spec_of(model),
                {"detector": LABELS[kind], "config": cfg.to_dict()})
    with atomic_path(path, tmp=path + ".tmp.npz") as tmp:
        np.savez(tmp, **out)
    return out


def fit_oneclass_run(cfg: Config, run_dir: str, force: bool = False) -> str:
    """``model.kind: knn | patchcore``: a run with no training; writes config and scores into ``run_dir``."""
    from egan_med.engine.rundir import check_run_dir, create_run_dir
    from egan_med.cohort.splits import load_splits

    wipe = check_run_dir(run_dir, cfg, resume=None, force=force)
    splits = load_splits(cfg)
    create_run_dir(run_dir, cfg, wipe)
    print(f"run '{cfg.name}': {cfg.model.kind} on {cfg.data.cohort} at {cfg.data.image_size}px (no training)", file=sys.stderr)
    oneclass_scores(cfg, splits, cfg.model.kind, run_dir, run_device(cfg))
    # As a checkpoint's "cwd": relative config paths mean "from where the run was made", for evaluate elsewhere.
    write_json(os.path.join(run_dir, "oneclass", "run.json"), {"cwd": os.getcwd()})
    return run_dir


def run_device(cfg: Config) -> torch.device:
    """The device a run's scoring and one-class feature passes use: ``train.device``, CUDA when auto finds one."""
    name = cfg.train.device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name if name != "cuda" or torch.cuda.is_available() else "cpu")


def oneclass_run_cwd(run_dir: str) -> str | None:
    """The working directory a one-class run was made from (None when it did not record one)."""
    path = os.path.join(run_dir, "oneclass", "run.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        cwd = json.load(fh).get("cwd")
    return cwd if isinstance(cwd, str) else None


def run_detectors(cfg: Config, run_dir: str, splits: CohortSplits, device) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every detector this run holds or asks for, as Detectors, with y_val and y_test.

    The run's own model (if trained), its ``baseline/`` run, and the one-class detectors named by
    ``model.kind`` or ``eval.knn`` / ``eval.patchcore``.
    """
    dets: dict[str, bud.Detector] = {}
    y_val = y_test = None
    if cfg.model.kind not in ONECLASS:
        own = epoch_detector(run_dir, LABELS[cfg.model.kind])
        if own is not None:
            dets[LABELS[cfg.model.kind]], y_val, y_test = own
        base = epoch_detector(os.path.join(run_dir, "baseline"), LABELS["supervised"])
        if base is not None:
            dets[LABELS["supervised"]] = base[0]
            y_val, y_test = base[1], base[2]
    kinds = [k for k in ONECLASS if cfg.model.kind == k or getattr(cfg.eval, k)]
    for kind in kinds:
        d = oneclass_scores(cfg, splits, kind, run_dir, device)
        if y_val is not None and not (np.array_equal(d["y_val"], y_val) and np.array_equal(d["y_test"], y_test)):
            raise RuntimeError(f"{kind} scored the splits in another order than the trained detectors")
        y_val, y_test = d["y_val"], d["y_test"]
        dets[LABELS[kind]] = bud.Detector(d["s_val"][None], d["s_test"][None], [0], f"{kind}, no training")
    return dets, y_val, y_test


@dataclass
class BudgetSection:
    """Every detector of a run under both protocols, and what deploying one of them needs.

    Attributes:
        header: the report's label-budget lines.
        rows: ``budget.protocol_rows`` rows.
        choices: (protocol, label) -> the chosen epoch row / fusion weights.
        masks: protocol -> validation mask.
        detectors: label -> Detector (per-epoch scores).
        y_val, y_test: labels.
        budget_seed: the seed the realistic subset was drawn with (``eval.budget_seed``, resolved).
        spread: ``budget.budget_spread`` of the realistic protocol ([] without a budget).
    """

    header: list[str]
    rows: list[dict]
    choices: dict
    masks: dict
    detectors: dict
    y_val: np.ndarray
    y_test: np.ndarray
    budget_seed: int
    spread: list[dict] = field(default_factory=list)

    @property
    def deploy_protocol(self) -> str:
        """The protocol a deployment follows: the realistic one whenever a budget holds validation positives back."""
        return bud.REALISTIC if bud.REALISTIC in self.masks else bud.GENEROUS


def budget_section(cfg: Config, run_dir: str, splits: CohortSplits, device, spread_draws: int = 20) -> BudgetSection | None:
    """The label-budget header and both protocols' rows for every detector of the run (None: it has none)."""
    dets, y_val, y_test = run_detectors(cfg, run_dir, splits, device)
    if not dets:
        return None
    sizes = splits.sizes()
    n_train, n_val = sizes["train"][0], int(np.sum(y_val))
    used = bud.resolve_budget(cfg.eval.val_minority_budget, n_train, n_val)
    seed = bud.resolve_budget_seed(cfg.eval.budget_seed, cfg.train.seed, cfg.data.fold)
    masks = {bud.REALISTIC: bud.budget_mask(y_val, used, seed)} if used < n_val else {}
    masks[bud.GENEROUS] = np.ones(len(y_val), bool)
    header = bud.budget_header(n_train, n_val, used, cfg.eval.val_minority_budget, seed)
    for note in (budget_note(cfg.eval.val_minority_budget, n_train, n_val), fusion_note(cfg.eval.fusion, len(dets))):
        if note:  # said in the report and on stderr, never silently
            header.append(f"Note: {note}.")
            print(f"warning: {note}", file=sys.stderr)
    counts = splits.counts()
    choices: dict = {}
    rows = bud.protocol_rows(dets, y_val, y_test, masks, counts, cfg.eval.operating_point, cfg.eval.target,
                             cfg.eval.bootstrap, cfg.train.seed, fusion=cfg.eval.fusion, choices=choices)
    spread = (bud.budget_spread(dets, y_val, y_test, used, cfg.eval.operating_point, cfg.eval.target,
                                draws=spread_draws, seed=seed, fusion=cfg.eval.fusion)
              if bud.REALISTIC in masks and spread_draws > 0 else [])
    return BudgetSection(header, rows, choices, masks, dets, np.asarray(y_val), np.asarray(y_test), seed, spread)
