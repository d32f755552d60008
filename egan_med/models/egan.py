"""eGAN's three networks (paper section 3.1 and the authors' notebooks, see NOTES.md).

E: backbone -> global average pool -> Linear(C, 128), the latent (no activation).
G: Linear(128, 32 * (S/4)^2) -> LeakyReLU(0.2) -> (32, S/4, S/4) -> ConvT(64) -> BN -> LeakyReLU
   -> ConvT(3) -> BN -> sigmoid: images in [0, 1] at the configured size S.
D: backbone -> global average pool -> Dropout(0.2) -> Linear(C, 1), a logit (> 0 majority).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from egan_med.config import ModelConfig
from egan_med.models.backbones import Backbone


class Encoder(nn.Module):
    """Maps minority images to the 128-d latent code."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.backbone = Backbone(cfg.encoder, cfg.weights_for("encoder"), cfg.trainable_blocks, cfg.train_bn)
        self.fc = nn.Linear(self.backbone.out_channels, cfg.latent_dim)

    def forward(self, x: torch.Tensor, from_trunk: bool = False) -> torch.Tensor:
        return self.fc(self.backbone(x, from_trunk).mean((2, 3)))


class Generator(nn.Module):
    """Two transposed convolutions from the latent code to an image of ``image_size`` pixels."""

    def __init__(self, latent_dim: int, image_size: int, channels: int = 3):
        super().__init__()
        self.side = image_size // 4
        self.fc = nn.Sequential(nn.Linear(latent_dim, 32 * self.side * self.side), nn.LeakyReLU(0.2))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(32, 64, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(64),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(64, channels, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, 32, self.side, self.side))


class Discriminator(nn.Module):
    """Scores images: a positive logit means majority, negative means minority."""

    def __init__(self, cfg: ModelConfig, load_weights: bool = True):
        super().__init__()
        self.backbone = Backbone(cfg.discriminator, cfg.weights_for("discriminator"), cfg.trainable_blocks, cfg.train_bn,
                                 load=load_weights)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.backbone.out_channels, 1)
        if cfg.spectral_norm:
            # Head only: a normalised conv feeding a frozen inference-mode BatchNorm collapses every
            # image to the same features (measured: feature std 0, AUROC exactly 0.5).
            self.head = _spectral_norm(self.head)

    def forward(self, x: torch.Tensor, from_trunk: bool = False) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(x, from_trunk).mean((2, 3)))).squeeze(1)


class Classifier(Discriminator):
    """The supervised baseline: the same network as D, trained with labels (logit > 0 majority)."""


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Returns (total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


class EncoderGenerator(nn.Module):
    """E then G as one module, so DDP wraps one forward per step."""

    def __init__(self, encoder: Encoder, generator: Generator):
        super().__init__()
        self.E, self.G = encoder, generator

    def forward(self, x: torch.Tensor, from_trunk: bool = False) -> torch.Tensor:
        return self.G(self.E(x, from_trunk))


class ScorePair(nn.Module):
    """D on real images (or their cached trunk outputs) and on negatives, in one forward.

    Two inner calls in a fixed order keep the cached and uncached paths identical, dropout
    masks included, while DDP still sees a single forward per backward.
    """

    def __init__(self, scorer: nn.Module):
        super().__init__()
        self.scorer = scorer

    def forward(self, real, negatives: torch.Tensor, real_from_trunk: bool = False) -> torch.Tensor:
        return torch.cat([self.scorer(real, real_from_trunk), self.scorer(negatives)])
