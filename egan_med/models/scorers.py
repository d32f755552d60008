"""The scorer contract: a ``torch.nn.Module`` mapping float32 images (N, C, S, S) in [0, 1] to a minority score
(N,), higher = more minority-like. Every detector a run can deploy is one (eGAN's D, the supervised baseline,
the kNN, the patch memory, the fusion), saved as one file that loads back with no training data and no weight
download: its build spec (plain data) and its state dict (every weight, every memory bank, every reference).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from egan_med.config import config_from_dict
from egan_med.io import atomic_path, first_line

SCORER_FORMAT = "egan_med.scorer/1"


@torch.no_grad()
def score_batches(scorer: nn.Module, loader, device: torch.device | str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, float32 minority scores) of every item of ``loader`` through a scorer, in eval mode and float32.

    The one scoring loop of every scorer: the report's one-class scores, the deployed scorer's scores a threshold
    is set on, and (batch by batch, the same computation) ``predict``. No autocast, so all have one precision.
    """
    scorer = scorer.to(device).eval()
    ys, ss = [], []
    for batch in loader:
        ss.append(scorer(batch["image"].to(device)).float().cpu())
        ys.append(torch.as_tensor(batch["minority"]))
    if not ss:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return torch.cat(ys).numpy().astype(np.int64), torch.cat(ss).numpy()


class ScorerError(RuntimeError):
    """A saved scorer is missing, damaged or not one of egan_med's; one-line message."""


class NetScorer(nn.Module):
    """eGAN's D or the supervised classifier as a scorer: minority score = -logit (the logit is positive for majority)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.net(x)


class FusionScorer(nn.Module):
    """Weighted mean of the components' scores, each rank-normalised against its validation reference scores.

    A component's rank of score s is ``(#ref < s + #ref <= s) / (2 len(ref))``: the mid-rank empirical CDF of
    ``budget.rank_normalise``, written with comparisons so that it traces to TorchScript and ONNX.

    Args:
        components: the component scorers, in order.
        references: each component's scores on the validation images its protocol kept.
        weights: one non-negative weight per component (not all zero).
    """

    def __init__(self, components: Sequence[nn.Module], references: Sequence[torch.Tensor], weights: Sequence[float]):
        super().__init__()
        if not (len(components) == len(references) == len(weights)) or not components:
            raise ValueError("fusion needs one reference and one weight per component, and at least one component")
        self.components = nn.ModuleList(components)
        for i, ref in enumerate(references):
            self.register_buffer(f"reference_{i}", torch.sort(torch.as_tensor(ref, dtype=torch.float32).ravel()).values)
        w = torch.as_tensor([float(v) for v in weights], dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())

    def references(self) -> list[torch.Tensor]:
        return [getattr(self, f"reference_{i}") for i in range(len(self.components))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        for i, (comp, ref) in enumerate(zip(self.components, self.references())):
            s = comp(x).float()[:, None]
            rank = ((ref[None] < s).sum(1) + (ref[None] <= s).sum(1)).float() / (2.0 * ref.shape[0])
            fused = fused + self.weights[i] * rank
        return fused


def build_scorer(spec: dict[str, Any]) -> nn.Module:
    """An untrained scorer of the layout ``spec`` describes (its state dict then fills every weight).

    Spec kinds: ``net`` (model: the run's model config section; kind egan | supervised), ``knn`` (backbone, k),
    ``patchcore`` (backbone, memory), ``fusion`` (components: specs, reference_sizes, weights).
    """
    kind = spec.get("kind")
    if kind == "net":
        from egan_med.models import Classifier, Discriminator

        mcfg = config_from_dict({"model": spec["model"]}).model
        cls = Discriminator if mcfg.kind == "egan" else Classifier
        return NetScorer(cls(mcfg, load_weights=False))
    if kind == "knn":
        from egan_med.models.knn import KNNOneClass

        m = KNNOneClass(spec["backbone"], "none", int(spec["k"]), load=False)
        m.bank = torch.zeros(int(spec["bank_size"]), m.net.out_channels)
        return m
    if kind == "patchcore":
        from egan_med.models.patchcore import PatchMemory

        m = PatchMemory(spec["backbone"], "none", int(spec["memory"]), load=False)
        m.bank = torch.zeros(*[int(v) for v in spec["bank_shape"]])
        return m
    if kind == "fusion":
        comps = [build_scorer(c) for c in spec["components"]]
        refs = [torch.zeros(int(n)) for n in spec["reference_sizes"]]
        return FusionScorer(comps, refs, [float(w) for w in spec["weights"]])
    raise ScorerError(f"unknown scorer kind {kind!r}")


def spec_of(scorer: nn.Module, model_config: dict | None = None) -> dict[str, Any]:
    """The build spec of a scorer (``model_config``: the run's model section, for a NetScorer)."""
    from egan_med.models.knn import KNNOneClass
    from egan_med.models.patchcore import PatchMemory

    if isinstance(scorer, NetScorer):
        if model_config is None:
            raise ValueError("a NetScorer's spec needs the run's model config")
        return {"kind": "net", "model": dict(model_config)}
    if isinstance(scorer, KNNOneClass):
        return {"kind": "knn", "backbone": scorer.net.name, "k": int(scorer.k), "bank_size": int(scorer.bank.shape[0])}
    if isinstance(scorer, PatchMemory):
        return {"kind": "patchcore", "backbone": scorer.net.name, "memory": int(scorer.memory_cap),
                "bank_shape": [int(v) for v in scorer.bank.shape]}
    raise ValueError(f"not a scorer egan_med can save: {type(scorer).__name__}")


def save_scorer(path: str, scorer: nn.Module, spec: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a scorer (spec + state dict + ``meta``: detector name, config, operating point ...) atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    state = {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
             for k, v in scorer.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": SCORER_FORMAT, "spec": spec, "state_dict": state, "meta": meta}, tmp)


def load_scorer(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """A saved scorer in eval mode on the CPU, and its meta.

    Raises:
        ScorerError: missing, unreadable, not a scorer, or weights that do not fit their spec.
    """
    if not os.path.isfile(path):
        raise ScorerError(f"no saved scorer at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ScorerError(f"{path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})") from None
    if not isinstance(blob, dict) or blob.get("format") != SCORER_FORMAT:
        raise ScorerError(f"{path}: not an egan_med scorer (format {SCORER_FORMAT})")
    try:
        scorer = build_scorer(blob["spec"])
        scorer.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = first_line(exc)
        raise ScorerError(f"{path}: its weights do not fit its spec ({first})") from None
    return scorer.eval(), dict(blob.get("meta", {}))
