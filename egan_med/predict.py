"""Score new images with a trained run: ``python -m egan_med.predict --run RUN_DIR --input PATH --out scores.csv``.

PATH is a single image, a folder (PNG/JPEG/TIFF/BMP/GIF/WebP/DICOM, searched recursively), a CheXpert-style CSV (column ``Path``, relative to
the CSV's grandparent folder or ``--root``) or a cohort manifest (cohort.csv beside cohort.json). Images go
through exactly the run's evaluation preprocessing and are scored by the detector the run deploys
(``deploy/scorer.pt``: eGAN's D, the baseline, a one-class detector or the fusion, as ``eval.deploy`` chose); the
decision uses its operating point, chosen on validation under the run's label budget (``operating_point.json``).
Unreadable images are listed with their reason and an empty decision; they do not stop the run.
"""
from __future__ import annotations

import os
import sys

import pandas as pd

from egan_med.cli import ArgumentParser, boundary
from egan_med.deploy.serve import (PredictError, eval_image, list_inputs, load_run, predict,  # noqa: F401
                                   pick_device, read_operating_point)
from egan_med.engine.rundir import write_table_atomic
from egan_med.engine.runtime import cpu_speedups


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
        pick_device(args.device)
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
    print(f"wrote {args.out}: {len(scores)} images scored by {op.get('detector', '?')}, {n_min} minority at threshold "
          f"{float(op['threshold']):.4g} ({op.get('rule', '?')} chosen on {op.get('val_minority', '?')} validation "
          f"positives, {op.get('protocol', '?')} protocol), {n_bad} unreadable", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
