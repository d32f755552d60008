"""Training objectives, one function each: the paper's eGAN losses, the supervised baseline and every option.

The step functions (egan_med.steps) compose them; a new loss goes here, with a config key in TrainConfig and a
test of its effect. Conventions: D's logit is positive for majority; targets are 1 for real majority.
Each loss reduces to a scalar tensor in float32 (BCE on bf16 logits would lose precision).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def real_target(label_smoothing: float) -> float:
    """D's target for real majority images: ``1 - label_smoothing`` (one-sided smoothing, Salimans et al. 2016)."""
    return 1.0 - label_smoothing


def negatives(fake: torch.Tensor, x_min: torch.Tensor, semi_supervised: bool) -> torch.Tensor:
    """The images D must call 0: generated ones, plus the real minority when semi-supervised."""
    return torch.cat([fake, x_min]) if semi_supervised else fake


def add_instance_noise(real: torch.Tensor, neg: torch.Tensor, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise of ``std`` on both sides of D's input (else D learns "noisy means fake"), clamped to [0, 1]."""
    if std <= 0:
        return real, neg
    real = (real + std * torch.randn_like(real)).clamp(0, 1)
    neg = (neg + std * torch.randn_like(neg)).clamp(0, 1)
    return real, neg


def paper_d_loss(logits: torch.Tensor, n_real: int, target_real: float = 1.0) -> torch.Tensor:
    """The paper's D loss: BCE(1, D(majority)) + BCE(0, D(negatives)), each part averaged on its own.

    Args:
        logits: D's logits, the ``n_real`` majority ones first, then the negatives.
        n_real: number of majority logits.
        target_real: target of the majority part (``real_target(label_smoothing)``).

    Returns:
        The scalar loss.
    """
    dev = logits.device
    target = torch.cat([torch.full((n_real,), target_real, device=dev), torch.zeros(len(logits) - n_real, device=dev)])
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return bce[:n_real].mean() + bce[n_real:].mean()


def r1_penalty(score: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``gamma / 2 * E ||d D(x) / dx||^2`` on real images.

    Args:
        score: the discriminator (images -> logits).
        real: real majority images (not cached features: the gradient is taken with respect to pixels).
        gamma: the penalty weight.

    Returns:
        The scalar penalty.
    """
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(x).sum(), x, create_graph=True)
    return 0.5 * gamma * grad.float().pow(2).flatten(1).sum(1).mean()


def paper_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """E and G: make D call the generated images majority, BCE(1, D(G(E(minority))))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones(len(fake_logits), device=fake_logits.device))


def reconstruction_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32 between generated and real minority images of the same shape (the step
    weighs it by train.recon_weight): keeps generated images close to the minority images they encode.

    Raises:
        ValueError: the shapes differ (``mse_loss`` would broadcast 3 channels against 1 silently).
    """
    if fake.shape != target.shape:
        raise ValueError(f"reconstruction loss: generated images {tuple(fake.shape)} and real ones "
                         f"{tuple(target.shape)} differ in shape")
    return F.mse_loss(fake.float(), target.float())


def supervised_loss(logits: torch.Tensor, n_real: int, class_weight: bool) -> torch.Tensor:
    """The supervised baseline: majority -> 1, real minority -> 0.

    Args:
        logits: the ``n_real`` majority logits first, then the minority ones.
        n_real: number of majority logits.
        class_weight: weight the classes equally (mean per class, averaged) instead of per image.

    Returns:
        The scalar loss.
    """
    dev = logits.device
    target = torch.cat([torch.ones(n_real, device=dev), torch.zeros(len(logits) - n_real, device=dev)])
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return 0.5 * (bce[:n_real].mean() + bce[n_real:].mean()) if class_weight else bce.mean()
