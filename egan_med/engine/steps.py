"""One optimisation step of each model kind, composed from egan_med.models.objectives.

Both step functions share one signature, ``step(t, nets, batch) -> Tensor[2]`` (the detached D and G losses,
G's 0 for the supervised baseline), and are what the training loop, scripts/bench.py and scripts/gpu_bench.py
call, so a benchmark times exactly what training runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from egan_med.config import TrainConfig
from egan_med.models import objectives as obj
from egan_med.models.egan import frozen_batchnorm_stats
from egan_med.engine.runtime import autocast


@dataclass
class StepNets:
    """The networks and optimisers a step updates.

    Attributes:
        D: the scoring network (eGAN's D, or the supervised classifier C).
        pair_step: (real, negatives, real_is_cached) -> logits, real first (ScorePair(D), maybe DDP/compiled).
        opt_d: D's optimiser.
        EG: eGAN's encoder + generator (used without gradient to make D's negatives); None for supervised.
        eg_step: EG as the generator update runs it (maybe DDP/compiled).
        g_scorer: D as the generator update sees it (maybe compiled; no DDP: only E and G learn there).
        opt_g: E and G's optimiser.
    """

    D: torch.nn.Module
    pair_step: Callable
    opt_d: torch.optim.Optimizer
    EG: torch.nn.Module | None = None
    eg_step: Callable | None = None
    g_scorer: Callable | None = None
    opt_g: torch.optim.Optimizer | None = None


@dataclass
class StepBatch:
    """What one step reads.

    Attributes:
        real: majority images (N, C, S, S), or their cached trunk features when ``cached``.
        n_real: number of majority items.
        x_min: this epoch's minority images.
        min_trunk: E's frozen-trunk output on ``x_min`` (eGAN only).
        cached: ``real`` holds trunk features (train.feature_cache).
    """

    real: torch.Tensor
    n_real: int
    x_min: torch.Tensor
    min_trunk: torch.Tensor | None = None
    cached: bool = False


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def egan_step(t: TrainConfig, n: StepNets, b: StepBatch) -> torch.Tensor:
    """One D update, then one E+G update (the paper's alternating scheme), with the options of ``t``.

    Args:
        t: the train section (amp, label_smoothing, instance_noise, semi_supervised, r1_gamma, recon_weight).
        n: networks and optimisers.
        b: the step's majority batch and the epoch's minority images.

    Returns:
        (loss_d, loss_g), detached.
    """
    dev = b.x_min.device
    # D: real majority -> 1, generated from minority codes -> 0 (semi-supervised: real minority -> 0 too).
    with autocast(dev, t.amp):
        with torch.no_grad():
            fake = n.EG(b.min_trunk, True)
        neg = obj.negatives(fake, b.x_min, t.semi_supervised)
        real, neg = obj.add_instance_noise(b.real, neg, t.instance_noise)
        logits = n.pair_step(real, neg, b.cached).float()
        loss_d = obj.paper_d_loss(logits, b.n_real, obj.real_target(t.label_smoothing))
        if t.r1_gamma > 0:
            with frozen_batchnorm_stats(n.D):  # a real-only batch must not move D's running statistics
                loss_d = loss_d + obj.r1_penalty(n.D, real, t.r1_gamma)
    _update(n.opt_d, loss_d)
    # E and G: make D call the generated images majority.
    with autocast(dev, t.amp):
        fake = n.eg_step(b.min_trunk, True)
        # D's BatchNorm in inference mode here: G learns against the network that is scored, and a
        # generated-only batch never moves D's running statistics (only D's mixed batches do).
        with frozen_batchnorm_stats(n.D):
            d_fake = n.g_scorer(fake)
        loss_g = obj.paper_g_loss(d_fake.float())
        if t.recon_weight > 0:
            loss_g = loss_g + t.recon_weight * obj.reconstruction_loss(fake, b.x_min)
    _update(n.opt_g, loss_g)
    return torch.stack([loss_d.detach(), loss_g.detach()])


def supervised_step(t: TrainConfig, n: StepNets, b: StepBatch) -> torch.Tensor:
    """One update of the supervised baseline: majority -> 1, real minority -> 0.

    Args:
        t: the train section (amp, class_weight).
        n: the classifier and its optimiser.
        b: the step's majority batch and the epoch's minority images.

    Returns:
        (loss, 0), detached.
    """
    dev = b.x_min.device
    with autocast(dev, t.amp):
        logits = n.pair_step(b.real, b.x_min, b.cached).float()
        loss = obj.supervised_loss(logits, b.n_real, t.class_weight)
    _update(n.opt_d, loss)
    return torch.stack([loss.detach(), torch.zeros((), device=dev)])


STEPS: dict[str, Callable[[TrainConfig, StepNets, StepBatch], torch.Tensor]] = {
    "egan": egan_step, "supervised": supervised_step}
