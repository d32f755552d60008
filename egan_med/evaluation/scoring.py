"""Scoring: push a split through a scoring network and collect logits (positive = majority)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from egan_med.engine.runtime import autocast, cpu_speedups


@torch.no_grad()
def score_loader(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False,
                 progress: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score every item of a loader.

    Args:
        model: maps [0, 1] images to logits (positive = majority).
        loader: yields dicts with ``image``, ``minority`` and ``index``.
        device: where the model lives.
        amp: bf16 autocast on CUDA. Off by default and everywhere egan_med scores: every score a threshold is
            set on, reported or deployed is float32, the precision ``predict``, the export and the bundle run.
        progress: a tqdm description, or None for no bar.

    Returns:
        (y, logits, index): minority labels, float32 logits and dataset row positions.
    """
    cpu_speedups()
    was_training = model.training
    model.eval()
    ys, logits, idx = [], [], []
    for batch in tqdm(loader, desc=progress, leave=False, disable=progress is None):
        x = batch["image"].to(device, non_blocking=True)
        with autocast(device, amp):
            out = model(x)
        logits.append(out.float())  # stays on device: one transfer at the end, not one per batch
        ys.append(torch.as_tensor(batch["minority"]))
        idx.append(torch.as_tensor(batch["index"]))
    model.train(was_training)
    if not logits:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return (torch.cat(ys).numpy().astype(np.int64), torch.cat(logits).cpu().numpy(),
            torch.cat(idx).numpy().astype(np.int64))
