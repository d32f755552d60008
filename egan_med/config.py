"""Typed run configuration: YAML files (with an optional ``base:``) plus ``key.sub=value`` overrides.

Every value is range-checked here, so that the rest of the package can trust it. Errors are
``ConfigError`` with a one-line message naming the key; CLIs turn that into exit status 2.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import reprlib
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from egan_med.io import write_text


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


MAX_SHOWN = 120  # characters of a value an error message may print


def _shown(value: Any) -> str:
    """A bounded repr: reprlib never builds the full text, so a huge nested value cannot flood a message."""
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlist, r.maxdict = 3, MAX_SHOWN, MAX_SHOWN, 6, 6
    text = r.repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases and with duplicate keys as errors.

    Aliases let a few hundred bytes expand into gigabytes (a "billion laughs" bomb); a repeated key would
    otherwise silently drop the first section. Neither has a use in a run config.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                              "allowed in configs; write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in first:
                raise ConfigError(f"line {line}: duplicate key '{_shown(key)[1:-1]}' (first at line {first[key]}); "
                                  "merge the two into one")
            first.setdefault(key, line)
        return super().construct_mapping(node, deep)


def read_yaml(path: str) -> Any:
    """Parse one YAML file strictly (no aliases, no duplicate keys, UTF-8 only).

    Args:
        path: the file.

    Returns:
        The parsed document (None for an empty file).

    Raises:
        ConfigError: unreadable, not UTF-8, not valid YAML, or using aliases or duplicate keys.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None


@dataclass
class DataConfig:
    """Which cohort to read and how its images become tensors."""

    cohort: str = "cohorts/pneumoniamnist_1to36/cohort.csv"  # manifest written by scripts/build_cohort.py
    root: str = ""  # folder the manifest's paths are relative to; "" = the root stored in cohort.json
    fold: int = -1  # use only minority train images of this fold (-1 = all; a cohort built with --folds needs one)
    image_size: int = 32  # pixels per side fed to the networks (multiple of 4)
    channels: int = 3  # what the backbone wants; grayscale is repeated
    kind: str = "radiograph"  # radiograph | natural: picks the augmentation chain
    augment: bool = True  # random augmentation of training images
    hflip: bool = False  # radiographs: off, the heart is on the left
    rotate_deg: float = 5.0  # radiograph chain: max rotation in degrees
    scale: float = 0.05  # radiograph chain: max relative zoom
    translate: float = 0.05  # radiograph chain: max shift, fraction of the side
    contrast: float = 0.1  # radiograph chain: max relative contrast change
    gamma: float = 0.1  # radiograph chain: max gamma deviation from 1
    noise_std: float = 0.01  # radiograph chain: Gaussian noise std on [0, 1] images (added to half of them)
    cache_dir: str = ""  # persistent uint8 cache of decoded, resized images ("" = off)
    num_workers: int = 0  # DataLoader worker processes
    on_bad_image: str = "fail"  # fail | skip


@dataclass
class ModelConfig:
    """Networks: which backbones, where their weights come from, how much of them trains."""

    kind: str = "egan"  # egan | supervised | knn | patchcore (knn and patchcore: one-class, no training)
    encoder: str = "efficientnet_lite0"  # densenet121 | vgg16 | vgg19 | resnet101 | efficientnet_b2 | efficientnet_lite0 | xrv_densenet121
    discriminator: str = "efficientnet_lite0"  # same choices; may differ from the encoder (Table 3)
    weights: str = "imagenet"  # imagenet | none | densenet121-res224-* (xrv_densenet121) | path to a state dict
    encoder_weights: str = ""  # overrides `weights` for E ("" = same as weights)
    discriminator_weights: str = ""  # overrides `weights` for D
    trainable_blocks: int = -1  # -1 = the paper's "top 5 layers" mapping of each backbone
    train_bn: bool = False  # True: trainable blocks' BatchNorm also update running stats (D's: from its mixed real+negative batches only)
    latent_dim: int = 128  # size of E's code
    dropout: float = 0.2  # before D's one-unit head
    spectral_norm: bool = False  # spectral normalisation on D's head
    knn_k: int = 5  # neighbours averaged by the kNN one-class baseline
    patch_memory: int = 10000  # patch memory (patchcore): at most this many normal patches
    patch_subsample: str = "coreset"  # how the patch memory is cut to patch_memory: coreset (greedy k-center, PatchCore's) | random

    def roles(self) -> tuple[str, ...]:
        """The pretrained networks this kind uses: D (the scorer / classifier), and E for eGAN."""
        return ("discriminator", "encoder") if self.kind == "egan" else ("discriminator",)

    def weights_key(self, role: str) -> str:
        """The config key that decides ``role``'s starting weights: its override when set, else model.weights.

        Args:
            role: ``encoder`` or ``discriminator``.

        Returns:
            ``model.encoder_weights``, ``model.discriminator_weights`` or ``model.weights``.
        """
        override = f"{role}_weights"
        return f"model.{override}" if getattr(self, override) else "model.weights"

    def weights_for(self, role: str) -> str:
        """``role``'s starting weights: ``imagenet``, ``none``, a torchxrayvision weight set or a file."""
        return getattr(self, self.weights_key(role).removeprefix("model."))


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 10  # passes over the majority training set
    batch_size: int = 128  # majority images per step
    minority_cap: int = 2500  # every step pushes up to this many minority images through E and G (a seeded random subset when there are more)
    max_steps_per_epoch: int = 0  # 0 = a full pass over the majority set
    lr_d: float = 1e-4  # Adam learning rate of D (or of the supervised classifier)
    lr_g: float = 1e-4  # Adam learning rate of E and G
    beta1: float = 0.9  # Adam beta1 for both optimisers
    label_smoothing: float = 0.0  # D's target for real majority is 1 - this
    instance_noise: float = 0.0  # Gaussian noise std added to every image D trains on (real and negatives)
    r1_gamma: float = 0.0  # R1 gradient penalty on real majority images (single process, no feature cache)
    recon_weight: float = 0.0  # ties G(E(x)) to x; 0 = the paper
    semi_supervised: bool = False  # D also sees real minority images as negatives (not the paper)
    class_weight: bool = True  # supervised baseline: weight BCE by the imbalance
    seed: int = 0  # every random draw of an epoch follows from (seed, epoch)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA
    compile: bool = False  # torch.compile the training step (minutes of compile time: for long GPU runs)
    channels_last: bool = True  # NHWC memory format for the networks and their input batches
    feature_cache: bool = False  # cache frozen-trunk activations of real images (needs augment off)
    checkpoint_every: int = 1  # epochs between last.pt writes (the final epoch is always written)


@dataclass
class EvalConfig:
    """Model selection and operating point, both on the validation split."""

    select: str = "val_auroc"  # val_auroc | val_f1 | nash
    nash_threshold: float = 20.0  # |correct minority - correct majority| at 1000+1000 test images
    operating_point: str = "logit0"  # logit0 | sensitivity | specificity
    target: float = 0.9  # the sensitivity or specificity to reach on validation
    bootstrap: int = 1000  # bootstrap resamples for the 95% CIs (0 = none)
    baseline: bool = False  # also train the supervised baseline on the same cohort
    knn: bool = False  # also fit the one-class kNN on frozen features
    patchcore: bool = False  # also fit the patch-level one-class memory (PatchCore family)
    fusion: bool = True  # add a "fusion (mean rank)" row when a run holds two or more detectors
    val_minority_budget: int = 0  # validation positives selection may use: 0 = all, -1 = as many as training positives, N
    budget_seed: int = -1  # seed of the budgeted subset of validation positives (the same for every detector); -1 = from train.seed and data.fold
    deploy: str = "auto"  # detector predict/export/bundle serve: auto (val-weighted fusion if eval.fusion, else model.kind) | egan | supervised | knn | patchcore | fusion_mean | fusion_weighted


@dataclass
class Config:
    """A whole run."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Model kinds and the row labels reports, model cards and study tables give them.
KIND_LABELS = {"egan": "eGAN", "supervised": "supervised baseline", "knn": "kNN one-class", "patchcore": "patch memory"}
# eval.deploy's fusion names and their report rows.
FUSION_LABELS = {"fusion_mean": "fusion (mean rank)", "fusion_weighted": "fusion (val-weighted rank)"}


def run_detector_kinds(cfg: "Config") -> list[str]:
    """The detectors a run of ``cfg`` holds: its own model, the baseline beside eGAN, the one-class detectors asked for."""
    kinds = [cfg.model.kind]
    if cfg.model.kind == "egan" and cfg.eval.baseline:
        kinds.append("supervised")
    kinds += [k for k in ("knn", "patchcore") if getattr(cfg.eval, k) and k != cfg.model.kind]
    return kinds


def deploy_label(cfg: "Config") -> str:
    """The report row label of the detector a run deploys (``eval.deploy``, auto resolved)."""
    want = cfg.eval.deploy
    if want == "auto":
        want = "fusion_weighted" if cfg.eval.fusion and len(run_detector_kinds(cfg)) > 1 else cfg.model.kind
    return FUSION_LABELS.get(want) or KIND_LABELS[want]
# The backbones egan_med.models.backbones.BACKBONES builds (named here so the config is checked without torch;
# a test keeps the two equal).
BACKBONE_NAMES = ("densenet121", "vgg16", "vgg19", "resnet101", "efficientnet_b2", "efficientnet_lite0",
                  "xrv_densenet121")

_CHOICES = {
    "data.kind": ("radiograph", "natural"),
    "data.on_bad_image": ("fail", "skip"),
    "model.kind": tuple(KIND_LABELS),
    "model.encoder": BACKBONE_NAMES,
    "model.discriminator": BACKBONE_NAMES,
    "eval.select": ("val_auroc", "val_f1", "nash"),
    "eval.operating_point": ("logit0", "sensitivity", "specificity"),
    "eval.deploy": ("auto", *KIND_LABELS, *FUSION_LABELS),
}


def _closest(value: Any, valid: tuple[str, ...] | list[str]) -> str:
    """``"; did you mean 'x'?"`` for the valid name closest to ``value``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), list(valid), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {_shown(value)}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{key}: expected an integer, got {_shown(value)}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {_shown(value)}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {_shown(value)}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {_shown(value)}") from None
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise ConfigError(f"{key}: expected a string, got {_shown(value)}")
    return str(value)


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    types = {f.name: f.type for f in fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in types:
            hint = _suggest(full, _all_keys(prefix, obj)) if len(full) <= MAX_SHOWN else ""
            raise ConfigError(f"unknown config key {_shown(full)}" + hint)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a section of keys, got {_shown(value)}")
            _apply(current, value, prefix=f"{full}.")
        else:
            kind = {"int": int, "float": float, "bool": bool, "str": str}[types[key]]
            if full == "eval.val_minority_budget" and isinstance(value, str) and value.strip().lower() == "train":
                value = -1  # "train": as many validation positives as training positives
            setattr(obj, key, _coerce(full, value, kind))


def _all_keys(prefix: str, obj: Any) -> list[str]:
    out = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        out += _all_keys(f"{prefix}{f.name}.", v) if dataclasses.is_dataclass(v) else [f"{prefix}{f.name}"]
    return out


def _check(cfg: Config) -> None:
    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={_shown(_get(cfg, key))}: {why}")

    for key, allowed in _CHOICES.items():
        need(_get(cfg, key) in allowed, key, f"must be one of {', '.join(allowed)}" + _closest(_get(cfg, key), allowed))
    d, m, t, e = cfg.data, cfg.model, cfg.train, cfg.eval
    # The name becomes runs/<name>: it must stay one folder inside runs/, never a path out of it.
    need(bool(cfg.name) and cfg.name not in (".", "..") and not any(c in cfg.name for c in "/\\\0"), "name",
         "must be a plain folder name (no '/', '\\', '.' or '..'): it names the default run directory runs/<name>")
    need(bool(d.cohort.strip()), "data.cohort", "must name a cohort.csv written by scripts/build_cohort.py")
    need(d.fold >= -1, "data.fold", "must be -1 (all folds) or a fold number >= 0")
    need(d.image_size >= 8 and d.image_size % 4 == 0, "data.image_size", "must be a multiple of 4 and at least 8")
    need(d.channels in (1, 3), "data.channels", "must be 1 or 3")
    need(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    need(0 <= d.rotate_deg <= 45, "data.rotate_deg", "must be within [0, 45]")
    for k in ("scale", "translate", "contrast", "gamma"):
        need(0 <= getattr(d, k) < 1, f"data.{k}", "must be within [0, 1)")
    need(d.noise_std >= 0, "data.noise_std", "must be >= 0")
    need(m.latent_dim >= 1, "model.latent_dim", "must be >= 1")
    need(0 <= m.dropout < 1, "model.dropout", "must be within [0, 1)")
    need(m.trainable_blocks >= -1, "model.trainable_blocks", "must be -1 (paper mapping) or >= 0")
    need(m.knn_k >= 1, "model.knn_k", "must be >= 1")
    need(m.patch_memory >= 1, "model.patch_memory", "must be >= 1")
    need(m.patch_subsample in ("coreset", "random"), "model.patch_subsample", "must be coreset or random")
    need(e.val_minority_budget >= -1, "eval.val_minority_budget", "must be 0 (all), -1 (as many as training positives) or N >= 1")
    need(e.budget_seed == -1 or 0 <= e.budget_seed < 2**32, "eval.budget_seed",
         "must be -1 (auto: from train.seed and data.fold) or within [0, 2**32)")
    held = run_detector_kinds(cfg)
    need(e.deploy == "auto" or (e.deploy.startswith("fusion") and e.fusion and len(held) > 1) or e.deploy in held,
         "eval.deploy", f"this run holds {', '.join(held)}" + (" (and their fusions)" if e.fusion and len(held) > 1 else
                                                               "; a fusion needs eval.fusion and two or more detectors"))
    _check_xrv(cfg, need)
    need(t.epochs >= 1, "train.epochs", "must be >= 1")
    need(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(t.minority_cap >= 1, "train.minority_cap", "must be >= 1")
    need(t.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", "must be >= 0")
    for k in ("lr_d", "lr_g"):
        need(getattr(t, k) > 0, f"train.{k}", "must be > 0")
    need(0 <= t.beta1 < 1, "train.beta1", "must be within [0, 1)")
    need(0 <= t.label_smoothing < 0.5, "train.label_smoothing", "must be within [0, 0.5)")
    for k in ("instance_noise", "r1_gamma", "recon_weight"):
        need(getattr(t, k) >= 0, f"train.{k}", "must be >= 0")
    need(0 <= t.seed < 2**32, "train.seed", "must be within [0, 2**32)")
    need(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    need(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"), "train.device",
         "must be auto, cpu, cuda or cuda:N")
    need(not (t.feature_cache and d.augment), "train.feature_cache", "needs data.augment=false (cached views are fixed)")
    need(not (t.r1_gamma > 0 and t.feature_cache), "train.r1_gamma", "needs train.feature_cache=false (the penalty differentiates through the trunk)")
    need(not (t.instance_noise > 0 and t.feature_cache), "train.instance_noise", "needs train.feature_cache=false (noise goes on real images too)")
    need(e.nash_threshold >= 0, "eval.nash_threshold", "must be >= 0")
    need(0 < e.target < 1, "eval.target", "must be within (0, 1)")
    need(e.bootstrap >= 0, "eval.bootstrap", "must be >= 0")


def budget_note(budget: int, n_train_minority: int, n_val_minority: int) -> str:
    """A warning when ``eval.val_minority_budget`` asks for more validation positives than the cohort has.

    Args:
        budget: ``eval.val_minority_budget`` (0 = all, -1 = as many as training positives, N).
        n_train_minority: training positives of the cohort (what -1 asks for).
        n_val_minority: validation positives the cohort holds.

    Returns:
        One line for the report and stderr, or "" when the budget fits.
    """
    want = n_train_minority if budget < 0 else budget
    if budget == 0 or want <= n_val_minority:
        return ""
    asked = f"{budget}" if budget > 0 else f"-1 (as many as the {n_train_minority} training positives)"
    return (f"eval.val_minority_budget={asked} is larger than the {n_val_minority} validation positives the cohort "
            f"has; all {n_val_minority} are used (the realistic and generous protocols coincide)")


def fusion_note(fusion: bool, detectors: int) -> str:
    """Why there is no fusion row although ``eval.fusion`` asks for one.

    Args:
        fusion: ``eval.fusion``.
        detectors: how many detectors the run holds.

    Returns:
        One line for the report and stderr, or "" when fusion is off or has rows.
    """
    if not fusion or detectors >= 2:
        return ""
    return (f"eval.fusion=true but the run holds {detectors} detector(s); fusion needs two or more (add eval.baseline, "
            "eval.knn or eval.patchcore), so there is no fusion row")


def _check_xrv(cfg: Config, need) -> None:
    """torchxrayvision backbones take only its weight sets (or none / a file), and its weight sets only them."""
    from egan_med import xrv

    m = cfg.model
    names = ("imagenet", "none", *xrv.XRV_WEIGHTS)
    for key in ("model.weights", "model.encoder_weights", "model.discriminator_weights"):
        value = _get(cfg, key)
        # A bare word is a weights name, never a file: catch 'imagnet' here, not after every image is decoded.
        looks_like_name = value and not os.path.splitext(value)[1] and not any(c in value for c in "/\\")
        if looks_like_name and value not in names and not os.path.isfile(value):
            need(False, key, f"must be one of {', '.join(names)} or a state-dict file" + _closest(value, names))
    for role in m.roles():
        backbone, key, weights = getattr(m, role), m.weights_key(role), m.weights_for(role)
        if backbone == xrv.XRV_BACKBONE:
            need(xrv.installed(), f"model.{role}", "needs torchxrayvision: pip install 'egan_med[xrv]'")
            need(weights != "imagenet", key, f"{backbone} has no ImageNet weights; use one of "
                 f"{', '.join(xrv.XRV_WEIGHTS)}, none, or a state-dict file")
        elif weights in xrv.XRV_WEIGHTS:
            need(False, key, f"torchxrayvision weights need model.{role}={xrv.XRV_BACKBONE}, not {backbone}")


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    values = read_yaml(path) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    base = values.pop("base", None)
    if base:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), str(base)))
        if base_path in seen:
            raise ConfigError(f"{path}: 'base' chain loops back to {base_path}")
        merged = _read_yaml(base_path, seen + (base_path,))
        _merge(merged, values)
        return merged
    return values


def _merge(into: dict[str, Any], over: dict[str, Any]) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"train.epochs=3"`` into ``{"train": {"epochs": 3}}`` (value parsed as YAML scalar)."""
    if "=" not in text:
        raise ConfigError(f"override {_shown(text)} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw else ""  # noqa: S506 - a SafeLoader
    except ConfigError as exc:
        raise ConfigError(f"override '{_shown(text)[1:-1]}': {exc}") from None
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (following ``base:``), apply overrides, and validate.

    Args:
        path: YAML file; None gives the defaults.
        overrides: ``key.sub=value`` strings applied after the file.

    Returns:
        The validated ``Config``.
    """
    values: dict[str, Any] = _read_yaml(path) if path else {}
    for text in overrides or []:
        _merge(values, parse_override(text))
    cfg = Config()
    if path and "name" not in values:
        cfg.name = os.path.splitext(os.path.basename(path))[0]
    _apply(cfg, values)
    _check(cfg)
    return cfg


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. stored in a checkpoint)."""
    cfg = Config()
    _apply(cfg, values)
    _check(cfg)
    return cfg


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def reference_table() -> str:
    """The README's config reference: one Markdown row per key, from the dataclasses' defaults and comments.

    Returns:
        The table rows (without the header), one per line, in declaration order.
    """
    import inspect
    import re

    rows = []
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig), ("eval", EvalConfig)):
        comments = dict(re.findall(r"^\s+(\w+): [^=\n]+= [^\n#]*#\s*(.*)$", inspect.getsource(cls), re.M))
        for f in fields(cls):
            meaning = comments.get(f.name, "").replace("|", "\\|")
            rows.append(f"| `{section}.{f.name}` | `{f.default!r}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(reference_table())
