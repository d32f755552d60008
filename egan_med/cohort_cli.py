"""Build a cohort (minority/majority, patient-disjoint train/val/test, folds) from a label source.

Installed as ``egan-build-cohort``; ``python scripts/build_cohort.py`` and ``python -m egan_med.cohort_cli`` run the same
``main``. Examples:
    python scripts/build_cohort.py --csv CheXpert-v1.0-small/train.csv            # Pneumonia, per study
    python scripts/build_cohort.py --csv train.csv --train-minority 30 --train-majority 1080 \\
        --test-minority 1000 --test-majority 1000 --folds 5 --name chexpert_table6
    python scripts/build_cohort.py --nih Data_Entry_2017_v2020.csv.gz --ratio 36
    python scripts/build_cohort.py --medmnist pneumoniamnist_28.npz --minority 1 --majority 0 --ratio 36
    python scripts/build_cohort.py --folder chest_xray --minority PNEUMONIA --majority NORMAL
    python scripts/build_cohort.py --cifar cifar-10-batches-py --minority airplane --majority automobile

Class names match exactly: a label that differs from --minority/--majority only in case is an error, and in a
generic CSV a blank or missing-like label (NaN, N/A, null, none, ...) is excluded (reason no_label), never majority.
With --overwrite only cohort.csv, cohort.json and excluded.csv are replaced; other files in --out stay.

Errors print one line `error: ...` on stderr and exit with status 2; nothing is written then.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

from egan_med.cli import ArgumentParser, boundary
from egan_med.cohort import CohortError, CohortOptions, build

SOURCES = ("csv", "nih", "generic", "folder", "medmnist", "cifar")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="label table: CheXpert header (default), NIH Data_Entry or path,label[,patient]")
    src.add_argument("--nih", help="NIH ChestX-ray14 Data_Entry_2017 CSV")
    src.add_argument("--generic", help="CSV with path,label[,patient][,study][,split]")
    src.add_argument("--folder", help="folder with one subfolder per class, optionally under train/ val/ test/")
    src.add_argument("--medmnist", help="MedMNIST .npz (train/val/test _images and _labels)")
    src.add_argument("--cifar", help="folder with torchvision's CIFAR python pickles")
    g = p.add_argument_group("labels")
    g.add_argument("--label", help="CheXpert or NIH observation (default Pneumonia)")
    g.add_argument("--uncertain", choices=("ignore", "zeros", "ones"), help="CheXpert -1 policy (default ignore)")
    g.add_argument("--unit", choices=("study", "image"), help="CheXpert: count studies or images (default study)")
    g.add_argument("--views", choices=("all", "frontal", "lateral"), default="all")
    g.add_argument("--minority", help="minority class (folder name, npz label, CIFAR name or index, generic label)")
    g.add_argument("--majority", help="majority class, or several separated by commas; any other class is excluded "
                                      "(default: every other class)")
    g.add_argument("--dataset", choices=("cifar10", "cifar100"), help="CIFAR pickle flavour (default cifar10)")
    g.add_argument("--coarse", action="store_true", help="CIFAR-100 coarse (20 superclass) labels")
    g.add_argument("--patient-regex", help="folder source: regex whose first group in the path is the patient")
    s = p.add_argument_group("sampling")
    s.add_argument("--ratio", type=float, help="training majority images per minority image")
    for split in ("train", "val", "test"):
        for cls in ("minority", "majority"):
            s.add_argument(f"--{split}-{cls}", type=int, metavar="N")
    s.add_argument("--folds", type=int, default=0, help="K folds over the minority training images (0 = none)")
    s.add_argument("--val-frac", type=float, default=0.1, help="per-class share carved for val (no official val)")
    s.add_argument("--test-frac", type=float, default=0.2, help="per-class share carved for test (no official test)")
    s.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("output")
    o.add_argument("--root", help="folder the image paths are relative to (default depends on the source)")
    o.add_argument("--name", help="cohort name: writes cohorts/NAME (default from source and label)")
    o.add_argument("--out", help="cohort folder (overrides --name)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing cohort folder")
    return p.parse_args(argv)


def options_from(a: argparse.Namespace) -> tuple[CohortOptions, str]:
    """CohortOptions and the output folder from parsed arguments."""
    source = next(k for k in SOURCES if getattr(a, k))
    fields = {k: getattr(a, k) for k in CohortOptions.__dataclass_fields__ if k not in ("source", "input")}
    opts = CohortOptions(source=source, input=getattr(a, source), **fields)
    if a.out:
        return opts, a.out
    what = a.label or (f"{a.minority}_vs_{a.majority or 'rest'}" if a.minority else "pneumonia")
    stem = os.path.basename(os.path.normpath(opts.input)).split(".")[0]  # e.g. train, pneumoniamnist_28
    name = a.name or re.sub(r"[^a-z0-9]+", "_", f"{stem}_{what}".lower()).strip("_")
    return opts, os.path.join("cohorts", name)


def format_stages(stages: list[dict]) -> str:
    """The stage table as aligned text."""
    lines = [f"{'stage':<40}{'images':>12}{'studies':>12}"]
    for s in stages:
        st = "" if s.get("studies") is None else f"{s['studies']:,}"
        lines.append(f"{s['stage']:<40}{s['images']:>12,}{st:>12}")
    return "\n".join(lines)


@boundary("building the cohort")
def main(argv: list[str] | None = None) -> int:
    """Build the cohort, print its stage table; CohortError -> one line on stderr, status 2."""
    a = parse_args(argv)
    try:
        opts, out = options_from(a)
        meta = build(opts, out, overwrite=a.overwrite)
    except CohortError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_stages(meta["stages"]))
    ex = meta["excluded"]
    reasons = ", ".join(f"{r} {n:,}" for r, n in ex["by_reason"].items()) or "none"
    print(f"excluded {ex['total']:,}: {reasons}")
    for note in meta["notes"]:
        print(f"note: {note}")
    print(f"wrote {out}/cohort.csv ({meta['source']}, root {meta['root']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
