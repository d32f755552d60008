"""Export a run's deployed detector: ``python -m egan_med.export --run RUN_DIR [--out DIR | --bundle DIR]``.

Writes ``scorer.ts.pt`` (TorchScript, traced) and ``scorer.onnx`` (dynamic batch axis) plus ``export.json``, of
the detector the run deploys (``deploy/scorer.pt``: eGAN's D, the baseline, a one-class detector with its memory
as a buffer, or the fusion with its components and validation references). Both take float32 images
(N, C, S, S) in [0, 1] at the run's size and channels, normalise inside, and return the minority score (higher =
minority; minority when score > the run's threshold). The spatial size is fixed at export: EfficientNet-Lite's
"same" padding is computed from it. Running the ONNX file needs onnxruntime, an optional extra:
``pip install 'egan_med[export]'``.

``--bundle DIR`` writes a MONAI bundle instead (configs/metadata.json, configs/inference.json, models/model.ts,
models/model.pt, docs/README.md), which MONAI's runner scores folders with::

    python -m monai.bundle run --config_file DIR/configs/inference.json --meta_file DIR/configs/metadata.json \
        --bundle_root DIR --dataset_dir IMAGES --output_file scores.csv
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import warnings

import numpy as np
import torch

from egan_med.cli import ArgumentParser, boundary
from egan_med.io import atomic_path, file_hash, first_line, write_json

ONNX_OPSET = 17
TOLERANCE = 1e-4  # max |score difference| accepted by the self-check


class ExportError(RuntimeError):
    """The run cannot be exported, or the export disagrees with PyTorch; one-line message."""


def load_onnx(path: str):
    """An onnxruntime CPU session for ``path``.

    Raises:
        ExportError: onnxruntime is not installed (it is the optional ``export`` extra).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running ONNX models needs onnxruntime: pip install 'egan_med[export]'") from None
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def onnx_scores(session, images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Minority scores of a (N, C, S, S) float batch in [0, 1] from an onnxruntime session."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


@contextlib.contextmanager
def _quiet_export():
    """Silence the expected export warnings."""
    with warnings.catch_warnings():
        # Tracer warnings say Python shape arithmetic becomes constant: intended, the size is fixed at export.
        # TorchScript and the legacy ONNX exporter are deprecated in torch 2.9+ but still the working paths here.
        for category in (torch.jit.TracerWarning, FutureWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        yield


def export_run(run_dir: str, out_dir: str | None = None, check: bool = True) -> dict:
    """Write the TorchScript and ONNX models of a run's deployed scorer and check them against PyTorch.

    Args:
        run_dir: an evaluated run directory (``deploy/scorer.pt`` and ``operating_point.json``).
        out_dir: destination (default ``RUN_DIR/export``).
        check: score a random batch with every format and fail above TOLERANCE.

    Returns:
        The export.json dict (files, input/output contract, operating point, check results).

    Raises:
        ExportError: no run or checkpoint, or an export that disagrees with PyTorch.
    """
    from egan_med.deploy.finalize import SCORER_FILE
    from egan_med.deploy.serve import PredictError, load_run

    try:
        net, cfg, op = load_run(run_dir)
    except PredictError as exc:
        raise ExportError(str(exc)) from None
    net = net.cpu().float().eval()
    out_dir = out_dir or os.path.join(run_dir, "export")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    c, s = cfg.data.channels, cfg.data.image_size
    example = torch.rand(2, c, s, s, generator=torch.Generator().manual_seed(0))
    ts_path, onnx_path = os.path.join(out_dir, "scorer.ts.pt"), os.path.join(out_dir, "scorer.onnx")
    with _quiet_export(), torch.no_grad(), atomic_path(ts_path) as ts_tmp, atomic_path(onnx_path) as onnx_tmp:
        try:
            torch.jit.trace(net, example).save(ts_tmp)
        except Exception as exc:  # a component TorchScript cannot trace: say which detector, in one line
            first = first_line(exc)
            raise ExportError(f"TorchScript cannot hold the deployed detector {op.get('detector')!r}: {first}") from None
        # The dynamo exporter (torch's default since 2.9) needs onnxscript, which is not a dependency here;
        # the legacy TorchScript-based exporter handles this network with the batch axis left dynamic.
        try:
            torch.onnx.export(net, (example,), onnx_tmp, input_names=["image"], output_names=["score"],
                              dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}}, opset_version=ONNX_OPSET,
                              dynamo=False)
        except Exception as exc:  # an operator ONNX cannot hold: say which detector, in one line
            first = first_line(exc)
            raise ExportError(f"ONNX cannot hold the deployed detector {op.get('detector')!r}: {first}") from None

    info = {
        "run": os.path.abspath(run_dir), "detector": op.get("detector"), "epochs": op.get("epochs"),
        "scorer_sha256": file_hash(os.path.join(run_dir, SCORER_FILE)),
        "torchscript": os.path.basename(ts_path), "onnx": os.path.basename(onnx_path),
        "onnx_exporter": f"torch.onnx.export(dynamo=False), opset {ONNX_OPSET}", "torch": torch.__version__,
        "input": {"name": "image", "shape": ["batch", c, s, s], "dtype": "float32", "range": [0.0, 1.0],
                  "preprocessing": "as egan_med.predict.eval_image: decode, fit longest side + pad to square, "
                                   "round to uint8, /255; normalisation is inside the model"},
        "output": {"name": "score", "shape": ["batch"],
                   "meaning": "minority score, higher = more minority-like; minority when score > threshold"},
        "operating_point": op,
    }
    if check:
        info["check"] = _self_check(net, ts_path, onnx_path, torch.rand(5, c, s, s))
    write_json(os.path.join(out_dir, "export.json"), info, indent=2)
    return info


BUNDLE_VERSION = "0.1.0"
# The schema MONAI's verify_metadata downloads (MONAI model-zoo bundles name this one).
META_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"


def _inference_config(cfg, threshold: float) -> dict:
    """configs/inference.json: MONAI Dataset/DataLoader around egan_med's reader, the TorchScript scorer."""
    return {
        "imports": ["$import torch", "$import egan_med.bundle as egan_bundle", "$import egan_med.engine.runtime as egan_runtime"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "images",
        "output_file": "$@bundle_root + '/eval/scores.csv'",
        "threshold": float(threshold),
        "batch_size": 32,
        "data_config": dataclasses.asdict(cfg.data) | {"augment": False, "cache_dir": "", "num_workers": 0},
        "network_def": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location='cpu')",
        # (N,) scores as (N, 1): MONAI's verify_net_in_out reads the channel count from dimension 1.
        "network": "$torch.nn.Sequential(@network_def, torch.nn.Unflatten(0, (-1, 1))).eval()",
        "datalist": "$egan_bundle.list_images(@dataset_dir)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "egan_med.bundle.LoadRadiographd", "keys": "image", "data_config": "@data_config"}]},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": "@batch_size",
                       "shuffle": False, "num_workers": 0},
        "initialize": ["$egan_runtime.cpu_speedups()"],
        "run": ["$egan_bundle.write_scores(@network, @dataloader, @device, @output_file, @threshold)"],
    }


def _metadata(run_dir: str, cfg, op: dict, splits) -> dict:
    """configs/metadata.json: MONAI's mandatory keys plus egan_med's operating point, label budget, validation."""
    from importlib import metadata as md

    from egan_med import xrv
    from egan_med.evaluation.model_card import LIMITS, _validation_row, weights_source

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    sizes = splits.sizes()
    c, s = cfg.data.channels, cfg.data.image_size
    validated = {"cohort": os.path.abspath(cfg.data.cohort), "split": "val", "source": splits.meta.get("source"),
                 "input_sha256": splits.meta.get("input_sha256"),
                 "minority": sizes["val"][0], "majority": sizes["val"][1]}
    # The model card's validation row: the selected checkpoint's val scores when saved, else training's log.
    row, rule, how = _validation_row(run_dir, cfg, op, None)
    if row is not None:
        validated["metrics"] = {k: float(v) for k, v in row.items()
                                if k.split("_")[0] in ("recall", "specificity", "precision", "f1", "auroc", "auprc")}
        validated["metrics_rule"], validated["metrics_how"] = rule, how
    # MONAI 1.6 reads required_packages_version (optional_packages_version is its deprecated name).
    optional = {"egan_med": version("egan_med"), "pydicom": version("pydicom"), "pillow": version("pillow")}
    if xrv.XRV_BACKBONE in (cfg.model.encoder, cfg.model.discriminator):
        optional["torchxrayvision"] = version("torchxrayvision")
    w = cfg.model.weights_for("discriminator")
    return {
        "schema": META_SCHEMA,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by egan_med from run {cfg.name}"},
        "monai_version": version("monai"), "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__, "required_packages_version": optional,
        "name": f"egan_med_{cfg.name}",
        "task": "Rare-class (minority) detection in chest radiographs: a score per image and a minority/majority "
                "decision at the validated operating point",
        "description": f"{op.get('detector')} ({cfg.model.discriminator} backbone, starting weights: "
                       f"{weights_source(cfg.model.discriminator, w)}) deployed by egan_med run {cfg.name}, "
                       f"{op.get('protocol')} label-budget protocol; see docs/README.md.",
        "authors": "egan_med user (see docs/README.md for the run)", "copyright": "see docs/README.md",
        "intended_use": LIMITS.splitlines()[0].lstrip("- "),
        "data_type": "dicom, png, jpeg",
        "image_classes": f"{c} channel(s), {s}x{s}, intensities in [0, 1] after egan_med's evaluation preprocessing",
        "pred_classes": f"1 channel: minority score of the deployed detector ({op.get('detector')}), higher = minority",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "radiograph", "num_channels": c,
                                 "spatial_shape": [s, s], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False,
                                 "channel_def": {str(i): "grayscale" for i in range(c)}}},
            "outputs": {"pred": {"type": "probabilities", "format": "classes", "num_channels": 1,
                                 "spatial_shape": [1], "dtype": "float32", "value_range": [],
                                 "is_patch_data": False, "channel_def": {"0": "minority score (higher = minority)"}}},
        },
        "egan_med": {
            "operating_point": op,
            "label_budget": {"train_minority": sizes["train"][0], "train_majority": sizes["train"][1],
                             "val_minority": sizes["val"][0], "val_majority": sizes["val"][1]},
            "validated_on": validated,
            "leakage_warning": xrv.run_leak_warning(cfg, splits.meta) or None,
            "preprocessing": "egan_med.bundle.LoadRadiographd = egan_med.predict.eval_image: decode (DICOM "
                             "windowing, MONOCHROME1 inverted), fit longest side + pad to square, uint8, /255",
        },
    }


def export_bundle(run_dir: str, out_dir: str) -> dict:
    """Write a MONAI bundle of a run's scoring network into ``out_dir`` (which must not exist yet).

    Args:
        run_dir: an evaluated run (``checkpoints/best.pt`` and ``operating_point.json``).
        out_dir: the bundle folder; written beside under a temporary name, then renamed: never half-written.

    Returns:
        The metadata.json dict.

    Raises:
        ExportError: unusable run, missing cohort (the label budget comes from it), existing ``out_dir``,
            or a TorchScript export that disagrees with PyTorch.
    """
    import shutil
    import tempfile

    from egan_med.evaluation import model_card
    from egan_med.engine.checkpoint import CheckpointError
    from egan_med.cohort import CohortError
    from egan_med.config import ConfigError
    from egan_med.models import WeightsError
    from egan_med.deploy.serve import PredictError, load_run
    from egan_med.cohort.splits import load_splits

    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise ExportError(f"--bundle {out_dir} is an existing file; move it away or choose another path")
        raise ExportError(f"bundle folder already exists: {out_dir} (remove it or choose another)")
    try:
        net, cfg, op = load_run(run_dir)
        splits = load_splits(cfg)
    except (PredictError, CheckpointError, CohortError, ConfigError, WeightsError) as exc:
        raise ExportError(str(exc)) from None
    net = net.cpu().float().eval()
    c, s = cfg.data.channels, cfg.data.image_size
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(out_dir))}.")
    try:
        for sub in ("configs", "models", "docs"):
            os.makedirs(os.path.join(tmp, sub))
        ts_path = os.path.join(tmp, "models", "model.ts")
        with _quiet_export(), torch.no_grad():
            torch.jit.trace(net, torch.rand(2, c, s, s, generator=torch.Generator().manual_seed(0))).save(ts_path)
            x = torch.rand(5, c, s, s)
            diff = float((torch.jit.load(ts_path)(x) - net(x)).abs().max())
        if not diff <= TOLERANCE:
            raise ExportError(f"TorchScript export disagrees with PyTorch: max |diff| {diff:.3g} (tolerance {TOLERANCE})")
        torch.save(net.state_dict(), os.path.join(tmp, "models", "model.pt"))  # the spec's mandatory weights file
        meta = _metadata(run_dir, cfg, op, splits)
        meta["egan_med"]["torchscript_max_abs_diff"] = diff
        for name, content in (("metadata.json", meta), ("inference.json", _inference_config(cfg, op["threshold"]))):
            with open(os.path.join(tmp, "configs", name), "w", encoding="utf-8") as fh:
                json.dump(content, fh, indent=2)
        card_path = os.path.join(run_dir, "MODEL_CARD.md")
        if os.path.isfile(card_path):
            with open(card_path, encoding="utf-8") as fh:
                card = fh.read()
        else:
            card = model_card.render(run_dir)
        with open(os.path.join(tmp, "docs", "README.md"), "w", encoding="utf-8") as fh:
            fh.write(_BUNDLE_README.format(name=os.path.basename(os.path.abspath(out_dir))) + "\n" + card)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


_BUNDLE_README = """\
# MONAI bundle `{name}` (exported by egan_med)

Score a folder of chest radiographs (PNG, JPEG, DICOM; searched recursively) with MONAI's bundle runner:

    python -m monai.bundle run --config_file {name}/configs/inference.json \\
        --meta_file {name}/configs/metadata.json --bundle_root {name} \\
        --dataset_dir IMAGES --output_file scores.csv

`scores.csv` has one row per image: path, score (the deployed detector's minority score, higher = more
minority-like), decision
(minority when score > threshold) and threshold, the run's operating point chosen on validation (metadata.json,
`egan_med.operating_point`). The numbers equal `python -m egan_med.predict` on the same files (CPU).

- Reading images: `configs/inference.json` names egan_med's own reader and evaluation preprocessing by
  `_target_` (`egan_med.bundle.LoadRadiographd`, the code `egan_med.predict` uses: DICOM windowing,
  MONOCHROME1 inversion, resize + pad to square), so the bundle needs `pip install egan_med` beside MONAI.
  The network itself (`models/model.ts`, TorchScript) needs only torch; `models/model.pt` is its state dict.
- The input size and channels are fixed at export (metadata.json `network_data_format`).
- An unreadable image stops the bundle run; `egan_med.predict` instead lists it with its reason.
- Scoring is a plain loop (`egan_med.bundle.write_scores`), not a MONAI evaluator, which would need
  pytorch-ignite.

The run's model card follows.

"""


def _self_check(net: torch.nn.Module, ts_path: str, onnx_path: str, x: torch.Tensor) -> dict:
    """Max |score - PyTorch score| of the saved files on ``x``; onnxruntime's part is skipped when absent."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        ref = net(x).numpy()
        ts = torch.jit.load(ts_path)(x).numpy()
    out = {"images": int(len(x)), "torchscript_max_abs_diff": float(np.abs(ts - ref).max())}
    try:
        out["onnx_max_abs_diff"] = float(np.abs(onnx_scores(load_onnx(onnx_path), x) - ref).max())
    except ExportError as exc:
        out["onnx_max_abs_diff"] = None
        print(f"note: ONNX file written but not checked: {exc}", file=sys.stderr)
    bad = {k: v for k, v in out.items() if k.endswith("diff") and v is not None and not v <= TOLERANCE}
    if bad:
        raise ExportError(f"exported model disagrees with PyTorch: {bad} (tolerance {TOLERANCE})")
    return out


@boundary("exporting")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m egan_med.export", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory written by egan_med.train")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", help="output folder (default RUN_DIR/export)")
    where.add_argument("--bundle", help="write a MONAI bundle into this new folder instead")
    p.add_argument("--no-check", action="store_true", help="skip the agreement check on a random batch")
    args = p.parse_args(argv)
    if args.bundle:
        try:
            meta = export_bundle(args.run, args.bundle)
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        budget = meta["egan_med"]["label_budget"]
        print(f"wrote MONAI bundle {args.bundle}: configs/metadata.json, configs/inference.json, models/model.ts, "
              f"docs/README.md  label budget {budget}  max |diff| TorchScript vs PyTorch "
              f"{meta['egan_med']['torchscript_max_abs_diff']:.3g}", file=sys.stderr)
        return 0
    try:
        info = export_run(args.run, args.out, check=not args.no_check)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nerror: interrupted; run the same command again", file=sys.stderr)
        return 130
    out = args.out or os.path.join(args.run, "export")
    check = info.get("check", {})
    print(f"wrote {out}: {info['torchscript']}, {info['onnx']}, export.json  input {info['input']['shape']}  "
          f"max |diff| vs PyTorch: TorchScript {check.get('torchscript_max_abs_diff')}, "
          f"ONNX {check.get('onnx_max_abs_diff')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
