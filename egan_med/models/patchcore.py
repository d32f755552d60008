"""Patch-level one-class memory (the PatchCore family, Roth et al. 2022) on a frozen backbone.

Mid-level feature maps of the majority training images (the last units at stride 8 and 16, the
second upsampled to the first's grid and concatenated, then 3x3 average-pooled so that each patch
sees its neighbourhood) form a memory of normal patches. An image's minority score is its most
distant patch: the max over its patches of the distance to the nearest memory patch. Needs no
minority image and no training.

Memory is bounded: the majority images are read batch by batch; each batch's patches enter a
seeded uniform sample of at most ``pool`` patches (bottom-k of random keys, so the sample is the
same whatever the batch size), and the pool is then reduced to ``memory`` patches, by PatchCore's
greedy k-center coreset on a random projection (``subsample="coreset"``) or by keeping the first
``memory`` of the uniform sample (``"random"``). The peak depends on the pool and the batch, not on
the number of images. Scoring reads the memory in chunks (``distances.nearest_distance``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from egan_med.models.backbones import Backbone
from egan_med.models.distances import nearest_distance
from egan_med.models.scorers import score_batches

SUBSAMPLES = ("coreset", "random")
POOL_FACTOR = 4  # default pool: this many times the memory cap (PatchCore's coreset keeps 1-10% of all patches)
PROBE_SIZE = 128  # a multiple of every backbone's largest stride (32), so output sizes give exact strides


def unit_strides(units: list[nn.Module], normalize, size: int = PROBE_SIZE) -> list[int | None]:
    """Each unit's output stride (input side / output side on a ``size`` px probe); None for a non-map output.

    Measured on a probe whose side every stride divides, so "same"-padded odd sizes cannot blur it
    (at 28 px a stride-8 map is 4x4: 28 / 4 = 7).
    """
    strides: list[int | None] = []
    h = normalize(torch.zeros(1, 3, size, size))
    with torch.no_grad():
        for unit in units:
            h = unit(h)
            strides.append(size // h.shape[-1] if isinstance(h, torch.Tensor) else None)
    return strides


def greedy_coreset(x: torch.Tensor, n: int, seed: int = 0, proj_dim: int = 128) -> torch.Tensor:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-center (each next row the farthest from those chosen).

    As PatchCore: distances on a seeded Gaussian random projection to ``proj_dim`` dimensions (Johnson-Lindenstrauss),
    started from a seeded random row. Memory: the projection, [len(x), proj_dim], and one distance vector.
    """
    if n >= len(x):
        return torch.arange(len(x), device=x.device)
    g = torch.Generator().manual_seed(seed)
    z = x.float()
    if z.shape[1] > proj_dim:
        proj = torch.randn(z.shape[1], proj_dim, generator=g) / math.sqrt(proj_dim)
        z = z @ proj.to(z.device)
    sq = z.pow(2).sum(1)
    chosen = torch.empty(n, dtype=torch.long, device=x.device)
    j = int(torch.randint(len(z), (1,), generator=g))
    mind = torch.full_like(sq, float("inf"))
    for i in range(n):
        chosen[i] = j
        mind = torch.minimum(mind, sq - 2.0 * (z @ z[j]) + sq[j])
        j = int(mind.argmax())
    return chosen


class PatchMemory(nn.Module):
    """PatchCore-style detector; the memory is a buffer, so the state dict is the whole detector and
    ``forward`` its scorer (traceable to TorchScript and ONNX).

    Args:
        backbone: backbone name (a key of ``BACKBONES``).
        weights: ``imagenet``, ``none`` or a state-dict path.
        memory: cap on memory patches.
        seed: seeds the uniform pool and the coreset.
        device: where features are computed.
        load: read the backbone weights (False when a saved state dict will fill them).
        subsample: ``coreset`` (greedy k-center, PatchCore's) or ``random`` (a seeded uniform subset).
        pool: most patches held while fitting (default ``POOL_FACTOR * memory``; ``random`` needs only ``memory``).
    """

    def __init__(self, backbone: str, weights: str = "imagenet", memory: int = 10000, seed: int = 0,
                 device: torch.device | str = "cpu", load: bool = True, subsample: str = "coreset",
                 pool: int | None = None):
        super().__init__()
        if subsample not in SUBSAMPLES:
            raise ValueError(f"subsample must be one of {', '.join(SUBSAMPLES)}, not {subsample!r}")
        self.net = Backbone(backbone, weights, trainable_units=0, load=load)
        self.units = list(self.net.trunk) + list(self.net.top)
        self.memory_cap, self.seed, self.device, self.subsample = memory, seed, torch.device(device), subsample
        self.pool_cap = memory if subsample == "random" else max(memory, pool or POOL_FACTOR * memory)
        self.net.eval()
        strides = unit_strides(self.units, self.net.normalize)
        # The last unit at stride 8 and the last at stride 16 (the stride-8 one alone if the net has no stride 16).
        self.taps = [max(i for i, s in enumerate(strides) if s == t) for t in (8, 16) if t in strides]
        if not self.taps:
            raise ValueError(f"backbone {backbone} has no stride-8 feature map")
        self.register_buffer("bank", torch.zeros(0, 0))
        self.peak_rows = 0  # most patch rows held at once by the last fit (pool plus the batch being merged)
        self.to(self.device).eval()

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P, C] patch features of [0, 1] images ``x``: stride-8 and stride-16 maps, 3x3 pooled."""
        h = self.net.normalize(x)
        maps = []
        for i, unit in enumerate(self.units[: self.taps[-1] + 1]):
            h = unit(h)
            if i in self.taps:
                maps.append(h)
        grid = maps[0].shape[-2:]
        f = torch.cat([maps[0]] + [F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in maps[1:]], 1)
        f = F.avg_pool2d(f.float(), 3, stride=1, padding=1, count_include_pad=False)
        return f.flatten(2).transpose(1, 2)

    def _fit_start(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed)
        self._pool = self._keys = None
        self.peak_rows = 0

    def _fit_add(self, patches: torch.Tensor) -> None:
        """Merge a batch's [B, P, C] patches into the uniform pool: the ``pool_cap`` patches with the smallest keys."""
        flat = patches.reshape(-1, patches.shape[-1]).to(self.device)
        keys = torch.rand(len(flat), generator=self._gen).to(self.device)
        if self._pool is not None:
            if len(self._pool) >= self.pool_cap:  # full: only patches whose key beats the largest kept can enter
                keep = keys < self._keys.max()
                flat, keys = flat[keep], keys[keep]
            flat, keys = torch.cat([self._pool, flat]), torch.cat([self._keys, keys])
        self.peak_rows = max(self.peak_rows, len(flat))
        if len(flat) > self.pool_cap:
            sel = torch.topk(keys, self.pool_cap, largest=False).indices
            flat, keys = flat[sel], keys[sel]
        self._pool, self._keys = flat, keys

    def _fit_end(self) -> "PatchMemory":
        pool, keys = self._pool, self._keys
        del self._pool, self._keys, self._gen
        if pool is None:
            raise ValueError("PatchMemory.fit got no majority images")
        pool = pool[torch.argsort(keys)]  # key order: the first ``memory`` rows are a uniform sample of all patches
        if self.subsample == "random":
            self.bank = pool[: self.memory_cap].contiguous()
        else:
            self.bank = pool[greedy_coreset(pool, self.memory_cap, self.seed)].contiguous()
        return self

    @torch.no_grad()
    def fit_patches(self, patches: torch.Tensor) -> "PatchMemory":
        """Build the memory from [N, P, C] majority patches (in memory already; ``fit`` streams them)."""
        self._fit_start()
        self._fit_add(patches)
        return self._fit_end()

    @torch.no_grad()
    def fit(self, majority_loader: DataLoader) -> "PatchMemory":
        self._fit_start()
        for batch in majority_loader:
            self._fit_add(self.patches(batch["image"].to(self.device)))
        return self._fit_end()

    def patch_distances(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, P] distance of each patch of [B, P, C] ``patches`` to its nearest memory patch."""
        b, p, c = patches.shape
        return nearest_distance(patches.reshape(-1, c), self.bank).view(b, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Minority score of [0, 1] images: the distance of their most distant patch to the memory."""
        return self.patch_distances(self.patches(x)).max(1).values

    @torch.no_grad()
    def score_patches(self, patches: torch.Tensor, chunk: int = 64) -> np.ndarray:
        """Max over each image's patches of the distance to the nearest memory patch."""
        if self.bank.numel() == 0:
            raise RuntimeError("PatchMemory.fit must run before score")
        return torch.cat([self.patch_distances(patches[i:i + chunk].to(self.device)).max(1).values
                          for i in range(0, len(patches), chunk)]).cpu().numpy()

    @torch.no_grad()
    def score(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Returns (y, minority score); larger = farther from every normal patch."""
        if self.bank.numel() == 0:
            raise RuntimeError("PatchMemory.fit must run before score")
        return score_batches(self, loader, self.device)
