"""One-class k-nearest-neighbour detector on frozen ImageNet features.

Like eGAN it needs no minority images: it scores how far an image lies from the majority
training images in the pooled feature space of a frozen backbone.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from egan_med.models.backbones import Backbone
from egan_med.models.distances import nearest_squared
from egan_med.models.scorers import score_batches


class KNNOneClass(nn.Module):
    """Minority score = mean Euclidean distance between L2-normalised features and their k nearest majority ones.

    On unit vectors ``||a - b|| = sqrt(2 - 2 cos(a, b))``, a monotone function of the cosine distance
    ``1 - cos``: the k neighbours are exactly the k most cosine-similar majority images, and with k = 1 the
    score ranks images as the cosine distance does. (With k > 1 it averages ``sqrt(2 * cosine distance)``,
    not the cosine distance itself.)

    The fitted memory (every majority image's feature) is a buffer: the module's state dict is the whole
    detector, and ``forward`` is its scorer (traceable to TorchScript and ONNX).

    Args:
        backbone: backbone name.
        weights: ``imagenet``, ``none`` or a state-dict path.
        k: neighbours averaged.
        device: where features are computed.
        load: read the backbone weights (False when a saved state dict will fill them).
    """

    def __init__(self, backbone: str, weights: str = "imagenet", k: int = 5, device: torch.device | str = "cpu",
                 load: bool = True):
        super().__init__()
        self.net = Backbone(backbone, weights, trainable_units=0, load=load)
        self.k, self.device = k, torch.device(device)
        self.register_buffer("bank", torch.zeros(0, self.net.out_channels))
        self.to(self.device).eval()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised pooled features of [0, 1] images."""
        return torch.nn.functional.normalize(self.net(x).mean((2, 3)), dim=1)

    @torch.no_grad()
    def fit(self, majority_loader: DataLoader) -> "KNNOneClass":
        """Every majority image's feature into ``bank`` (on the device; the kNN memory is all of them)."""
        self.bank = torch.cat([self.embed(batch["image"].to(self.device)) for batch in majority_loader])
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Minority score of [0, 1] images: mean distance to the k nearest majority features.

        The memory is read in chunks with a running top-k (``distances.nearest_squared``): a batch of B images
        holds at most [B, BANK_CHUNK + k] distances however many majority images were fitted.
        """
        return nearest_squared(self.embed(x), self.bank, self.k).sqrt().mean(1)

    @torch.no_grad()
    def score(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Returns (y, minority score); larger = farther from the majority."""
        if self.bank.shape[0] == 0:
            raise RuntimeError("KNNOneClass.fit must run before score")
        return score_batches(self, loader, self.device)
