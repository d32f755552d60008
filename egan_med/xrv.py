"""torchxrayvision's radiograph-pretrained weight sets: names, the datasets each saw, and the CheXpert leakage check.

Kept free of torch imports so that config validation can use it. The datasets come from torchxrayvision's
``models.model_urls`` descriptions and file names (its paper: Cohen et al., arXiv:2002.02497).
"""
from __future__ import annotations

import importlib.util

XRV_BACKBONE = "xrv_densenet121"
# weight-set name -> public datasets it was trained on. "all" is nih-pc-chex-mimic_ch-google-openi-kaggle(RSNA).
XRV_WEIGHTS: dict[str, tuple[str, ...]] = {
    "densenet121-res224-all": ("NIH ChestX-ray14", "PadChest", "CheXpert", "MIMIC-CXR", "Google (NIH subset)",
                               "OpenI", "RSNA Pneumonia"),
    "densenet121-res224-nih": ("NIH ChestX-ray14",),
    "densenet121-res224-pc": ("PadChest",),
    "densenet121-res224-chex": ("CheXpert",),
    "densenet121-res224-rsna": ("RSNA Pneumonia",),
    "densenet121-res224-mimic_nb": ("MIMIC-CXR",),
    "densenet121-res224-mimic_ch": ("MIMIC-CXR",),
}


def installed() -> bool:
    """Whether torchxrayvision can be imported (without importing it: that pulls in scikit-image)."""
    return importlib.util.find_spec("torchxrayvision") is not None


def chexpert_leak(source: str | None, weights: list[str]) -> str:
    """A one-line warning when a CheXpert cohort meets weights trained on CheXpert, else "".

    Args:
        source: the cohort's ``source`` (cohort.json), e.g. ``chexpert``.
        weights: the weight values of the run's networks (names, paths or ``imagenet``/``none``).

    Returns:
        The warning text, or "" when there is no overlap.
    """
    if not source or "chexpert" not in source.lower():
        return ""
    leaky = sorted({w for w in weights if "CheXpert" in XRV_WEIGHTS.get(w, ())})
    if not leaky:
        return ""
    return (f"leakage: the cohort comes from CheXpert and the weights {', '.join(leaky)} were trained on CheXpert; "
            "their features have seen these patients, so test metrics are optimistic. Use densenet121-res224-nih, "
            "-pc, -rsna or -mimic_* for a CheXpert cohort")


def run_weights(model_cfg) -> list[str]:
    """The starting-weight values of the networks a run trains or scores with (D, and E for eGAN)."""
    out = [model_cfg.discriminator_weights or model_cfg.weights]
    if model_cfg.kind == "egan":
        out.append(model_cfg.encoder_weights or model_cfg.weights)
    return out


def run_leak_warning(cfg, meta: dict | None) -> str:
    """``chexpert_leak`` for a run's config and its cohort.json contents (None: provenance unknown, no warning)."""
    return chexpert_leak((meta or {}).get("source"), run_weights(cfg.model))
