"""Sharding for DDP that keeps results independent of the number of processes."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from egan_med.data.datasets import _SHUFFLE_STREAM, CohortDataset
from egan_med.data.transforms import item_seed


class BatchShardSampler(Sampler[int]):
    """Rank ``r`` of ``W`` gets the r-th slice of every global batch of the single-process order.

    ``torch.utils.data.DistributedSampler`` deals items round-robin from its own permutation, so
    a 2-GPU run sees different batches than a 1-GPU run. Here the global batches are exactly the
    single-process ones (same seeded order, same ``train.batch_size``), and DDP's gradient
    average over equal slices equals the single-process batch mean.

    The remainder is dropped, never padded: a short last batch of ``L`` images is cut to
    ``(L // world_size) * world_size`` so every rank gets an equal slice of it (or, when
    ``L < world_size``, it is dropped whole). So every rank takes the same number of steps
    with equal-size slices, for any dataset size (DDP hangs when one rank takes a step fewer),
    and no image is repeated within an epoch. At most ``world_size - 1`` images are left out
    per epoch, a different few each epoch since the order is reshuffled.

    Args:
        dataset: a CohortDataset (its ``epoch`` picks the order).
        seed: the run's seed.
        batch_size: the GLOBAL batch size; must divide by ``world_size``.
        rank: this process.
        world_size: number of processes.
    """

    def __init__(self, dataset: CohortDataset, seed: int, batch_size: int, rank: int, world_size: int) -> None:
        if batch_size % world_size:
            raise ValueError(f"train.batch_size={batch_size} must be a multiple of the {world_size} processes")
        self.dataset, self.seed, self.batch, self.rank, self.world = dataset, seed, batch_size, rank, world_size

    def _slices(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(item_seed(self.seed, self.dataset.epoch, _SHUFFLE_STREAM))
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        out = []
        for start in range(0, len(order), self.batch):
            batch = order[start:start + self.batch]
            # Floor share: equal slices on every rank (a ceil share left some ranks a step short:
            # 5 images over 4 ranks gave 2, 2, 1, 0, and the rank with 0 hung DDP).
            per = len(batch) // self.world
            if per == 0:
                break
            out.append(batch[self.rank * per:(self.rank + 1) * per])
        return out

    def __iter__(self) -> Iterator[int]:
        return iter([i for part in self._slices() for i in part])

    def __len__(self) -> int:
        return sum(len(p) for p in self._slices())


_MINORITY_CAP_STREAM = 0xFFFFFFFE  # item_seed's index slot for train.minority_cap's draw


def minority_subset(n: int, cap: int, seed: int) -> list[int]:
    """The minority images a run feeds through E and G: all of them, or a seeded random ``cap`` of them.

    Manifest order is not random (build_cohort writes sources and folds in order), so the first rows
    would be a biased subset. The draw depends only on the seed: the same every epoch and on resume.

    Args:
        n: minority training images.
        cap: train.minority_cap.
        seed: the run's seed.

    Returns:
        Sorted dataset positions, ``min(n, cap)`` of them.
    """
    if n <= cap:
        return list(range(n))
    g = torch.Generator().manual_seed(item_seed(seed, 0, _MINORITY_CAP_STREAM))
    return sorted(torch.randperm(n, generator=g)[:cap].tolist())
