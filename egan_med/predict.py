"""Score new images with a trained run: ``python -m egan_med.predict --run RUN_DIR --input PATH --out scores.csv``.

PATH is a single image, a folder (PNG/JPEG/TIFF/BMP/GIF/WebP/DICOM, searched recursively), a CheXpert-style CSV (column ``Path``, relative to
the CSV's grandparent folder or ``--root``) or a cohort manifest (cohort.csv beside cohort.json). Images go
through exactly the run's evaluation preprocessing; the decision uses the run's validated operating point.
Unreadable images are listed with their reason and an empty decision; they do not stop the run.
"""
from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch
from pydicom.misc import is_dicom
from tqdm import tqdm

from egan_med.cli import ArgumentParser, boundary
from egan_med.config import Config
from egan_med.image_formats import IMAGE_SUFFIXES  # the reader's list, shared with cohort building
from egan_med.engine.rundir import write_table_atomic
from egan_med.engine.runtime import autocast, cpu_speedups


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


def check_out(out: str, source: str, inputs: pd.DataFrame) -> None:
    """Refuse an --out that would overwrite an input or that cannot be written, before any scoring.

    Args:
        out: the output CSV.
        source: the --input argument.
        inputs: from ``list_inputs`` (its ``file`` column is every image that will be read).

    Raises:
        PredictError: --out is an input (the CSV, the manifest or its cohort.json, an image) or is not writable.
    """
    target = os.path.realpath(out)
    protected = {os.path.realpath(source)}
    if os.path.isfile(source):
        protected.add(os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(source)), "cohort.json")))
    protected.update(os.path.realpath(f.partition(".npz#")[0] + ".npz" if ".npz#" in f else f)
                     for f in inputs["file"] if f)
    if target in protected:
        raise PredictError(f"--out {out} is one of the inputs; it would be overwritten: choose another file name")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise PredictError(f"cannot write --out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(out) and not os.access(out, os.W_OK)):
        raise PredictError(f"cannot write --out {out}: permission denied")


def read_operating_point(run_dir: str) -> dict:
    """The run's operating_point.json (set on validation by ``egan_med.evaluate``); PredictError if unusable."""
    if not os.path.isdir(run_dir):
        raise PredictError(f"{run_dir} is a file, not a run directory" if os.path.isfile(run_dir) else
                           f"run directory not found: {run_dir}")
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
    """The run's scoring network (best checkpoint), config and operating point; PredictError when unusable."""
    from egan_med.engine.checkpoint import CheckpointError
    from egan_med.config import ConfigError
    from egan_med.evaluate import load_scorer
    from egan_med.models import WeightsError

    op = read_operating_point(run_dir)
    try:
        net, cfg, _ = load_scorer(run_dir)
    except (CheckpointError, ConfigError, WeightsError) as exc:
        raise PredictError(str(exc)) from None
    return net, cfg, op


def _device(name: str) -> torch.device:
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
def predict(net: torch.nn.Module, cfg: Config, threshold: float, inputs: pd.DataFrame, batch_size: int = 256,
            device: str = "auto", workers: int = 2, progress: bool = True) -> pd.DataFrame:
    """Score every image of ``inputs`` in batches.

    Args:
        net: the scoring network (logit, positive = majority).
        cfg: the run's config (preprocessing, amp).
        threshold: minority when score = -logit > threshold.
        inputs: from ``list_inputs``.
        batch_size: images per forward pass.
        device: auto | cpu | cuda[:N].
        workers: decoding threads.
        progress: show a tqdm bar.

    Returns:
        One row per input: the input's columns (without ``file``), score, logit, decision, threshold, error.
    """
    dev = _device(device)
    net = net.to(dev).eval()
    files = inputs["file"].tolist()
    logits = np.full(len(files), np.nan)
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
                with autocast(dev, cfg.train.amp):  # as score_loader, so scores match evaluation
                    batch_logits = net(torch.stack(images).to(dev))
                logits[good] = batch_logits.float().cpu().numpy()
            bar.update(len(chunk))
    ok = np.array([not e for e in errors])
    out = inputs.drop(columns="file").copy()
    out["score"] = -logits
    out["logit"] = logits
    out["decision"] = np.where(~ok, "", np.where(-logits > threshold, "minority", "majority"))
    out["threshold"] = float(threshold)
    out["error"] = errors
    return out


@boundary("predicting")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m egan_med.predict", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory written by egan_med.train")
    p.add_argument("--input", required=True, help="image folder, CheXpert-style CSV or cohort manifest")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--root", default="", help="folder the CSV's paths are relative to")
    p.add_argument("--split", choices=("train", "val", "test"), help="manifests: score only this split")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (evaluation uses 256)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding threads")
    args = p.parse_args(argv)
    cpu_speedups()
    try:
        if args.batch_size < 1:
            raise PredictError(f"--batch-size must be at least 1, got {args.batch_size}")
        if os.path.isdir(args.out):
            raise PredictError(f"--out must be a CSV file name, not a folder: {args.out}")
        read_operating_point(args.run)  # cheap checks first: a typo should not wait for a folder walk
        _device(args.device)
        inputs = list_inputs(args.input, args.root, args.split or "")
        check_out(args.out, args.input, inputs)  # before scoring: an unwritable --out must not waste the run
        net, cfg, op = load_run(args.run)
        scores = predict(net, cfg, float(op["threshold"]), inputs, args.batch_size, args.device, args.workers)
        n_bad = int((scores["error"] != "").sum())
        if n_bad == len(scores):
            first = scores.iloc[0]
            raise PredictError(f"none of the {n_bad} image(s) could be read, e.g. {first['path']}: {first['error']}")
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            write_table_atomic(scores, args.out)  # temp file + rename: readers never see half a table
        except PermissionError as exc:
            raise PredictError(f"cannot write --out {args.out}: {exc.strerror}") from None
    except PredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nerror: interrupted; --out was not written", file=sys.stderr)
        return 130
    n_min = int((scores["decision"] == "minority").sum())
    print(f"wrote {args.out}: {len(scores)} images, {n_min} minority at threshold {float(op['threshold']):.4g} "
          f"({op.get('rule', '?')} chosen on {op.get('chosen_on', '?')}), {n_bad} unreadable", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
