"""Preprocessing (deterministic, cacheable) and augmentation chains (MONAI array transforms), chosen by DataConfig.

Everything takes and returns (C, H, W) values in [0, 1]. The deterministic part ends in uint8 at image_size so
that it can be cached; the random part runs on top, re-seeded per item by the dataset.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandFlip,
    RandGaussianNoise,
    RandScaleIntensityFixedMean,
    RandSpatialCrop,
    Randomizable,
    Resize,
    ResizeWithPadOrCrop,
    SpatialPad,
    Transform,
)

from egan_med.config import DataConfig
from egan_med.data.readers import load_image, to_channels

# Bump when preprocess() changes, so persistent caches are rebuilt. 2: >8-bit and float images scaled by real depth.
PREPROCESS_VERSION = 2


def stored_channels(cfg: DataConfig) -> int:
    """Channels kept in the cache: radiographs are gray, so 3 identical channels would triple size and work."""
    return 1 if cfg.kind == "radiograph" or cfg.channels == 1 else 3


def preprocess_key(cfg: DataConfig) -> dict:
    """Every setting that changes preprocess()'s output (the persistent cache's key)."""
    return {"version": PREPROCESS_VERSION, "image_size": cfg.image_size, "stored_channels": stored_channels(cfg),
            "fit": "longest-side+pad"}


def fit_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the longer side is ``size``, then centre-pad (or crop) to a square.

    Padding keeps the whole field of view; a short-side resize + crop would cut costophrenic angles or apices.

    Args:
        img: (C, H, W) float in [0, 1].
        size: output side.

    Returns:
        (C, size, size) float32.
    """
    if img.shape[1:] != (size, size):
        # area averaging anti-aliases downscaling; bilinear is smoother for upscaling (28 px MedMNIST -> 64)
        mode = "area" if max(img.shape[1:]) > size else "bilinear"
        img = Resize(spatial_size=size, size_mode="longest", mode=mode)(img)
        img = ResizeWithPadOrCrop(spatial_size=(size, size), mode="constant")(img)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8, rounded."""
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def preprocess(path: str, cfg: DataConfig) -> np.ndarray:
    """Decode and fit one image: the deterministic, cached part of every chain.

    Args:
        path: anything load_image reads.
        cfg: uses image_size, channels, kind.

    Returns:
        uint8 (stored_channels(cfg), image_size, image_size).

    Raises:
        BadImageError: unreadable file.
    """
    img = load_image(path, channels=stored_channels(cfg))
    return to_uint8(fit_square(img, cfg.image_size))


class ClipUnit(Transform):
    """Clamp to [0, 1] and drop MONAI's metadata (plain tensors collate faster)."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        return img.clamp(0.0, 1.0)


def radiograph_augment(cfg: DataConfig) -> list[Transform]:
    """Small affine jitter, contrast, gamma and noise; horizontal flip only when cfg.hflip (heart is on the left)."""
    size, out = cfg.image_size, []
    if cfg.rotate_deg or cfg.scale or cfg.translate:
        out.append(RandAffine(prob=1.0, rotate_range=(math.radians(cfg.rotate_deg),),
                              scale_range=(cfg.scale, cfg.scale), translate_range=(cfg.translate * size,) * 2,
                              spatial_size=(size, size), cache_grid=True, padding_mode="zeros", mode="bilinear"))
    if cfg.hflip:
        out.append(RandFlip(prob=0.5, spatial_axis=1))
    if cfg.contrast:
        out.append(RandScaleIntensityFixedMean(prob=0.5, factors=cfg.contrast))
    if cfg.gamma:
        out.append(RandAdjustContrast(prob=0.5, gamma=(1.0 - cfg.gamma, 1.0 + cfg.gamma)))
    if cfg.noise_std:
        # sample_std=False: the std is noise_std itself (MONAI otherwise draws it from U(0, noise_std)).
        out.append(RandGaussianNoise(prob=0.5, std=cfg.noise_std, sample_std=False))
    return out


def natural_augment(cfg: DataConfig) -> list[Transform]:
    """CIFAR-style: zero-pad by 1/8 of the side, random crop back, horizontal flip (natural images may mirror)."""
    size = cfg.image_size
    pad = max(1, size // 8)
    return [SpatialPad(spatial_size=(size + 2 * pad,) * 2, mode="constant"),
            RandSpatialCrop(roi_size=(size, size), random_size=False),
            RandFlip(prob=0.5, spatial_axis=1)]


class Augmenter:
    """A MONAI Compose re-seeded per item, so an item's draw depends only on its seed.

    Compose.set_random_state() builds a new RandomState per transform (~0.2 ms each); re-seeding the existing
    ones in place gives the same streams for ~2 us. (MONAI's public set_random_state per item would also hand
    RandAffine and its grid one shared stream, changing every augmentation draw, so the in-place reseed stays.) MONAI's metadata tracking is switched off while the chain
    runs (it doubles the cost on small images); the flag is process-global, hence one Augmenter call at a time.
    """

    def __init__(self, chain: Compose) -> None:
        self.chain = chain
        chain.set_random_state(seed=0)
        self._states = _random_states(chain, set())

    def __call__(self, img: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment a (C, S, S) float tensor in [0, 1] with the draw fixed by ``seed`` (from item_seed)."""
        for state, sub in zip(self._states, np.random.SeedSequence(seed).generate_state(len(self._states))):
            state.seed(int(sub))
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            return self.chain(img)
        finally:
            set_track_meta(tracking)


def _random_states(obj: object, seen: set[int]) -> list[np.random.RandomState]:
    """Every RandomState a transform draws from, nested ones included (RandAffine -> RandAffineGrid)."""
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    found: list[np.random.RandomState] = []
    if isinstance(obj, Randomizable):
        if "R" not in vars(obj):  # still the class-level RandomState shared by all instances
            obj.set_random_state(seed=0)
        found.append(obj.R)
    children = obj.transforms if isinstance(obj, Compose) else list(vars(obj).values())
    for child in children:
        if isinstance(child, (Randomizable, Compose)):
            found += _random_states(child, seen)
    return found


def build_augment(cfg: DataConfig, train: bool) -> Augmenter | None:
    """The random chain applied on top of the cached image, or None when there is nothing random.

    Args:
        cfg: kind, augment and the augmentation magnitudes.
        train: False gives the deterministic eval chain (None: cached pixels as they are).

    Returns:
        An Augmenter over a MONAI Compose taking and returning (C, S, S) float tensors in [0, 1], or None.
    """
    if not (train and cfg.augment):
        return None
    steps = radiograph_augment(cfg) if cfg.kind == "radiograph" else natural_augment(cfg)
    return Augmenter(Compose([*steps, ClipUnit()])) if steps else None


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one item's augmentation, independent of worker count and visiting order."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


def augment_item(augmenter: Augmenter | None, img: torch.Tensor, seed: int) -> torch.Tensor:
    """``augmenter(img, seed)``, or ``img`` unchanged when there is no augmentation."""
    return img if augmenter is None else augmenter(img, seed)


def expand_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat a stored gray channel to what the backbone wants (or reduce RGB to luminance)."""
    if img.shape[0] == channels:
        return img
    if img.shape[0] == 1:
        return img.repeat(channels, 1, 1)
    return torch.from_numpy(to_channels(img.numpy(), channels))
