"""Checkpoints: written atomically, read with ``weights_only=True``, damaged ones reported and skipped.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled objects), so
``torch.load(weights_only=True)`` can read it. The resolved config travels inside every one.
"""
from __future__ import annotations

import os
import pickle
import warnings
from typing import Any

import numpy as np
import torch

from egan_med.io import atomic_path, load_restricted


class CheckpointError(RuntimeError):
    """No usable checkpoint; the message says which files were tried and why they failed."""


def _plain(obj: Any) -> Any:
    """Make RNG states and numpy values loadable with weights_only=True."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(state: dict[str, Any], path: str, keep_previous: bool = True) -> None:
    """Write ``state`` to ``path`` via a temporary file and an atomic rename.

    Args:
        state: plain data (tensors, numbers, strings, containers).
        path: destination; the file it replaces is kept as ``path + '.prev'`` when ``keep_previous``.
        keep_previous: keep one older copy to fall back on if this one is ever damaged.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_path(path, fsync=True) as tmp:
        torch.save(_plain(state), tmp)
        if keep_previous and os.path.exists(path):
            os.replace(path, f"{path}.prev")


def _why_unusable(exc: Exception) -> str:
    """A short reason for a file torch.load(weights_only=True) could not read: torch's own text, not its preamble."""
    text = " ".join(str(exc).split())
    if isinstance(exc, pickle.UnpicklingError) and "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation")[0].strip()
        detail = detail.split(". ")[0][:80]
        if detail.startswith("Unsupported global"):  # a pickled object: never run it
            return f"refused by restricted loading (it holds a pickled object; {detail})"
        text = detail
    return f"damaged ({type(exc).__name__}: {text[:80]})"


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load ``path``; if it is damaged, warn and fall back to ``path + '.prev'``.

    Raises:
        CheckpointError: neither file is a readable checkpoint.
    """
    run_dir = os.path.dirname(os.path.dirname(path))  # RUN_DIR/checkpoints/NAME.pt
    if os.path.basename(os.path.dirname(path)) == "checkpoints" and os.path.isfile(run_dir):
        raise CheckpointError(f"{run_dir} is a file, not a run directory; give the folder egan_med.train wrote")
    errors = []
    for candidate in (path, f"{path}.prev"):
        if not os.path.exists(candidate):
            errors.append(f"{candidate}: missing")
            continue
        try:
            state = load_restricted(candidate)
            if not isinstance(state, dict) or "config" not in state:
                raise ValueError("not an egan_med checkpoint")
        except Exception as exc:  # truncated zip, bad pickle, wrong content: all mean "unusable"
            errors.append(f"{candidate}: {_why_unusable(exc)}")
            continue
        if candidate != path:
            warnings.warn(f"checkpoint {path} is unusable ({errors[-1]}); using the previous one, {candidate}")
        return state
    raise CheckpointError("no usable checkpoint: " + "; ".join(errors))


def trainable_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The entries of ``net``'s state dict that training can change: trainable parameters and the buffers of
    modules that hold one (BatchNorm statistics of a trainable block). The frozen rest is the same every epoch."""
    keep = set()
    for mname, module in net.named_modules():
        own = list(module.named_parameters(recurse=False))
        if any(p.requires_grad for _, p in own):
            prefix = f"{mname}." if mname else ""
            keep.update(prefix + n for n, _ in own)
            keep.update(prefix + n for n, _ in module.named_buffers(recurse=False))
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items() if k in keep}


def epoch_weights_path(run_dir: str, epoch: int) -> str:
    """Where training keeps the scoring network's changeable weights of one epoch (any protocol may deploy it)."""
    return os.path.join(run_dir, "checkpoints", "epochs", f"epoch_{epoch:03d}.pt")
