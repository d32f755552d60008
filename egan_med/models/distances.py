"""Nearest-neighbour distances written with plain matrix products, so they trace to TorchScript and ONNX."""
from __future__ import annotations

import torch


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, M] squared Euclidean distances between the rows of ``a`` [N, C] and ``b`` [M, C] (clamped at 0).

    ``torch.cdist`` has no ONNX export; ``|a|^2 + |b|^2 - 2ab`` is what it computes for large inputs anyway.
    """
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None] - 2.0 * a @ b.t()).clamp_min(0.0)
