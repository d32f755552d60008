"""Frozen-trunk feature cache: trunk activations of real images, computed once per run."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from egan_med.models.backbones import Backbone


class TrunkCache:
    """Trunk outputs (a tensor, or a tuple for DenseNet/ResNet splits) addressed by manifest row index."""

    def __init__(self, features: tuple[torch.Tensor, ...], slot_of: torch.Tensor):
        self.features, self.slot_of = features, slot_of

    def take(self, index: torch.Tensor):
        slots = self.slot_of[torch.as_tensor(index, device=self.slot_of.device)]
        parts = tuple(f[slots] for f in self.features)
        return parts[0] if len(parts) == 1 else parts


@torch.no_grad()
def trunk_cache(backbone: Backbone, dataset: Dataset, device: torch.device, batch_size: int = 256) -> TrunkCache:
    """Run the frozen trunk once over ``dataset`` (deterministic items: augmentation must be off).

    Args:
        backbone: the network whose trunk output is cached.
        dataset: yields dicts with ``image`` and ``index``.
        device: where the cache lives (GPU memory on a GPU: it is read every step).
        batch_size: images per trunk forward.

    Returns:
        A ``TrunkCache``.
    """
    parts: list[list[torch.Tensor]] = []
    indices = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = backbone.features_trunk(batch["image"].to(device))
        out = out if isinstance(out, tuple) else (out,)
        if not parts:
            parts = [[] for _ in out]
        for store, o in zip(parts, out):
            store.append(o)
        indices.append(torch.as_tensor(batch["index"]))
    index = torch.cat(indices)
    slot_of = torch.full((int(index.max()) + 1,), -1, dtype=torch.long)
    slot_of[index] = torch.arange(len(index))
    return TrunkCache(tuple(torch.cat(p) for p in parts), slot_of.to(device))
