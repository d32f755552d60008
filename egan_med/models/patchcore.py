"""Patch-level one-class memory (the PatchCore family, Roth et al. 2022) on a frozen backbone.

Mid-level feature maps of the majority training images (the last units at stride 8 and 16, the
second upsampled to the first's grid and concatenated, then 3x3 average-pooled so that each patch
sees its neighbourhood) form a memory of normal patches, randomly subsampled to a seeded, capped
size. An image's minority score is its most distant patch: the max over its patches of the distance
to the nearest memory patch. Needs no minority image and no training.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from egan_med.models.backbones import Backbone
from egan_med.models.distances import squared_distances


class PatchMemory(nn.Module):
    """PatchCore-style detector; the memory is a buffer, so the state dict is the whole detector and
    ``forward`` its scorer (traceable to TorchScript and ONNX).

    Args:
        backbone: backbone name (a key of ``BACKBONES``).
        weights: ``imagenet``, ``none`` or a state-dict path.
        memory: cap on memory patches (a seeded random subset when there are more).
        seed: the subsample's seed.
        device: where features are computed.
        load: read the backbone weights (False when a saved state dict will fill them).
    """

    def __init__(self, backbone: str, weights: str = "imagenet", memory: int = 10000, seed: int = 0,
                 device: torch.device | str = "cpu", load: bool = True):
        super().__init__()
        self.net = Backbone(backbone, weights, trainable_units=0, load=load)
        self.units = list(self.net.trunk) + list(self.net.top)
        self.memory_cap, self.seed, self.device = memory, seed, torch.device(device)
        self.register_buffer("bank", torch.zeros(0, 0))
        self.to(self.device).eval()

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P, C] patch features of [0, 1] images ``x``: stride-8 and stride-16 maps, 3x3 pooled."""
        h = self.net.normalize(x)
        size = int(x.shape[-1])  # a constant when traced: the layer choice is fixed at export
        last: dict[int, torch.Tensor] = {}
        for unit in self.units:
            h = unit(h)
            if not isinstance(h, torch.Tensor):  # DenseNet's bottleneck pairs: not a feature map
                continue
            stride = max(1, round(size / int(h.shape[-1])))
            last[stride] = h
            if stride > 16:
                break
        maps = [last[s] for s in (8, 16) if s in last] or [h]
        grid = maps[0].shape[-2:]
        f = torch.cat([maps[0]] + [F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in maps[1:]], 1)
        f = F.avg_pool2d(f.float(), 3, stride=1, padding=1, count_include_pad=False)
        return f.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def _loader_patches(self, loader: DataLoader) -> tuple[torch.Tensor, np.ndarray]:
        feats, ys = [], []
        for batch in loader:
            feats.append(self.patches(batch["image"].to(self.device)).cpu())
            ys.append(torch.as_tensor(batch["minority"]))
        return torch.cat(feats), torch.cat(ys).numpy()

    def fit_patches(self, patches: torch.Tensor) -> "PatchMemory":
        """Build the memory from [N, P, C] majority patches."""
        flat = patches.reshape(-1, patches.shape[-1])
        if len(flat) > self.memory_cap:
            g = torch.Generator().manual_seed(self.seed)
            flat = flat[torch.randperm(len(flat), generator=g)[: self.memory_cap]]
        self.bank = flat.to(self.device)
        return self

    def fit(self, majority_loader: DataLoader) -> "PatchMemory":
        patches, _ = self._loader_patches(majority_loader)
        return self.fit_patches(patches)

    def patch_distances(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, P] distance of each patch of [B, P, C] ``patches`` to its nearest memory patch."""
        b, p, c = patches.shape
        return squared_distances(patches.reshape(-1, c), self.bank).min(1).values.sqrt().view(b, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Minority score of [0, 1] images: the distance of their most distant patch to the memory."""
        return self.patch_distances(self.patches(x)).max(1).values

    @torch.no_grad()
    def score_patches(self, patches: torch.Tensor, chunk: int = 64) -> np.ndarray:
        """Max over each image's patches of the distance to the nearest memory patch."""
        if self.bank.numel() == 0:
            raise RuntimeError("PatchMemory.fit must run before score")
        patches = patches.to(self.device)
        return torch.cat([self.patch_distances(patches[i:i + chunk]).max(1).values
                          for i in range(0, len(patches), chunk)]).cpu().numpy()

    @torch.no_grad()
    def score(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Returns (y, minority score); larger = farther from every normal patch."""
        ys, ss = [], []
        for batch in loader:
            ss.append(self(batch["image"].to(self.device)).float().cpu())
            ys.append(torch.as_tensor(batch["minority"]))
        return torch.cat(ys).numpy(), torch.cat(ss).numpy()
