"""torchxrayvision's radiograph-pretrained weight sets: names, the datasets each saw, and the leakage check
(a CheXpert or NIH cohort scored with weights trained on it).

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


# cohort.json "source" -> the public datasets its images belong to (RSNA's and Google's images are NIH's).
SOURCE_DATASETS: dict[str, frozenset[str]] = {
    "chexpert": frozenset({"CheXpert"}),
    "nih": frozenset({"NIH ChestX-ray14", "RSNA Pneumonia", "Google (NIH subset)"}),
}


def pretraining_leak(source: str | None, weights: list[str]) -> str:
    """A one-line warning when a cohort's dataset is one the pretrained weights were trained on, else "".

    Args:
        source: the cohort's ``source`` (cohort.json), e.g. ``chexpert`` or ``nih``.
        weights: the weight values of the run's networks (names, paths or ``imagenet``/``none``).

    Returns:
        The warning text, or "" when there is no overlap.
    """
    seen = SOURCE_DATASETS.get((source or "").lower())
    if not seen:
        return ""
    leaky = sorted({w for w in weights if seen & set(XRV_WEIGHTS.get(w, ()))})
    if not leaky:
        return ""
    clean = [w for w, sets in XRV_WEIGHTS.items() if not seen & set(sets)]
    overlap = sorted(seen & {d for w in leaky for d in XRV_WEIGHTS[w]})
    return (f"leakage: the cohort comes from {source} and the weights {', '.join(leaky)} were trained on "
            f"{', '.join(overlap)}; their features have seen these images, so the metrics are optimistic. "
            f"Weights that did not see them: {', '.join(clean)}")


def run_weights(model_cfg) -> list[str]:
    """The starting-weight values of the networks a run trains or scores with (D, and E for eGAN)."""
    return [model_cfg.weights_for(role) for role in model_cfg.roles()]


def unknown_weights_warning(weights: list[str]) -> str:
    """A one-line warning for starting weights given as a state-dict file: what they saw cannot be told from here."""
    files = sorted({w for w in weights if w not in ("imagenet", "none", "") and w not in XRV_WEIGHTS})
    if not files:
        return ""
    return (f"unknown pretraining: the weights {', '.join(files)} are a state-dict file whose training data egan_med "
            "cannot tell; if they were trained on images of this cohort's dataset, the metrics are optimistic "
            "(name their training data in your report)")


def run_leak_warning(cfg, meta: dict | None) -> str:
    """The leakage warnings of a run's config and its cohort.json contents ("" when there is nothing to say).

    Every run kind, one-class runs included: their frozen backbone's pretraining can have seen the cohort too.
    """
    weights = run_weights(cfg.model)
    return "; ".join(w for w in (pretraining_leak((meta or {}).get("source"), weights),
                                 unknown_weights_warning(weights)) if w)
