"""One-class k-nearest-neighbour detector on frozen ImageNet features.

Like eGAN it needs no minority images: it scores how far an image lies from the majority
training images in the pooled feature space of a frozen backbone.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors
from torch.utils.data import DataLoader

from egan_med.models.backbones import Backbone


class KNNOneClass:
    """Minority score = mean Euclidean distance between L2-normalised features and their k nearest majority ones.

    On unit vectors ``||a - b|| = sqrt(2 - 2 cos(a, b))``, a monotone function of the cosine distance
    ``1 - cos``: the k neighbours are exactly the k most cosine-similar majority images, and with k = 1 the
    score ranks images as the cosine distance does. (With k > 1 it averages ``sqrt(2 * cosine distance)``,
    not the cosine distance itself.)

    Args:
        backbone: backbone name.
        weights: ``imagenet``, ``none`` or a state-dict path.
        k: neighbours averaged.
        device: where features are computed.
    """

    def __init__(self, backbone: str, weights: str = "imagenet", k: int = 5, device: torch.device | str = "cpu"):
        self.net = Backbone(backbone, weights, trainable_units=0).to(device).eval()
        self.k, self.device = k, torch.device(device)
        self.index: NearestNeighbors | None = None

    @torch.no_grad()
    def features(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised pooled features and minority labels of every item of ``loader``."""
        feats, ys = [], []
        for batch in loader:
            f = self.net(batch["image"].to(self.device)).mean((2, 3))
            feats.append(torch.nn.functional.normalize(f, dim=1).cpu())
            ys.append(torch.as_tensor(batch["minority"]))
        return torch.cat(feats).numpy(), torch.cat(ys).numpy()

    def fit(self, majority_loader: DataLoader) -> "KNNOneClass":
        x, _ = self.features(majority_loader)
        self.index = NearestNeighbors(n_neighbors=min(self.k, len(x)), metric="euclidean").fit(x)
        return self

    def score(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Returns (y, minority score); larger = farther from the majority."""
        if self.index is None:
            raise RuntimeError("KNNOneClass.fit must run before score")
        x, y = self.features(loader)
        dist, _ = self.index.kneighbors(x)
        return y, dist.mean(1)
