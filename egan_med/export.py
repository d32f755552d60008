"""Export a run's scoring network: ``python -m egan_med.export --run RUN_DIR [--out DIR]``.

Writes ``discriminator.ts.pt`` (TorchScript, traced) and ``discriminator.onnx`` (dynamic batch axis) plus
``export.json``. Both take float32 images (N, C, S, S) in [0, 1] at the run's size and channels, normalise
inside, and return the logit (positive = majority; minority score = -logit). The spatial size is fixed at
export: EfficientNet-Lite's "same" padding is computed from it. Running the ONNX file needs onnxruntime,
an optional extra: ``pip install 'egan_med[export]'``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings

import numpy as np
import torch

ONNX_OPSET = 17
TOLERANCE = 1e-4  # max |logit difference| accepted by the self-check


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


def onnx_logits(session, images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits of a (N, C, S, S) float batch in [0, 1] from an onnxruntime session."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def export_run(run_dir: str, out_dir: str | None = None, check: bool = True) -> dict:
    """Write the TorchScript and ONNX models of a run and check them against PyTorch.

    Args:
        run_dir: a run directory with ``checkpoints/best.pt``.
        out_dir: destination (default ``RUN_DIR/export``).
        check: score a random batch with every format and fail above TOLERANCE.

    Returns:
        The export.json dict (files, input/output contract, operating point, check results).

    Raises:
        ExportError: no run or checkpoint, or an export that disagrees with PyTorch.
    """
    from egan_med.checkpoint import CheckpointError
    from egan_med.config import ConfigError
    from egan_med.evaluate import load_scorer
    from egan_med.models import WeightsError

    if not os.path.isdir(run_dir):
        raise ExportError(f"run directory not found: {run_dir}")
    try:
        net, cfg, state = load_scorer(run_dir)
    except (CheckpointError, ConfigError, WeightsError) as exc:
        raise ExportError(str(exc)) from None
    net = net.cpu().float().eval()
    out_dir = out_dir or os.path.join(run_dir, "export")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    c, s = cfg.data.channels, cfg.data.image_size
    example = torch.rand(2, c, s, s, generator=torch.Generator().manual_seed(0))
    ts_path, onnx_path = os.path.join(out_dir, "discriminator.ts.pt"), os.path.join(out_dir, "discriminator.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings say Python shape arithmetic becomes constant: intended, the size is fixed above.
        # TorchScript and the legacy ONNX exporter are deprecated in torch 2.9+ but still the working paths here.
        for category in (torch.jit.TracerWarning, FutureWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        traced = torch.jit.trace(net, example)
        traced.save(ts_path + ".tmp")
        # The dynamo exporter (torch's default since 2.9) needs onnxscript, which is not a dependency here;
        # the legacy TorchScript-based exporter handles this network with the batch axis left dynamic.
        torch.onnx.export(net, (example,), onnx_path + ".tmp", input_names=["image"], output_names=["logit"],
                          dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}}, opset_version=ONNX_OPSET,
                          dynamo=False)
    os.replace(ts_path + ".tmp", ts_path)
    os.replace(onnx_path + ".tmp", onnx_path)

    info = {
        "run": os.path.abspath(run_dir), "checkpoint_epoch": int(state["epoch"]),
        "checkpoint_sha256": _sha256(os.path.join(run_dir, "checkpoints", "best.pt")),
        "torchscript": os.path.basename(ts_path), "onnx": os.path.basename(onnx_path),
        "onnx_exporter": f"torch.onnx.export(dynamo=False), opset {ONNX_OPSET}", "torch": torch.__version__,
        "input": {"name": "image", "shape": ["batch", c, s, s], "dtype": "float32", "range": [0.0, 1.0],
                  "preprocessing": "as egan_med.predict.eval_image: decode, fit longest side + pad to square, "
                                   "round to uint8, /255; normalisation is inside the model"},
        "output": {"name": "logit", "shape": ["batch"], "meaning": "positive = majority; minority score = -logit"},
    }
    op_path = os.path.join(run_dir, "operating_point.json")
    if os.path.isfile(op_path):
        with open(op_path, encoding="utf-8") as fh:
            info["operating_point"] = json.load(fh)
    if check:
        info["check"] = _self_check(net, ts_path, onnx_path, torch.rand(5, c, s, s))
    with open(os.path.join(out_dir, "export.json.tmp"), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    os.replace(os.path.join(out_dir, "export.json.tmp"), os.path.join(out_dir, "export.json"))
    return info


def _self_check(net: torch.nn.Module, ts_path: str, onnx_path: str, x: torch.Tensor) -> dict:
    """Max |logit - PyTorch logit| of the saved files on ``x``; onnxruntime's part is skipped when absent."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        ref = net(x).numpy()
        ts = torch.jit.load(ts_path)(x).numpy()
    out = {"images": int(len(x)), "torchscript_max_abs_diff": float(np.abs(ts - ref).max())}
    try:
        out["onnx_max_abs_diff"] = float(np.abs(onnx_logits(load_onnx(onnx_path), x) - ref).max())
    except ExportError as exc:
        out["onnx_max_abs_diff"] = None
        print(f"note: ONNX file written but not checked: {exc}", file=sys.stderr)
    bad = {k: v for k, v in out.items() if k.endswith("diff") and v is not None and not v <= TOLERANCE}
    if bad:
        raise ExportError(f"exported model disagrees with PyTorch: {bad} (tolerance {TOLERANCE})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m egan_med.export", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory written by egan_med.train")
    p.add_argument("--out", help="output folder (default RUN_DIR/export)")
    p.add_argument("--no-check", action="store_true", help="skip the agreement check on a random batch")
    args = p.parse_args(argv)
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
