"""Datasets over cohort manifests: cached uint8 pixels underneath, per-item-seeded MONAI augmentation on top."""
from __future__ import annotations

import math
import os
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from monai.data import Dataset
from torch.utils.data import DataLoader, Sampler
from torchvision.utils import make_grid, save_image

from egan_med.config import DataConfig
from egan_med.data.cache import ImageStore, build_store
from egan_med.data.transforms import augment_item, build_augment, expand_channels, item_seed
from egan_med.io import atomic_path


def resolve_path(root: str, path: str) -> str:
    """Manifest path -> absolute path; npz addresses keep their ``#split/index`` suffix."""
    file, sep, entry = str(path).partition("#") if ".npz#" in str(path) else (str(path), "", "")
    return os.path.normpath(os.path.join(root, file)) + sep + entry


class CohortDataset(Dataset):
    """A MONAI Dataset of manifest rows that decoded; items are {"image", "minority", "index"}.

    The augmentation of row r in epoch e is seeded by (seed, e, r), so it is the same whatever the worker count,
    visiting order or restart point. The epoch lives in shared memory so persistent workers see set_epoch().
    """

    def __init__(self, store: ImageStore, rows: list[int], minority: list[int], cfg: DataConfig, train: bool,
                 seed: int) -> None:
        super().__init__(data=[{"row": r, "minority": m} for r, m in zip(rows, minority)], transform=None)
        self._images: np.ndarray | None = store.images
        self._store_path = store.path
        self.channels = cfg.channels
        self.seed = seed
        self.augment = build_augment(cfg, train)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw (and, through make_loader, the shuffle order) of ``epoch``."""
        self._epoch[0] = epoch

    @property
    def rows(self) -> list[int]:
        """Manifest row positions of the items, in item order."""
        return [d["row"] for d in self.data]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._store_path:  # pickling a memmap copies all of it; reopen in the worker instead
            state["_images"] = None
        return state

    def _transform(self, index: int) -> dict:
        if self._images is None:
            self._images = np.load(self._store_path, mmap_mode="r")
        rec = self.data[index]
        row = rec["row"]
        img = torch.from_numpy(np.array(self._images[row], dtype=np.float32)).div_(255.0)
        img = augment_item(self.augment, img, item_seed(self.seed, self.epoch, row))
        return {"image": expand_channels(img, self.channels).contiguous(), "minority": rec["minority"], "index": row}


def make_dataset(df: pd.DataFrame, root: str, cfg: DataConfig, train: bool, seed: int = 0,
                 skipped: list | None = None) -> CohortDataset:
    """Build the dataset of a cohort manifest; every image is decoded here, so bad files surface now.

    Args:
        df: manifest with at least ``path`` (relative to root, or an npz address) and ``minority``.
        root: absolute folder the paths are relative to.
        cfg: image size, channels, kind, augmentation, cache_dir, num_workers, on_bad_image.
        train: random augmentation (when cfg.augment) instead of the deterministic eval chain.
        seed: base of the per-item augmentation seeds.
        skipped: with on_bad_image == "skip", receives (path, reason) of each dropped image.

    Returns:
        The CohortDataset; item "index" is the row position in ``df``.

    Raises:
        BadImageError: on_bad_image == "fail" and an image is missing or undecodable.
    """
    paths = [resolve_path(root, p) for p in df["path"]]
    store = build_store(paths, cfg)
    bad = {row for row, _, _ in store.failures}
    if skipped is not None:
        skipped.extend((path, reason) for _, path, reason in store.failures)
    rows = [r for r in range(len(paths)) if r not in bad]
    minority = df["minority"].astype(int).to_numpy()
    return CohortDataset(store, rows, [int(minority[r]) for r in rows], cfg, train, seed)


_SHUFFLE_STREAM = 0xFFFFFFFF  # item_seed's index slot for the shuffle, far from any row number


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, dataset.epoch): epoch k's order is the same after a restart."""

    def __init__(self, dataset: CohortDataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(item_seed(self.seed, self.dataset.epoch, _SHUFFLE_STREAM))
        return iter(torch.randperm(len(self.dataset), generator=g).tolist())


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int,
                drop_last: bool = False, sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader whose order and augmentation depend only on the seed and the dataset's epoch.

    Args:
        dataset: usually a CohortDataset (then shuffling follows its set_epoch()).
        batch_size: items per batch.
        shuffle: random order; ignored when ``sampler`` is given.
        num_workers: loader processes; persistent when > 0.
        seed: seeds the shuffle and the loader's generator.
        drop_last: drop the last incomplete batch.
        sampler: custom sampler, e.g. a class-balanced one.

    Returns:
        The DataLoader.
    """
    generator = torch.Generator().manual_seed(seed)
    if sampler is None and shuffle and hasattr(dataset, "epoch"):
        sampler = EpochShuffleSampler(dataset, seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, generator=generator, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


def save_augmentation_grid(dataset: torch.utils.data.Dataset, path_png: str, n: int = 16) -> np.ndarray:
    """Write a PNG grid of ``n`` items spread over the dataset, as the training chain shows them.

    Args:
        dataset: items with an "image" (C, S, S) tensor in [0, 1].
        path_png: output file; its folder is created.
        n: number of tiles.

    Returns:
        The grid as float32 (3, H, W) in [0, 1] (for TensorBoard's add_image).
    """
    count = min(n, len(dataset))
    if count == 0:
        raise ValueError("cannot draw an augmentation grid of an empty dataset")
    picks = np.linspace(0, len(dataset) - 1, count).round().astype(int)
    tiles = torch.stack([dataset[int(i)]["image"].float()[:3].expand(3, -1, -1) for i in picks])
    grid = make_grid(tiles, nrow=math.ceil(math.sqrt(count)), padding=2, pad_value=1.0).clamp(0.0, 1.0)
    zoom = max(1, 128 // max(tiles.shape[2:]))  # 32 px tiles are unreadable at 1:1 in a PNG viewer
    os.makedirs(os.path.dirname(os.path.abspath(path_png)), exist_ok=True)
    with atomic_path(path_png) as tmp:
        save_image(grid.repeat_interleave(zoom, 1).repeat_interleave(zoom, 2), tmp, format="png")
    return grid.numpy()
