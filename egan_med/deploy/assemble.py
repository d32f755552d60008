"""A run's detectors as scorers at the epochs a protocol chose, and the fusion of them."""
from __future__ import annotations

import os

import torch
from torch import nn

from egan_med.config import KIND_LABELS, Config, config_from_dict
from egan_med.engine.checkpoint import CheckpointError, epoch_weights_path, load_checkpoint
from egan_med.io import first_line
from egan_med.evaluation.detectors import BudgetSection, oneclass_scorer_path
from egan_med.models.scorers import FusionScorer, NetScorer, ScorerError, load_scorer, score_batches, spec_of

LABEL_KINDS = {label: kind for kind, label in KIND_LABELS.items()}


def checkpoint_net(state: dict, path: str, cfg: Config) -> tuple[nn.Module, str]:
    """The scoring network (D, or the classifier) a checkpoint ``state`` holds, built for ``cfg`` and loaded.

    Returns:
        (network in eval mode, its key in ``state["models"]``: ``D`` or ``C``).

    Raises:
        CheckpointError: no network under that key, or weights that do not fit the config's network.
    """
    from egan_med.models import Classifier, Discriminator

    if not isinstance(state["config"], dict) or not isinstance(state.get("models"), dict):
        raise CheckpointError(f"{path}: not an egan_med checkpoint (no config or models)")
    key, cls = ("D", Discriminator) if cfg.model.kind == "egan" else ("C", Classifier)
    if key not in state["models"]:
        raise CheckpointError(f"{path}: has no '{key}' network (it holds {sorted(map(str, state['models']))[:6]})")
    net = cls(cfg.model, load_weights=False)  # the checkpoint holds every weight: no ImageNet file needed
    try:
        net.load_state_dict(state["models"][key])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: its '{key}' weights do not fit a {cfg.model.discriminator} "
                              f"{cfg.model.kind} network ({first_line(exc)})") from None
    return net.eval(), key


def trained_scorer(run_dir: str, epoch: int) -> tuple[NetScorer, dict]:
    """The scoring network (D, or the classifier) of a trained run at ``epoch``, and the run's config dict.

    The full weights come from ``last.pt`` (the frozen trunk never changes); the epoch's changeable weights,
    kept by training in ``checkpoints/epochs/``, go on top. A run from before those were kept deploys ``best.pt``
    or ``last.pt`` only when that is the epoch asked for.

    Raises:
        CheckpointError: no checkpoint holds that epoch, or its weights do not fit.
    """
    ckpt = os.path.join(run_dir, "checkpoints")
    state = load_checkpoint(os.path.join(ckpt, "last.pt"))
    cfg = config_from_dict(state["config"])
    net, key = checkpoint_net(state, os.path.join(ckpt, "last.pt"), cfg)
    try:
        if int(state["epoch"]) != epoch:
            path = epoch_weights_path(run_dir, epoch)
            if os.path.exists(path):
                overlay = load_checkpoint(path)["models"][key]
            elif os.path.exists(os.path.join(ckpt, "best.pt")) and \
                    int((best := load_checkpoint(os.path.join(ckpt, "best.pt")))["epoch"]) == epoch:
                overlay = best["models"][key]
            else:
                raise CheckpointError(f"{run_dir}: no weights kept for epoch {epoch} (the epoch the label budget chose); "
                                      "this run predates per-epoch weights: train it again to deploy that epoch")
            unexpected = net.load_state_dict(overlay, strict=False).unexpected_keys
            if unexpected:
                raise CheckpointError(f"{path}: weights {unexpected[:3]} are not in a {cfg.model.discriminator} network")
    except (KeyError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        first = first_line(exc)
        raise CheckpointError(f"{ckpt}: '{key}' weights do not fit a {cfg.model.discriminator} network ({first})") from None
    return NetScorer(net).eval(), state["config"]


def component_scorer(run_dir: str, label: str, choice: dict) -> tuple[nn.Module, dict]:
    """One detector of a run at its chosen epoch, as a scorer with its build spec.

    Args:
        run_dir: the run directory (the baseline lives in its ``baseline/``).
        label: the detector's report label.
        choice: ``BudgetSection.choices`` entry of this detector under the deployed protocol.
    """
    kind = LABEL_KINDS[label]
    if kind in ("knn", "patchcore"):
        try:
            scorer, meta = load_scorer(oneclass_scorer_path(run_dir, kind))
        except ScorerError as exc:
            raise CheckpointError(str(exc)) from None
        return scorer, spec_of(scorer)
    own = config_from_dict(load_checkpoint(os.path.join(run_dir, "checkpoints", "last.pt"))["config"])
    where = run_dir if own.model.kind == kind else os.path.join(run_dir, "baseline")
    scorer, cfg_dict = trained_scorer(where, int(choice["epoch"]))
    return scorer, spec_of(scorer, cfg_dict["model"])


def deployed_scorer(run_dir: str, section: BudgetSection, label: str, val_loader,
                    device: torch.device) -> tuple[nn.Module, dict, dict]:
    """The detector ``label`` under the section's deploy protocol, as one scorer.

    Args:
        run_dir: the run.
        section: the run's budget section (its choices say which epoch each detector deploys).
        label: a detector's or a fusion's report label.
        val_loader: the validation images the protocol KEEPS (for a fusion's rank references).
        device: where to score.

    Returns:
        (scorer, build spec, what was chosen: epochs per component, fusion weights).
    """
    proto = section.deploy_protocol
    if label in LABEL_KINDS:
        choice = section.choices[(proto, label)]
        scorer, spec = component_scorer(run_dir, label, choice)
        return scorer, spec, {"epochs": {label: choice.get("epoch", 0)}}
    weights = section.choices[(proto, label)]["weights"]
    comps, specs, refs, epochs = [], [], [], {}
    for name in section.detectors:
        scorer, spec = component_scorer(run_dir, name, section.choices[(proto, name)])
        refs.append(torch.as_tensor(score_batches(scorer, val_loader, device)[1]))
        comps.append(scorer.cpu())
        specs.append(spec)
        epochs[name] = section.choices[(proto, name)].get("epoch", 0)
    w = [float(weights[name]) for name in section.detectors]
    fused = FusionScorer(comps, refs, w)
    spec = {"kind": "fusion", "components": specs, "names": list(section.detectors),
            "reference_sizes": [len(r) for r in refs], "weights": w}
    return fused, spec, {"epochs": epochs, "weights": dict(zip(section.detectors, w))}
