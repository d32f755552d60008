"""Nearest-neighbour distances written with plain matrix products, so they trace to TorchScript and ONNX."""
from __future__ import annotations

import torch

# Memory rows compared per matrix product: a query block of Q rows holds at most [Q, BANK_CHUNK] distances,
# whatever the memory's size (the chunks are a Python loop over a fixed-size buffer, so a trace unrolls it).
BANK_CHUNK = 4096


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, M] squared Euclidean distances between the rows of ``a`` [N, C] and ``b`` [M, C] (clamped at 0).

    ``torch.cdist`` has no ONNX export; ``|a|^2 + |b|^2 - 2ab`` is what it computes for large inputs anyway.
    """
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None] - 2.0 * a @ b.t()).clamp_min(0.0)


def nearest_squared(a: torch.Tensor, b: torch.Tensor, k: int, chunk: int = BANK_CHUNK) -> torch.Tensor:
    """[N, min(k, M)] the smallest squared distances from each row of ``a`` [N, C] to the rows of ``b`` [M, C].

    ``b`` is read ``chunk`` rows at a time with a running top-k merge, so the largest intermediate is
    [N, chunk + k] instead of [N, M]; the values are those of a top-k over the full matrix.
    """
    k = min(k, b.shape[0])
    best = None
    for i in range(0, b.shape[0], chunk):
        d2 = squared_distances(a, b[i:i + chunk])
        if k == 1:
            d2 = d2.amin(1, keepdim=True)
            best = d2 if best is None else torch.minimum(best, d2)
            continue
        if best is not None:
            d2 = torch.cat([best, d2], 1)
        best = torch.topk(d2, min(k, d2.shape[1]), dim=1, largest=False).values
    assert best is not None, "empty memory"
    return best


def nearest_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = BANK_CHUNK) -> torch.Tensor:
    """[N] Euclidean distance from each row of ``a`` [N, C] to its nearest row of ``b`` [M, C], computed exactly.

    The nearest row is found with the matrix-product distances (chunked, as ``nearest_squared``); the distance to it
    is then recomputed from the difference itself. ``|a|^2 + |b|^2 - 2ab`` loses digits to cancellation on large
    features (about 5e-5 at distances near 50 in float32), and how many depends on how the matrix product is
    blocked, i.e. on the batch size: the direct difference makes a score the same whatever batch it is scored in.
    """
    best_d2, best_i = None, None
    for i in range(0, b.shape[0], chunk):
        d2, idx = squared_distances(a, b[i:i + chunk]).min(1)
        idx = idx + i
        if best_d2 is None:
            best_d2, best_i = d2, idx
        else:
            closer = d2 < best_d2
            best_d2, best_i = torch.where(closer, d2, best_d2), torch.where(closer, idx, best_i)
    assert best_i is not None, "empty memory"
    return (a - b[best_i]).pow(2).sum(1).sqrt()
