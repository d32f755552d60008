"""eGAN's three networks (paper section 3.1 and the authors' notebooks, see NOTES.md).

E: backbone -> global average pool -> Linear(C, 128), the latent (no activation).
G: Linear(128, 32 * (S/4)^2) -> LeakyReLU(0.2) -> (32, S/4, S/4) -> ConvT(64) -> BN -> LeakyReLU
   -> ConvT(3, or 1 for grayscale data) -> BN -> sigmoid: images in [0, 1] at the configured size S.
D: backbone -> global average pool -> Dropout(0.2) -> Linear(C, 1), a logit (> 0 majority).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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
    """Two transposed convolutions from the latent code to an image of ``image_size`` pixels.

    Args:
        latent_dim: size of the latent code.
        image_size: output side in pixels.
        channels: channels G makes: 1 for grayscale data, 3 for colour.
        out_channels: channels D receives (``data.channels``); a single made channel is repeated to
            it exactly as a stored gray image is, so D cannot tell fakes by unequal channels.
    """

    def __init__(self, latent_dim: int, image_size: int, channels: int = 3, out_channels: int | None = None):
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        if channels != out_channels and channels != 1:
            raise ValueError(f"a generator of {channels} channels cannot make {out_channels}-channel images")
        self.channels, self.out_channels = channels, out_channels
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
        img = self.up(self.fc(z).view(-1, 32, self.side, self.side))
        return img.repeat(1, self.out_channels, 1, 1) if self.channels != self.out_channels else img


@contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` in inference mode for the duration, then back to their own mode.

    The generator step uses this on D: D is then the network that is scored (running statistics),
    and generated-only batches never move D's running statistics.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in bns:
        m.eval()
    try:
        yield
    finally:
        for m in bns:
            m.train()


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
        features = self.backbone(x, from_trunk).mean((2, 3))
        if not torch.is_autocast_enabled(features.device.type):  # plain path: what export traces
            return self.head(self.dropout(features)).squeeze(1)
        # The one-unit head and its logits stay float32 under bf16 autocast: logits are thresholded
        # and ranked (AUROC, the validation threshold), and bf16's 8 mantissa bits would create ties.
        with torch.autocast(features.device.type, enabled=False):
            return self.head(self.dropout(features.float())).squeeze(1)


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


def _cat_trunk(a, b):
    """Concatenate two trunk outputs along the batch (a tensor, or a tuple for DenseNet/ResNet splits)."""
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y]) for x, y in zip(a, b))
    return torch.cat([a, b])


class ScorePair(nn.Module):
    """D on real images (or their cached trunk outputs) and on negatives, as ONE batch in one forward.

    The frozen trunk runs on each part alone (it is in inference mode, so this changes nothing and
    lets cached real trunk outputs join in); the trainable top and head then see real and negatives
    concatenated, so BatchNorm in training mode normalises a mixed batch, not a one-class one that
    would remove the very difference D must learn. The cached and uncached paths are the same call,
    dropout masks included, and DDP sees a single forward per backward.
    """

    def __init__(self, scorer: nn.Module):
        super().__init__()
        self.scorer = scorer

    def forward(self, real, negatives: torch.Tensor, real_from_trunk: bool = False) -> torch.Tensor:
        trunk = self.scorer.backbone.features_trunk
        real_t = real if real_from_trunk else trunk(real)
        return self.scorer(_cat_trunk(real_t, trunk(negatives)), True)
