"""Serving a run's deployed detector: the images an input names, read as evaluation reads them, scored by the
saved scorer at the run's operating point. ``egan_med.predict`` (the command) and the MONAI bundle both use this.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch
from pydicom.misc import is_dicom
from tqdm import tqdm

from egan_med.config import Config
from egan_med.image_formats import IMAGE_SUFFIXES  # the reader's list, shared with cohort building


class PredictError(ValueError):
    """Bad command-line input; the message is one line."""


def eval_image(path: str, cfg: Config) -> torch.Tensor:
    """One image as the run's evaluation loader yields it.

    Args:
        path: anything ``load_image`` reads.
        cfg: the run's config.

    Returns:
        float32 (cfg.data.channels, S, S) in [0, 1].

    Raises:
        BadImageError: the file is missing or undecodable.
    """
    from egan_med.data.transforms import augment_item, build_augment, expand_channels, preprocess

    # Same steps as CohortDataset: cached uint8 pixels, /255, eval chain, channel expansion.
    img = torch.from_numpy(preprocess(path, cfg.data).astype(np.float32)).div_(255.0)
    img = augment_item(build_augment(cfg.data, train=False), img, 0)
    return expand_channels(img, cfg.data.channels).contiguous()


def _is_image(path: str) -> bool:
    """By suffix; suffix-less files only when they carry DICOM's "DICM" marker (PACS exports often have none)."""
    if os.path.splitext(path)[1]:
        return path.lower().endswith(IMAGE_SUFFIXES)
    try:
        return is_dicom(path)
    except OSError:
        return False


def list_inputs(source: str, root: str = "", split: str = "") -> pd.DataFrame:
    """The images named by ``source``.

    Args:
        source: a folder, a CheXpert-style CSV or a cohort manifest.
        root: folder the CSV's paths are relative to (default: the CSV's grandparent, or cohort.json's root).
        split: manifests only: keep rows of this split.

    Returns:
        DataFrame with ``path`` (as the input names it), ``file`` (what to read) and, for manifests,
        ``split`` and ``minority``.
    """
    if not os.path.exists(source):
        raise PredictError(f"input not found: {source}")
    is_manifest = os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(source)), "cohort.json"))
    if split and not (os.path.isfile(source) and is_manifest):
        raise PredictError("--split only applies to a cohort manifest (cohort.csv beside cohort.json)")
    if os.path.isfile(source) and not is_manifest and _is_image(source):
        df = pd.DataFrame({"path": [source], "file": [source]})  # one image: by suffix or DICOM marker
    elif os.path.isdir(source):
        found = sorted(os.path.join(d, f) for d, _, files in os.walk(source) for f in files)
        df = pd.DataFrame({"path": [f for f in found if _is_image(f)]})
        df["file"] = df["path"]
    elif is_manifest:
        from egan_med.cohort import CohortError, load_manifest
        from egan_med.data.datasets import resolve_path

        try:
            man, meta = load_manifest(source, root)
        except CohortError as exc:
            raise PredictError(str(exc)) from None
        if split:
            man = man[man["split"] == split]
        df = man[["path", "split", "minority"]].reset_index(drop=True)
        df.insert(1, "file", [resolve_path(meta["root"], p) for p in df["path"]])
    else:
        try:
            table = pd.read_csv(source, dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise PredictError(f"cannot read CSV {source}: {str(exc).splitlines()[0][:120]}") from None
        if "Path" not in table.columns:
            raise PredictError(f"{source} has no 'Path' column (expected a CheXpert-style CSV or a cohort manifest)")
        # CheXpert's Path starts with the dataset folder, which sits beside the folder holding train.csv's folder.
        base = root or os.path.dirname(os.path.dirname(os.path.abspath(source)))
        df = pd.DataFrame({"path": table["Path"]})
        df["file"] = [os.path.normpath(os.path.join(base, p)) if p else "" for p in df["path"]]
    if df.empty:
        raise PredictError(f"no images found in {source}" + (f" (split {split})" if split else ""))
    return df


def read_operating_point(run_dir: str) -> dict:
    """The run's operating_point.json (set on validation by ``egan_med.evaluate``); PredictError if unusable."""
    if not os.path.exists(run_dir):
        raise PredictError(f"run directory not found: {run_dir}")
    if not os.path.isdir(run_dir):
        raise PredictError(f"{run_dir} is a file, not a run directory")
    op_path = os.path.join(run_dir, "operating_point.json")
    try:
        with open(op_path, encoding="utf-8") as fh:
            op = json.load(fh)
        op["threshold"] = float(op["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        raise PredictError(f"{op_path} is missing or unreadable; run `python -m egan_med.evaluate {run_dir}` "
                           "to set the operating point on validation") from None
    return op


def load_run(run_dir: str) -> tuple[torch.nn.Module, Config, dict]:
    """The run's deployed scorer, config and operating point; PredictError when unusable.

    The scorer maps [0, 1] images to a minority score (higher = minority) and loads with no training data.
    """
    from egan_med.config import ConfigError, config_from_dict
    from egan_med.deploy.finalize import SCORER_FILE, resolve_run_paths
    from egan_med.models.scorers import ScorerError, load_scorer

    op = read_operating_point(run_dir)
    path = os.path.join(run_dir, SCORER_FILE)
    if not os.path.isfile(path):
        raise PredictError(f"{path} is missing: this run was evaluated before detectors were saved for deployment; "
                           f"run `python -m egan_med.evaluate {run_dir}` to write it")
    try:
        scorer, meta = load_scorer(path)
        cfg = config_from_dict(meta["config"])
    except (ScorerError, ConfigError, KeyError) as exc:
        raise PredictError(str(exc)) from None
    saved = meta.get("operating_point", {})
    if saved.get("detector") != op.get("detector") or saved.get("threshold") != op.get("threshold"):
        raise PredictError(f"{run_dir}/operating_point.json does not belong to {path} (detector "
                           f"{op.get('detector')!r} at {op.get('threshold')} vs {saved.get('detector')!r} at "
                           f"{saved.get('threshold')}); run `python -m egan_med.evaluate {run_dir}` again")
    cwd = meta.get("cwd")
    return scorer, resolve_run_paths(cfg, cwd if isinstance(cwd, str) else None), op


def pick_device(name: str) -> torch.device:
    try:
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError:
        raise PredictError(f"--device must be auto, cpu or cuda[:N], got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"--device {name}: CUDA is not available on this machine")
    return dev


def _read(file: str, cfg: Config) -> tuple[torch.Tensor | None, str]:
    from egan_med.data import BadImageError

    try:
        return eval_image(file, cfg), ""
    except BadImageError as exc:
        return None, exc.reason
    except Exception as exc:  # one odd file must not abort scoring thousands of others
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"


@torch.no_grad()
def predict(scorer: torch.nn.Module, cfg: Config, threshold: float, inputs: pd.DataFrame, batch_size: int = 256,
            device: str = "auto", workers: int = 2, progress: bool = True) -> pd.DataFrame:
    """Score every image of ``inputs`` in batches, in float32 (the precision the threshold was set in).

    Args:
        scorer: the deployed scorer (images in [0, 1] -> minority score, higher = minority).
        cfg: the run's config (preprocessing).
        threshold: minority when score > threshold.
        inputs: from ``list_inputs``.
        batch_size: images per forward pass.
        device: auto | cpu | cuda[:N].
        workers: decoding threads.
        progress: show a tqdm bar.

    Returns:
        One row per input: the input's columns (without ``file``), score, decision, threshold, error.
    """
    dev = pick_device(device)
    scorer = scorer.to(dev).eval()
    files = inputs["file"].tolist()
    scores = np.full(len(files), np.nan)
    errors = [""] * len(files)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(files), desc="scoring", unit="img", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = range(start, min(start + batch_size, len(files)))
            good, images = [], []
            for i, (img, reason) in zip(chunk, pool.map(lambda f: _read(f, cfg), [files[i] for i in chunk])):
                if img is None:
                    errors[i] = reason
                else:
                    good.append(i)
                    images.append(img)
            if images:
                scores[good] = scorer(torch.stack(images).to(dev)).float().cpu().numpy()
            bar.update(len(chunk))
    ok = np.array([not e for e in errors])
    out = inputs.drop(columns="file").copy()
    out["score"] = scores
    out["decision"] = np.where(~ok, "", np.where(scores > threshold, "minority", "majority"))
    out["threshold"] = float(threshold)
    out["error"] = errors
    return out
